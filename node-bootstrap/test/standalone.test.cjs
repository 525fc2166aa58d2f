'use strict';
// proxy-bootstrap.cjs as an image gets it: the one file copied alone into an empty directory (no
// node_modules anywhere above it), loaded with `node --require`, talking to a loopback HTTPS mock
// through a tiny CONNECT proxy written here. Also: missing fetch() internals and bad proxy variables
// give one warning and the process carries on.
// LLMTAP_TEST_NODE=/path/to/node runs the child processes on another Node than the test runner's.

const { after, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { BOOTSTRAP, DIRECT_HOST, LLM_HOST, makeMockCerts, marker, startMock, tempDir } = require('../support/helpers.cjs');

const NODE = process.env.LLMTAP_TEST_NODE || process.execPath;
const WARNING = /^llmtap proxy-bootstrap: /;

/** What the child runs with -e: one request (FETCH_URL via fetch() or HTTPS_URL via https.get), one JSON line. */
const CHILD = String.raw`
const STATE = Symbol.for('llmtap.proxyBootstrap');
const report = (fields) => process.stdout.write(JSON.stringify({ ...fields, state: process[STATE] || null }) + '\n');
async function main() {
  if (process.env.FETCH_URL) {
    const res = await fetch(process.env.FETCH_URL, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"m"}' });
    return { status: res.status, body: await res.text() };
  }
  if (process.env.HTTPS_URL) {
    return new Promise((resolve, reject) => {
      require('node:https').get(process.env.HTTPS_URL, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      }).on('error', reject);
    });
  }
  return { started: true };
}
main().then((r) => report({ ok: true, ...r }), (err) => {
  const cause = err && err.cause;
  report({ ok: false, message: String(err && err.message), cause: cause ? String(cause.code || cause.message) : '' });
  process.exitCode = 1;
});
`;

/** The bootstrap copied alone into a fresh directory: nothing but that file in it. */
function standaloneCopy() {
  const dir = tempDir('standalone');
  const file = path.join(dir, 'proxy-bootstrap.cjs');
  fs.copyFileSync(BOOTSTRAP, file);
  return { dir, file };
}

/** Runs `node [--require pre...] --require file -e CHILD` in `cwd` with only `env` (plus PATH, HOME). */
function runNode({ cwd, requires, env, timeoutMs = 20_000 }) {
  const args = [...requires.flatMap((r) => ['--require', r]), '-e', CHILD];
  return new Promise((resolve) => {
    const child = spawn(NODE, args, {
      cwd,
      env: { PATH: process.env.PATH || '/usr/bin:/bin', HOME: os.tmpdir(), LANG: 'C.UTF-8', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let result = null;
      try { result = JSON.parse(stdout.trim().split('\n').pop()); } catch { /* reported by the caller */ }
      const warnings = stderr.split('\n').filter((l) => WARNING.test(l));
      resolve({ code, signal, stdout, stderr, result, warnings, detail: `exit ${code} ${signal || ''}\nstdout:\n${stdout}\nstderr:\n${stderr}` });
    });
  });
}

/**
 * A CONNECT proxy on 127.0.0.1 that records what it is asked for. Whatever host a client names, it
 * connects to 127.0.0.1 on the port asked for (loopback only): a name such as llm.test resolves nowhere
 * else, so a request that arrives proved it came through here. Absolute-form http:// requests are
 * forwarded the same way.
 */
async function startConnectProxy() {
  const connects = [];
  const absolute = [];
  const auth = [];
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    absolute.push({ method: req.method, url: req.url, host: req.headers.host });
    auth.push({ url: req.url, value: req.headers['proxy-authorization'] || '' });
    let target;
    try { target = new URL(req.url); } catch { res.writeHead(400).end('origin-form request to a proxy'); return; }
    const upstream = http.request({
      host: '127.0.0.1', port: Number(target.port) || 80, method: req.method,
      path: `${target.pathname}${target.search}`, headers: req.headers, agent: false,
    }, (up) => { res.writeHead(up.statusCode, up.headers); up.pipe(res); });
    upstream.on('error', () => res.writeHead(502).end('bad gateway'));
    req.pipe(upstream);
  });
  server.on('connect', (req, client, head) => {
    connects.push(req.url);
    auth.push({ url: req.url, value: req.headers['proxy-authorization'] || '' });
    const port = Number(/:(\d+)$/.exec(req.url)?.[1]);
    const upstream = net.connect({ host: '127.0.0.1', port }, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => { client.destroy(); upstream.destroy(); }); }
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    connects,
    absolute,
    auth,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

/** Plain-HTTP loopback mock: records request URLs and Host headers. */
async function startPlainMock() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url, host: req.headers.host });
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end('plain ok'));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    seen,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** A loopback port nothing listens on (bound, then released). */
function closedPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

