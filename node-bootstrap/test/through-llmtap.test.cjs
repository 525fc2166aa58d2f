'use strict';
// End to end: a child node loaded with proxy-bootstrap.cjs talks to a loopback HTTPS mock through
// the real llmtap binary (LLMTAP_BIN, default ../target/debug/llmtap).

const { after, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const {
  DIRECT_HOST, LLM_HOST, makeMockCerts, marker, recordsMentioning, runClient, sleep,
  startLlmtap, startMock, stopLlmtap, tempDir, waitForRecord,
} = require('../support/helpers.cjs');

const TLS_FAILURE = /CERT|SSL|TLS|UNABLE_TO|self[- ]signed|certificate/i;

describe('proxy-bootstrap through llmtap', { timeout: 180_000 }, () => {
  let certs;
  let mock;
  let plainMock;
  let llmtap;
  let proxyUrl;
  let trustBoth;

  before(async () => {
    const dir = tempDir('mock');
    certs = makeMockCerts(dir);
    mock = await startMock(certs);
    plainMock = await startPlainMock();
    llmtap = await startLlmtap({
      mockPort: mock.port,
      mockCaPem: certs.caPem,
      extraResolve: [`${LLM_HOST}:${plainMock.port}:127.0.0.1`],
    });
    proxyUrl = `http://127.0.0.1:${llmtap.port}`;
    // The client trusts llmtap's CA (for intercepted hosts) and the mock's (for NO_PROXY hosts it reaches directly).
    trustBoth = path.join(dir, 'trust.pem');
    fs.writeFileSync(trustBoth, fs.readFileSync(llmtap.caPem, 'utf8') + fs.readFileSync(certs.caPem, 'utf8'));
  });

  after(async () => {
    await stopLlmtap(llmtap);
    if (mock) await mock.close();
    if (plainMock) await plainMock.close();
  });

  function proxiedEnv(extra = {}) {
    return { HTTPS_PROXY: proxyUrl, HTTP_PROXY: proxyUrl, NO_PROXY: DIRECT_HOST, NODE_EXTRA_CA_CERTS: trustBoth, ...extra };
  }

  function mockSaw(probe) {
    return mock.seen.filter((s) => s.url.includes(probe));
  }

  async function expectThroughLlmtap(mode, scheme, urlPath) {
    const probe = marker(mode);
    const url = `${scheme}://${LLM_HOST}:${mock.port}${urlPath}?probe=${probe}`;
    const run = await runClient({ mode, url, env: proxiedEnv() });
    assert.equal(run.result && run.result.ok, true, `client failed: ${run.stdout}\n${run.stderr}`);
    assert.equal(mockSaw(probe).length, 1, 'the mock saw the request once');
    const records = await waitForRecord(llmtap, probe);
    assert.ok(records.length >= 1);
    return run.result;
  }

  test('fetch() reaches the mock through llmtap and is recorded', async () => {
    const result = await expectThroughLlmtap('fetch', 'https', '/v1/messages');
    assert.equal(result.status, 200);
    assert.equal(result.body.usage.input_tokens, 12);
  });

  test('https.request reaches the mock through llmtap, over llmtap\'s leaf certificate', async () => {
    const result = await expectThroughLlmtap('https', 'https', '/v1/messages');
    assert.equal(result.status, 200);
    assert.notEqual(result.issuer, 'llmtap-test-mock-ca', 'TLS was terminated by llmtap, not the mock');
    assert.match(result.issuer, /llmtap/i);
  });

  test('https.get (module-internal request) goes through llmtap too', async () => {
    const result = await expectThroughLlmtap('https-get', 'https', '/v1/models');
    assert.equal(result.status, 200);
    assert.match(result.issuer, /llmtap/i);
  });

  test('https.request with a caller-made https.Agent (keep-alive, as SDKs pass) goes through llmtap', async () => {
    const result = await expectThroughLlmtap('https-agent', 'https', '/v1/messages');
    assert.equal(result.status, 200);
    assert.match(result.issuer, /llmtap/i);
  });

  test('a ws WebSocket reaches the mock through llmtap and is recorded', async () => {
    const result = await expectThroughLlmtap('ws', 'wss', '/v1/realtime');
    assert.equal(result.echoed, 'echo:hello');
    assert.match(result.issuer, /llmtap/i);
  });

  test('plain http.request goes to llmtap in absolute form and is recorded', async () => {
    const probe = marker('http');
    const url = `http://${LLM_HOST}:${plainMock.port}/v1/messages?probe=${probe}`;
    const run = await runClient({ mode: 'http', url, env: proxiedEnv() });
    assert.equal(run.result && run.result.ok, true, `client failed: ${run.stdout}\n${run.stderr}`);
    assert.equal(run.result.status, 200);
    assert.ok(plainMock.seen.some((u) => u.includes(probe)), 'the plain mock saw the request');
    await waitForRecord(llmtap, probe);
  });

  test('fetch() to a plain http:// origin goes to llmtap in absolute form and is recorded', async () => {
    const probe = marker('fetch-http');
    const url = `http://${LLM_HOST}:${plainMock.port}/v1/messages?probe=${probe}`;
    const run = await runClient({ mode: 'fetch', url, env: proxiedEnv() });
    assert.equal(run.result && run.result.ok, true, `client failed: ${run.stdout}\n${run.stderr}`);
    assert.equal(run.result.status, 200);
    assert.equal(run.result.body.id, 'msg_plain');
    assert.ok(plainMock.seen.some((u) => u.includes(probe)), 'the plain mock saw the request');
    await waitForRecord(llmtap, probe);
  });

  for (const [mode, scheme] of [['fetch', 'https'], ['https', 'https'], ['ws', 'wss']]) {
    test(`NO_PROXY hosts bypass llmtap (${mode})`, async () => {
      const probe = marker(`direct-${mode}`);
      const url = `${scheme}://${DIRECT_HOST}:${mock.port}/v1/messages?probe=${probe}`;
      const run = await runClient({ mode, url, env: proxiedEnv() });
      assert.equal(run.result && run.result.ok, true, `client failed: ${run.stdout}\n${run.stderr}`);
      const seen = mockSaw(probe);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].servername, DIRECT_HOST, 'the mock was reached directly under the NO_PROXY name');
      if (run.result.issuer !== undefined) assert.equal(run.result.issuer, 'llmtap-test-mock-ca');
      await sleep(1000);
      assert.deepEqual(recordsMentioning(llmtap, probe), [], 'llmtap never saw the request');
    });
  }

  for (const mode of ['fetch', 'https']) {
    test(`a client without llmtap's CA fails loudly with a TLS error (${mode})`, async () => {
      const probe = marker(`noca-${mode}`);
      const url = `https://${LLM_HOST}:${mock.port}/v1/messages?probe=${probe}`;
      const run = await runClient({ mode, url, env: proxiedEnv({ NODE_EXTRA_CA_CERTS: certs.caPem }) });
      assert.ok(run.result, `no result line: ${run.stdout}\n${run.stderr}`);
      assert.equal(run.result.ok, false, 'the call must fail');
      assert.notEqual(run.code, 0);
      assert.match(`${run.result.code} ${run.result.message}`, TLS_FAILURE);
      assert.doesNotMatch(`${run.result.code} ${run.result.message}`, /ENOTFOUND|EAI_AGAIN/, 'no direct connection attempt');
      assert.deepEqual(mockSaw(probe), [], 'nothing reached the upstream');
    });
  }

  test('control: without the bootstrap, fetch() ignores HTTPS_PROXY and goes direct', async () => {
    const probe = marker('control');
    const url = `https://${LLM_HOST}:${mock.port}/v1/messages?probe=${probe}`;
    const run = await runClient({ mode: 'fetch', url, env: proxiedEnv(), bootstrap: false });
    assert.equal(run.result && run.result.ok, false, 'direct fetch to a name only llmtap can resolve fails');
    assert.deepEqual(recordsMentioning(llmtap, probe), []);
  });
});

/** Plain-HTTP loopback mock for the absolute-form test; records request URLs. */
async function startPlainMock() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url);
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ id: 'msg_plain', type: 'message', model: 'claude-test-1', content: [], usage: { input_tokens: 1, output_tokens: 1 } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    seen,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
