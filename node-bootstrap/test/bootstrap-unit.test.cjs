'use strict';
// The bootstrap on its own: NO_PROXY rules, no-op without proxy variables, loud failures.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { spawnSync } = require('node:child_process');
const { BOOTSTRAP, makeMockCerts, marker, runClient, startMock, tempDir } = require('../support/helpers.cjs');

// Loading the module in this process installs nothing: the test runner has no proxy variables.
delete process.env.HTTPS_PROXY; delete process.env.https_proxy; delete process.env.HTTP_PROXY; delete process.env.http_proxy;
const { parseNoProxy, readProxyEnv, shouldProxy } = require('../proxy-bootstrap.cjs');

test('NO_PROXY follows undici: exact host, subdomains, ports, leading dot or *., and *', () => {
  const cases = [
    ['localhost', 'localhost', 443, false],
    ['localhost', 'LOCALHOST', 443, false],
    ['example.com', 'api.example.com', 443, false],
    ['.example.com', 'api.example.com', 443, false],
    ['*.example.com', 'api.example.com', 443, false],
    ['example.com', 'notexample.com', 443, true],
    ['example.com:8443', 'example.com', 443, true],
    ['example.com:8443', 'example.com', 8443, false],
    ['127.0.0.1', '127.0.0.1', 80, false],
    ['::1', '::1', 443, false],
    ['[::1]', '[::1]', 443, false],
    ['[::1]:443', '::1', 80, true],
    ['*', 'api.anthropic.com', 443, false],
    ['', 'api.anthropic.com', 443, true],
    ['loki, grafana ,localhost', 'grafana', 3000, false],
    ['loki,grafana', 'api.openai.com', 443, true],
  ];
  for (const [noProxy, host, port, expected] of cases) {
    assert.equal(shouldProxy(parseNoProxy(noProxy), host, port), expected, `NO_PROXY=${noProxy} ${host}:${port}`);
  }
});

test('proxy variables: lower case wins, HTTPS falls back to HTTP, a bare host:port gets http://', () => {
  const env = readProxyEnv({ HTTP_PROXY: 'llmtap:8080', no_proxy: 'a', NO_PROXY: 'b' });
  assert.equal(env.httpProxy, 'http://llmtap:8080/');
  assert.equal(env.httpsProxy, 'http://llmtap:8080/');
  assert.equal(env.noProxy, 'a');
  const both = readProxyEnv({ https_proxy: 'http://one:1', HTTPS_PROXY: 'http://two:2' });
  assert.equal(both.httpsProxy, 'http://one:1/');
  assert.equal(both.httpProxy, '');
});

test('a proxy variable it cannot use warns once (without credentials) and the agent still starts', () => {
  for (const [value, expected] of [
    ['socks5://127.0.0.1:1080', /proxy scheme socks5: is not supported/],
    ['http://agent:s3cret-token@[bad-host:8080', /proxy URL "http:\/\/\*\*\*@\[bad-host:8080" is not a valid URL/],
  ]) {
    const run = spawnSync(process.execPath, ['--require', BOOTSTRAP, '-e', 'console.log(JSON.stringify(process[Symbol.for("llmtap.proxyBootstrap")]))'], {
      env: { PATH: process.env.PATH, HTTPS_PROXY: value },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(run.status, 0, run.stderr);
    const warnings = run.stderr.split('\n').filter((l) => l.startsWith('llmtap proxy-bootstrap: '));
    assert.equal(warnings.length, 1, run.stderr);
    assert.match(warnings[0], expected);
    assert.doesNotMatch(run.stderr, /s3cret-token/);
    assert.deepEqual(JSON.parse(run.stdout).installed, false);
  }
});

test('without proxy variables the bootstrap is a no-op and requests go direct', { timeout: 60_000 }, async () => {
  const certs = makeMockCerts(tempDir('noop'));
  const mock = await startMock(certs);
  try {
    const state = await runClient({ mode: 'state', url: 'x', env: { NODE_EXTRA_CA_CERTS: certs.caPem } });
    assert.equal(state.result.ok, true, state.stderr);
    assert.deepEqual(state.result.state, { installed: false, mode: 'no-proxy-variables' });
    assert.equal(state.result.dispatcher, false, 'no global dispatcher was installed');
    for (const mode of ['fetch', 'https']) {
      const probe = marker(`noop-${mode}`);
      const run = await runClient({ mode, url: `https://localhost:${mock.port}/v1/messages?probe=${probe}`, env: { NODE_EXTRA_CA_CERTS: certs.caPem } });
      assert.equal(run.result && run.result.ok, true, `${run.stdout}\n${run.stderr}`);
      assert.ok(mock.seen.some((s) => s.url.includes(probe)));
    }
  } finally {
    await mock.close();
  }
});

test('a proxy that refuses CONNECT surfaces its status and reason to the caller', { timeout: 60_000 }, async () => {
  const refusing = net.createServer((sock) => {
    sock.once('data', () => sock.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 17\r\n\r\ndenied by policy\n'));
  });
  await new Promise((resolve) => refusing.listen(0, '127.0.0.1', resolve));
  try {
    const run = await runClient({
      mode: 'https',
      url: 'https://api.example.test/v1/messages',
      env: { HTTPS_PROXY: `http://127.0.0.1:${refusing.address().port}` },
    });
    assert.equal(run.result && run.result.ok, false);
    assert.match(run.result.message, /403 Forbidden.*denied by policy/);
  } finally {
    refusing.close();
  }
});