function childNodeVersion() {
  const [major, minor] = require('node:child_process').execFileSync(NODE, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim().split('.').map(Number);
  return { major, minor };
}

describe('proxy-bootstrap.cjs copied alone into an image', { timeout: 120_000 }, () => {
  let certs;
  let mock;
  let plain;
  let proxy;
  let copy;

  before(async () => {
    certs = makeMockCerts(tempDir('standalone-mock'));
    mock = await startMock(certs);
    plain = await startPlainMock();
    proxy = await startConnectProxy();
    copy = standaloneCopy();
  });

  after(async () => {
    if (mock) await mock.close();
    if (plain) await plain.close();
    if (proxy) await proxy.close();
  });

  function proxiedEnv(extra = {}) {
    return { HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url, NO_PROXY: DIRECT_HOST, NODE_EXTRA_CA_CERTS: certs.caPem, ...extra };
  }

  test('the copy has nothing beside it: undici cannot be resolved from its directory', () => {
    assert.deepEqual(fs.readdirSync(copy.dir), ['proxy-bootstrap.cjs']);
    assert.throws(() => require.resolve('undici', { paths: [copy.dir] }), /Cannot find module/);
    assert.doesNotMatch(fs.readFileSync(copy.file, 'utf8'), /require\(\s*['"]undici['"]\s*\)/);
  });

  test('fetch() to an https:// origin goes through the CONNECT proxy, TLS end to end to the target', async () => {
    const probe = marker('standalone-fetch');
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      env: { ...proxiedEnv(), FETCH_URL: `https://${LLM_HOST}:${mock.port}/v1/messages?probe=${probe}` },
    });
    assert.equal(run.code, 0, run.detail);
    assert.equal(run.result && run.result.ok, true, run.detail);
    assert.equal(run.result.status, 200);
    assert.equal(JSON.parse(run.result.body).usage.input_tokens, 12);
    assert.deepEqual(run.warnings, [], run.detail);
    assert.ok(proxy.connects.includes(`${LLM_HOST}:${mock.port}`), `the proxy saw CONNECT ${LLM_HOST}:${mock.port}: ${proxy.connects}`);
    const seen = mock.seen.filter((s) => s.url.includes(probe));
    assert.equal(seen.length, 1, 'the mock saw the request once');
    assert.equal(seen[0].servername, LLM_HOST, 'the client ran TLS to the target itself (SNI = the target name)');
    if (run.result.state.mode === 'bootstrap') assert.equal(run.result.state.fetch, 'proxied');
  });

  test('fetch() to a plain http:// origin is sent to the proxy in absolute form', async () => {
    const probe = marker('standalone-http');
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      env: { ...proxiedEnv(), FETCH_URL: `http://${LLM_HOST}:${plain.port}/v1/messages?probe=${probe}` },
    });
    assert.equal(run.result && run.result.ok, true, run.detail);
    assert.equal(run.result.body, 'plain ok');
    const asked = proxy.absolute.filter((a) => a.url.includes(probe));
    assert.equal(asked.length, 1, `the proxy got the request in absolute form: ${JSON.stringify(proxy.absolute)}`);
    assert.equal(asked[0].url, `http://${LLM_HOST}:${plain.port}/v1/messages?probe=${probe}`);
    assert.equal(asked[0].host, `${LLM_HOST}:${plain.port}`, 'Host names the target, not the proxy');
    assert.ok(plain.seen.some((s) => s.url === `/v1/messages?probe=${probe}`));
  });

  test('fetch() to a NO_PROXY host goes direct, the proxy sees nothing', async () => {
    const probe = marker('standalone-direct');
    const before = proxy.connects.length + proxy.absolute.length;
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      env: { ...proxiedEnv(), FETCH_URL: `https://${DIRECT_HOST}:${mock.port}/v1/messages?probe=${probe}` },
    });
    assert.equal(run.result && run.result.ok, true, run.detail);
    assert.equal(proxy.connects.length + proxy.absolute.length, before, 'the proxy was not asked');
    const seen = mock.seen.filter((s) => s.url.includes(probe));
    assert.equal(seen.length, 1);
    assert.equal(seen[0].servername, DIRECT_HOST);
  });

  test('fetch() with an unreachable proxy fails; it never falls back to a direct connection', async () => {
    const probe = marker('standalone-down');
    const down = `http://127.0.0.1:${await closedPort()}`;
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      // localhost would answer directly: only a fallback could reach it.
      env: { HTTPS_PROXY: down, NODE_EXTRA_CA_CERTS: certs.caPem, FETCH_URL: `https://${DIRECT_HOST}:${mock.port}/v1/messages?probe=${probe}` },
    });
    assert.equal(run.result && run.result.ok, false, run.detail);
    assert.notEqual(run.code, 0);
    assert.match(`${run.result.cause} ${run.result.message}`, /ECONNREFUSED|proxy/i);
    assert.deepEqual(mock.seen.filter((s) => s.url.includes(probe)), [], 'nothing reached the target');
  });

  test('proxy credentials in the URL are sent as Proxy-Authorization, on CONNECT and in absolute form', async () => {
    const withCreds = proxy.url.replace('http://', 'http://agent-7:t%40ken@');
    const expected = `Basic ${Buffer.from('agent-7:t@ken').toString('base64')}`;
    for (const [scheme, port] of [['https', mock.port], ['http', plain.port]]) {
      const probe = marker(`standalone-auth-${scheme}`);
      const run = await runNode({
        cwd: copy.dir,
        requires: [copy.file],
        env: { ...proxiedEnv({ HTTPS_PROXY: withCreds, HTTP_PROXY: withCreds }), FETCH_URL: `${scheme}://${LLM_HOST}:${port}/v1/messages?probe=${probe}` },
      });
      assert.equal(run.result && run.result.ok, true, run.detail);
      const target = scheme === 'https' ? `${LLM_HOST}:${port}` : probe;
      const seen = proxy.auth.filter((a) => a.url.includes(target));
      assert.ok(seen.length >= 1, `the proxy was asked for ${target}`);
      assert.equal(seen[seen.length - 1].value, expected);
    }
  });

  test('node:https from the copy goes through the CONNECT proxy too', async () => {
    const probe = marker('standalone-https');
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      env: { ...proxiedEnv(), HTTPS_URL: `https://${LLM_HOST}:${mock.port}/v1/models?probe=${probe}` },
    });
    assert.equal(run.result && run.result.ok, true, run.detail);
    assert.equal(mock.seen.filter((s) => s.url.includes(probe)).length, 1);
  });

  const stubs = {
    // The dispatcher's slot taken by an accessor that always reads undefined and cannot be redefined:
    // there is no global dispatcher to find, whatever loads Node's fetch internals.
    'no global dispatcher': "Object.defineProperty(globalThis, Symbol.for('undici.globalDispatcher.1'), { get() { return undefined; }, set() {}, configurable: false });",
    // Something that is not undici's Agent already sits where the dispatcher lives.
    'an unexpected dispatcher': "globalThis[Symbol.for('undici.globalDispatcher.1')] = { dispatch() { return false; } };",
  };
  for (const [label, source] of Object.entries(stubs)) {
    test(`${label}: one warning, the process carries on (exit 0) and node:https is still proxied`, async () => {
      const dir = tempDir('stub');
      const stub = path.join(dir, 'stub.cjs');
      fs.writeFileSync(stub, `'use strict';\n${source}\n`);
      const probe = marker('stub');
      const connectsBefore = proxy.connects.length;
      const run = await runNode({
        cwd: copy.dir,
        requires: [stub, copy.file],
        env: { ...proxiedEnv(), HTTPS_URL: `https://${LLM_HOST}:${mock.port}/v1/models?probe=${probe}` },
      });
      if (run.result && run.result.state && run.result.state.mode === 'node-builtin-env-proxy') return; // Node proxies fetch() itself.
      assert.equal(run.code, 0, run.detail);
      assert.equal(run.result && run.result.ok, true, run.detail);
      assert.equal(run.warnings.length, 1, `exactly one warning: ${run.detail}`);
      assert.match(run.warnings[0], /fetch\(\) is NOT sent through the proxy/);
      assert.equal(run.result.state.fetch, 'unavailable');
      assert.ok(proxy.connects.length > connectsBefore, 'https.get still went through the proxy');
      assert.equal(mock.seen.filter((s) => s.url.includes(probe)).length, 1);
    });
  }

  for (const [label, value] of [['an unsupported scheme', 'socks5://127.0.0.1:1080'], ['not a URL', 'http://[not-a-host']]) {
    test(`a bad HTTPS_PROXY (${label}) warns once, installs nothing, and the agent starts`, async () => {
      const run = await runNode({ cwd: copy.dir, requires: [copy.file], env: { HTTPS_PROXY: value } });
      assert.equal(run.code, 0, run.detail);
      assert.equal(run.result && run.result.started, true, run.detail);
      assert.equal(run.warnings.length, 1, run.detail);
      assert.match(run.warnings[0], /proxy (scheme socks5: is not supported|URL .* is not a valid URL).*nothing is routed/);
      assert.equal(run.result.state.installed, false);
      assert.equal(run.result.state.mode, 'bad-proxy-variable');
    });
  }

  test('on a Node with the built-in env proxy (NODE_USE_ENV_PROXY=1), Node proxies fetch() itself', async (t) => {
    const { major, minor } = childNodeVersion();
    const builtin = (major === 22 && minor >= 21) || (major === 24 && minor >= 5) || major >= 25;
    if (!builtin) {
      t.skip(`Node ${major}.${minor} has no built-in env proxy (LLMTAP_TEST_NODE picks another Node)`);
      return;
    }
    const probe = marker('standalone-builtin');
    const run = await runNode({
      cwd: copy.dir,
      requires: [copy.file],
      env: { ...proxiedEnv(), NODE_USE_ENV_PROXY: '1', FETCH_URL: `https://${LLM_HOST}:${mock.port}/v1/messages?probe=${probe}` },
    });
    assert.equal(run.result && run.result.ok, true, run.detail);
    assert.equal(run.result.state.mode, 'node-builtin-env-proxy');
    assert.deepEqual(run.warnings, [], run.detail);
    assert.equal(mock.seen.filter((s) => s.url.includes(probe)).length, 1);
  });
});
