'use strict';
// Real keys live only in llmtap (issue 10), with the official SDKs (@anthropic-ai/sdk, openai) as the
// clients, in a child node (support/sdk-client.cjs). The SDKs hold only the sentinel `llmtap-managed`;
// llmtap holds the real keys (a keys file naming one key file and one variable of llmtap's own
// environment) and swaps them in, on both ways in:
//   - through HTTPS_PROXY (CONNECT, llmtap's CA; the bootstrap routes the SDK), base URL
//     https://<provider name>:<mock port>;
//   - through the base-URL routes (--reverse-listen), base URL http://127.0.0.1:<port>/anthropic or
//     /openai/v1, with no proxy variables at all.
// The provider mock checks the credential as the real APIs do (401 to anything but the real key in the
// provider's own header), so a call that succeeds carried the real key. Both hosts have
// require_sentinel: an SDK holding a key of its own gets a 403 and nothing reaches the mock. After every
// call, neither real key appears anywhere in llmtap's stdout or stderr (logging at debug). The Anthropic
// key is key-shaped (as a real one is); the OpenAI key deliberately is not, so that no redaction pattern
// could hide it if llmtap ever printed it.

const { after, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { stopLlmtap, tempDir, waitForRecord } = require('../support/helpers.cjs');
const {
  ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT,
  newProbe, runSdkClient, startLlmtapForProviders, startProviderMock,
} = require('../support/provider-mock.cjs');

const SENTINEL = 'llmtap-managed';
const ANTHROPIC_MODEL = 'claude-mock-4-7';
const OPENAI_MODEL = 'gpt-mock-5';
const REAL = {
  [ANTHROPIC_HOST]: `sk-ant-api03-REAL${crypto.randomBytes(24).toString('hex')}`, // llmtap reads it from a file
  [OPENAI_HOST]: `opaque-openai-real-${crypto.randomBytes(20).toString('hex')}`, // from llmtap's environment
};
const OPENAI_KEY_VAR = 'LLMTAP_TEST_OPENAI_REAL_KEY';
/** Keys a sandbox should not hold: real-looking, not the sentinel. */
const FOREIGN = {
  [ANTHROPIC_HOST]: `sk-ant-api03-${crypto.randomBytes(24).toString('hex')}`,
  [OPENAI_HOST]: `sk-proj-${crypto.randomBytes(24).toString('hex')}`,
};

/** The calls: scenario of sdk-client.cjs, and where that SDK puts the credential. */
const CASES = [
  { name: 'anthropic messages.create (JSON)', scenario: 'anthropic.json', provider: 'anthropic', stream: false, header: 'authorization' },
  { name: 'anthropic messages.create (JSON), sentinel in an x-api-key header', scenario: 'anthropic.json', provider: 'anthropic', stream: false, header: 'x-api-key', apiKeyHeader: true },
  { name: 'anthropic messages.create({stream: true})', scenario: 'anthropic.stream', provider: 'anthropic', stream: true, header: 'authorization' },
  { name: 'openai chat.completions.create (JSON)', scenario: 'openai.chat.json', provider: 'openai', stream: false, header: 'authorization' },
  { name: 'openai chat.completions.create({stream: true})', scenario: 'openai.chat.stream', provider: 'openai', stream: true, header: 'authorization', includeUsage: true },
];

function hostOf(provider) {
  return provider === 'anthropic' ? ANTHROPIC_HOST : OPENAI_HOST;
}

function pathOf(provider) {
  return provider === 'anthropic' ? '/v1/messages' : '/v1/chat/completions';
}

describe('real keys live only in llmtap: official SDKs holding the sentinel', { timeout: 180_000 }, () => {
  let mock;
  let llmtap;
  let home;

  before(async () => {
    mock = await startProviderMock({ expectKeys: { ...REAL } });
    const dir = tempDir('keys');
    const keyFile = path.join(dir, 'anthropic_api_key');
    fs.writeFileSync(keyFile, `${REAL[ANTHROPIC_HOST]}\n`, { mode: 0o600 }); // as a Docker secret often is
    const keysToml = path.join(dir, 'keys.toml');
    fs.writeFileSync(keysToml, [
      '[[key]]',
      `host = "${ANTHROPIC_HOST}"`,
      `from_file = ${JSON.stringify(keyFile)}`,
      'require_sentinel = true',
      '',
      '[[key]]',
      `host = "${OPENAI_HOST}"`,
      `from_env = "${OPENAI_KEY_VAR}"`,
      `sentinel = "${SENTINEL}"`,
      'require_sentinel = true',
      '',
    ].join('\n'));
    llmtap = await startLlmtapForProviders(mock, {
      extraArgs: ['--keys', keysToml],
      env: { [OPENAI_KEY_VAR]: REAL[OPENAI_HOST], LLMTAP_LOG: 'llmtap=debug,warn' },
      reverse: true,
    });
    // The SDK processes' HOME: empty, so the Anthropic SDK finds no credentials of its own.
    home = tempDir('sdk-home');
  });

  after(async () => {
    await stopLlmtap(llmtap);
    if (mock) await mock.close();
  });

  function baseURL(provider, way) {
    if (way === 'proxy') {
      return provider === 'anthropic' ? `https://${ANTHROPIC_HOST}:${mock.port}` : `https://${OPENAI_HOST}:${mock.port}/v1`;
    }
    return `http://127.0.0.1:${llmtap.reversePort}/${provider === 'anthropic' ? 'anthropic' : 'openai/v1'}`;
  }

  /** The SDK process's environment: through llmtap as a proxy, or no proxy at all (base URL). */
  function clientEnv(way) {
    if (way === 'proxy') return { HOME: home, HTTPS_PROXY: `http://127.0.0.1:${llmtap.port}`, NODE_EXTRA_CA_CERTS: llmtap.caPem };
    return { HOME: home, NO_PROXY: '127.0.0.1,localhost' };
  }

  function assertNoRealKeyPrinted() {
    const out = `${llmtap.stdout}\n${llmtap.stderr}`;
    for (const [host, key] of Object.entries(REAL)) {
      assert.ok(!out.includes(key), `the real key for ${host} appears in llmtap's output`);
    }
  }

  /** One call holding the sentinel; checks what both ways must satisfy. Returns the request as the mock saw it and the record's attributes. */
  async function callWithSentinel(c, way) {
    const probe = newProbe();
    const host = hostOf(c.provider);
    let stateAtFirst = null;
    const run = await runSdkClient({
      scenario: c.scenario,
      args: {
        baseURL: baseURL(c.provider, way),
        apiKey: SENTINEL,
        apiKeyHeader: Boolean(c.apiKeyHeader),
        model: c.provider === 'anthropic' ? ANTHROPIC_MODEL : OPENAI_MODEL,
        probe,
        includeUsage: Boolean(c.includeUsage),
        headers: { 'x-request-id': probe },
      },
      env: clientEnv(way),
      onFirst: () => {
        const req = mock.requestsFor(probe)[0];
        stateAtFirst = req ? req.state : 'not-received';
        mock.release(probe);
      },
    });
    const detail = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}\nllmtap stderr tail:\n${llmtap.stderr.slice(-2000)}`;
    assert.equal(run.result && run.result.ok, true, `SDK call failed\n${detail}`);
    assert.equal(run.result.text, c.stream ? STREAM_TEXT : JSON_TEXT, 'the SDK got the mock\'s answer');

    const seen = mock.requestsFor(probe);
    assert.equal(seen.length, 1, 'the mock saw the call exactly once');
    const req = seen[0];
    assert.equal(req.auth, 'accepted', 'the upstream got the real key');
    assert.equal(req.authHeader, c.header, 'in the header the SDK put the sentinel in');
    assert.equal(req.headers[c.header], c.header === 'x-api-key' ? REAL[host] : `Bearer ${REAL[host]}`);
    assert.ok(!('x-api-key' in req.headers && 'authorization' in req.headers), 'one credential only');
    assert.ok(!JSON.stringify(req.headers).includes(SENTINEL), 'no sentinel went upstream');
    assert.equal(req.path, pathOf(c.provider));
    assert.equal(req.servername, host, 'llmtap connected upstream with the real name as SNI');
    assert.equal(req.stream, c.stream);
    if (c.stream) {
      assert.ok(run.lines.some((l) => l.first), 'the client announced its first stream event');
      assert.equal(stateAtFirst, 'head-sent', 'the SDK had its first event while the mock still held the rest of the stream');
      assert.equal(req.releasedBy, 'ack', 'the mock sent the tail only after the SDK got the first event');
    }

    const records = await waitForRecord(llmtap, probe);
    assert.equal(records.length, 1, 'exactly one record for the call');
    const attrs = records[0].attributes;
    assert.equal(attrs['llmtap.key.injected'], true);
    assert.ok(!('llmtap.key.foreign' in attrs), 'no foreign key');
    assert.equal(attrs['http.response.status_code'], 200);
    assert.equal(attrs['server.address'], host);
    assert.equal(attrs['gen_ai.provider.name'], c.provider);
    assert.equal(attrs['gen_ai.request.stream'], c.stream);
    assert.equal(attrs['llmtap.outcome'], 'complete');
    assertNoRealKeyPrinted();
    return { req, attrs };
  }

  for (const c of CASES) {
    test(`through HTTPS_PROXY: ${c.name}: the mock gets the real key`, async () => {
      const { req, attrs } = await callWithSentinel(c, 'proxy');
      const host = hostOf(c.provider);
      assert.equal(req.host, `${host}:${mock.port}`, 'Host header names the real provider (and the port the SDK used)');
      assert.equal(attrs['url.full'], `https://${host}:${mock.port}${pathOf(c.provider)}`);
    });
  }

  for (const c of CASES) {
    test(`base-URL route, no proxy: ${c.name}: the mock gets the real key`, async () => {
      const { req, attrs } = await callWithSentinel(c, 'base-url');
      const host = hostOf(c.provider);
      assert.equal(req.host, host, 'the route\'s upstream is https://<provider name> on 443');
      assert.equal(attrs['url.full'], `https://${host}${pathOf(c.provider)}`, 'the record names the upstream URL, not the route');
    });
  }

  for (const provider of ['anthropic', 'openai']) {
    for (const way of ['proxy', 'base-url']) {
      test(`${provider} SDK holding a key of its own (${way}): PermissionDeniedError (403 foreign_key), nothing upstream, record flags it`, async () => {
        const host = hostOf(provider);
        const probe = newProbe();
        mock.release(probe);
        const seenBefore = mock.seen.length;
        const run = await runSdkClient({
          scenario: provider === 'anthropic' ? 'anthropic.json' : 'openai.chat.json',
          args: {
            baseURL: baseURL(provider, way),
            apiKey: FOREIGN[host],
            model: provider === 'anthropic' ? ANTHROPIC_MODEL : OPENAI_MODEL,
            probe,
            headers: { 'x-request-id': probe },
          },
          env: clientEnv(way),
        });
        const detail = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
        assert.ok(run.result, `no result from the SDK client\n${detail}`);
        assert.equal(run.result.ok, false, `the call must fail\n${detail}`);
        assert.equal(run.result.status, 403, detail);
        assert.equal(run.result.permissionDenied, true, `the SDK raises its PermissionDeniedError\n${detail}`);
        assert.equal(run.result.errorClass, 'PermissionDeniedError');
        assert.equal(run.result.llmtapError, 'foreign_key');
        assert.ok(!run.result.message.includes(FOREIGN[host]), 'the refusal does not echo the key');
        assert.equal(mock.requestsFor(probe).length, 0, 'nothing reached the upstream');
        assert.equal(mock.seen.length, seenBefore, 'nothing reached the upstream');

        const [record] = await waitForRecord(llmtap, probe);
        const attrs = record.attributes;
        assert.equal(attrs['llmtap.key.foreign'], true);
        assert.ok(!('llmtap.key.injected' in attrs));
        assert.equal(attrs['http.response.status_code'], 403);
        assert.equal(attrs['server.address'], host);
        assert.equal(attrs['url.full'], `https://${host}${way === 'proxy' ? `:${mock.port}` : ''}${pathOf(provider)}`);
        assert.equal(record.severity_text, 'WARN');
        const line = llmtap.stdout.split('\n').find((l) => l.includes(probe));
        assert.ok(!line.includes(FOREIGN[host]), 'the foreign key is redacted in the record');
        assertNoRealKeyPrinted();
      });
    }
  }

  test('no real key in llmtap\'s output after all of it (start-up summary names only the sources)', () => {
    const out = `${llmtap.stdout}\n${llmtap.stderr}`;
    assert.ok(out.includes('from_file') && out.includes(OPENAI_KEY_VAR), 'the start-up summary names the sources');
    assertNoRealKeyPrinted();
  });
});
