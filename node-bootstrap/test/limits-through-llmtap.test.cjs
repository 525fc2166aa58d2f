'use strict';
// Limits and budgets per client (issue 11), with the official SDKs (@anthropic-ai/sdk, openai) as the
// clients, in a child node (support/sdk-client.cjs, maxRetries: 0: an SDK would otherwise sleep
// retry-after and try again).
//
// Each test starts its own llmtap (so its own counters) with a policy file whose one client,
// `code-sandbox`, is every connection from 127.0.0.1 (`sources`), with a [profile.code.limits] table
// made for that test. A call past a limit is answered by llmtap itself: 429 in the provider's own error
// shape, which the SDK raises as its RateLimitError; nothing reaches the provider mock.
//
// The windows are fixed UTC windows (minute, hour, day): a test whose calls must fall in one window
// waits, when fewer than WINDOW_MARGIN_MS of the current one are left, for the next one (bounded).
// Each call carries its probe in the prompt and as x-request-id, a header the records keep (a refused
// call's record has no body to find the probe in).
//
// Prices (addons-config/prices.toml): the mock answers `<requested model>-2025-09-29`.
// claude-haiku-4-5 is priced by its answer's model (pattern claude-haiku-4-5*); gpt-4o-mini by the
// request's model (its patterns do not match the mock's dated name; llmtap then falls back to it).

const { after, afterEach, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { sleep, stopLlmtap, tempDir, waitForRecord } = require('../support/helpers.cjs');
const {
  ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT, USAGE,
  fillerText, newProbe, runSdkClient, startLlmtapForProviders, startProviderMock,
} = require('../support/provider-mock.cjs');

const CLIENT = 'code-sandbox';
const API_KEY = 'sk-test-limits-not-a-real-key';
const WINDOW_MARGIN_MS = 10_000;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

// What the mock's JSON answers cost, USD per million tokens from prices.toml.
// claude-haiku-4-5: input 1.00, cache read 0.10, cache write 1.25, output 5.00.
const A = USAGE.anthropicJson;
const ANTHROPIC_JSON_COST = (A.input_tokens * 1.0 + A.cache_read_input_tokens * 0.10
  + A.cache_creation_input_tokens * 1.25 + A.output_tokens * 5.0) / 1e6;
// gpt-4o-mini: input 0.15, cache read 0.075, output 0.60 (reasoning is inside completion_tokens).
const O = USAGE.openaiChat;
const OPENAI_JSON_COST = ((O.prompt_tokens - O.cached_tokens) * 0.15 + O.cached_tokens * 0.075
  + O.completion_tokens * 0.60) / 1e6;

const PROVIDERS = [
  { name: 'anthropic', host: ANTHROPIC_HOST, model: 'claude-haiku-4-5', json: 'anthropic.json', jsonCost: ANTHROPIC_JSON_COST, jsonOutputTokens: A.output_tokens },
  { name: 'openai', host: OPENAI_HOST, model: 'gpt-4o-mini', json: 'openai.chat.json', jsonCost: OPENAI_JSON_COST, jsonOutputTokens: O.completion_tokens },
];
const [ANTHROPIC, OPENAI] = PROVIDERS;

function policy(limits) {
  return [
    'mode = "enforce"',
    '',
    '[[client]]',
    `name = "${CLIENT}"`,
    'profile = "code"',
    'sources = ["127.0.0.1/32"]',
    '',
    '[profile.code]',
    `allow = ["${ANTHROPIC_HOST}", "${OPENAI_HOST}"]`,
    '',
    '[profile.code.limits]',
    limits,
    '',
    '[profile.default]',
    'allow = []',
    '',
  ].join('\n');
}

/** Runs `fn`; when it fails and the fixed UTC window of `lengthMs` changed meanwhile, says so (the test's margin was too small for this machine). */
async function inOneWindow(lengthMs, fn) {
  const start = Math.floor(Date.now() / lengthMs);
  try {
    return await fn();
  } catch (err) {
    if (Math.floor(Date.now() / lengthMs) !== start) err.message = `the calls crossed a ${lengthMs / 1000} s window boundary (a slow machine?): ${err.message}`;
    throw err;
  }
}

/** If fewer than `marginMs` are left in the current fixed UTC window of `lengthMs`, waits for the next one. */
async function waitForWindow(lengthMs, marginMs = WINDOW_MARGIN_MS) {
  const left = lengthMs - (Date.now() % lengthMs);
  if (left < marginMs) await sleep(left + 250);
}

describe('limits and budgets per client: llmtap\'s 429 is the official SDKs\' RateLimitError', { timeout: 300_000 }, () => {
  let mock;
  let home;
  const started = [];

  before(async () => {
    mock = await startProviderMock();
    home = tempDir('sdk-home'); // the SDK processes' HOME: empty
  });

  afterEach(async () => {
    while (started.length) await stopLlmtap(started.pop());
  });

  after(async () => {
    while (started.length) await stopLlmtap(started.pop());
    if (mock) await mock.close();
  });

  /** A fresh llmtap holding code-sandbox to `limits`, and how an SDK reaches it (`way`: proxy | base-url). */
  async function startLimited(limits, way = 'proxy') {
    const file = path.join(tempDir('limits-policy'), 'policy.toml');
    fs.writeFileSync(file, policy(limits));
    const llmtap = await startLlmtapForProviders(mock, { extraArgs: ['--policy', file], reverse: way === 'base-url' });
    started.push(llmtap);
    const env = way === 'proxy'
      ? { HOME: home, HTTPS_PROXY: `http://127.0.0.1:${llmtap.port}`, NODE_EXTRA_CA_CERTS: llmtap.caPem }
      : { HOME: home, NO_PROXY: '127.0.0.1,localhost' };
    const baseURL = (p) => {
      if (way === 'proxy') return p.name === 'anthropic' ? `https://${ANTHROPIC_HOST}:${mock.port}` : `https://${OPENAI_HOST}:${mock.port}/v1`;
      return `http://127.0.0.1:${llmtap.reversePort}/${p.name === 'anthropic' ? 'anthropic' : 'openai/v1'}`;
    };
    return { llmtap, env, baseURL };
  }

  /** One SDK call; the client's result line (with the run's output for messages). */
  async function call(limited, p, probe, { scenario = p.json, includeUsage = false, onFirst } = {}) {
    const run = await runSdkClient({
      scenario,
      args: { baseURL: limited.baseURL(p), apiKey: API_KEY, model: p.model, probe, includeUsage, headers: { 'x-request-id': probe } },
      env: limited.env,
      onFirst,
    });
    const detail = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}\nllmtap stderr tail:\n${limited.llmtap.stderr.slice(-2000)}`;
    assert.ok(run.result, `no result from the SDK client\n${detail}`);
    return { result: run.result, detail };
  }

  async function succeeds(limited, p, probe, opts) {
    const { result, detail } = await call(limited, p, probe, opts);
    assert.equal(result.ok, true, `the call must succeed\n${detail}`);
    return result;
  }

  /** A call that must be the SDK's RateLimitError from llmtap; checks what every refusal must satisfy. */
  async function refused(limited, p, probe) {
    const { result, detail } = await call(limited, p, probe);
    assert.equal(result.ok, false, `the call must fail\n${detail}`);
    assert.equal(result.rateLimit, true, `the SDK raises its RateLimitError\n${detail}`);
    assert.equal(result.errorClass, 'RateLimitError');
    assert.equal(result.status, 429);
    assert.equal(result.llmtapError, 'limit', 'llmtap answered, not the provider');
    assert.match(String(result.retryAfter), /^[0-9]+$/, `retry-after: ${result.retryAfter}`);
    assert.ok(Number(result.retryAfter) >= 1);
    assert.equal(result.errorType, p.name === 'anthropic' ? 'rate_limit_error' : 'rate_limit_exceeded');
    const body = result.errorBody;
    if (p.name === 'anthropic') {
      // The SDK keeps the whole document: {"type":"error","error":{...}}.
      assert.equal(body.type, 'error');
      assert.equal(body.error.type, 'rate_limit_error');
      assert.ok(result.message.includes(body.error.message), 'the SDK\'s message carries llmtap\'s');
    } else {
      // The SDK keeps the inner "error" object.
      assert.equal(body.type, 'rate_limit_exceeded');
      assert.equal(body.code, 'rate_limit_exceeded');
      assert.ok(result.message.includes(body.message), 'the SDK\'s message carries llmtap\'s');
    }
    assert.equal(mock.requestsFor(probe).length, 0, 'the refused call never reached the provider');
    return result;
  }

  async function refusalRecord(llmtap, probe, limit, p) {
    const records = await waitForRecord(llmtap, probe);
    assert.equal(records.length, 1, 'one record for the call');
    const attrs = records[0].attributes;
    assert.equal(attrs['http.response.status_code'], 429);
    assert.equal(attrs['llmtap.limit'], limit);
    assert.equal(attrs['llmtap.outcome'], 'refused');
    assert.equal(attrs['error.type'], 'limit');
    assert.equal(attrs['llmtap.client.name'], CLIENT);
    assert.equal(attrs['server.address'], p.host);
    assert.equal(attrs['gen_ai.provider.name'], p.name);
    assert.ok(!('llmtap.cost.usd' in attrs), 'a refused call costs nothing, and gets no made-up cost');
    return attrs;
  }

  async function successRecord(llmtap, probe) {
    const records = await waitForRecord(llmtap, probe);
    assert.equal(records.length, 1, 'one record for the call');
    const attrs = records[0].attributes;
    assert.equal(attrs['http.response.status_code'], 200);
    assert.equal(attrs['llmtap.outcome'], 'complete');
    assert.equal(attrs['llmtap.client.name'], CLIENT);
    assert.ok(!('llmtap.limit' in attrs));
    return attrs;
  }

  for (const p of PROVIDERS) {
    for (const way of ['proxy', 'base-url']) {
      test(`${p.name} (${way}): requests_per_minute = 2: the third call is RateLimitError naming the limit and the client; the mock saw two`, async () => {
        const limited = await startLimited('requests_per_minute = 2', way);
        await waitForWindow(MINUTE);
        const seenBefore = mock.seen.length;
        const probes = [newProbe(), newProbe(), newProbe()];
        const r = await inOneWindow(MINUTE, async () => {
          for (const probe of probes.slice(0, 2)) {
            assert.equal((await succeeds(limited, p, probe)).text, JSON_TEXT);
          }
          return refused(limited, p, probes[2]);
        });
        assert.ok(r.message.includes('requests_per_minute') && r.message.includes(CLIENT), r.message);
        const retryAfter = Number(r.retryAfter);
        assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}`);
        assert.equal(r.shouldRetry, 'true', 'a rate limit frees up: retrying later helps');
        assert.deepEqual(probes.map((probe) => mock.requestsFor(probe).length), [1, 1, 0]);
        assert.equal(mock.seen.length - seenBefore, 2, 'the mock received only two requests');
        for (const probe of probes.slice(0, 2)) await successRecord(limited.llmtap, probe);
        await refusalRecord(limited.llmtap, probes[2], 'requests_per_minute', p);
      });
    }
  }

  for (const p of PROVIDERS) {
    test(`${p.name}: output_tokens_per_hour below one answer: the next call is RateLimitError with x-should-retry: false`, async () => {
      const limit = p.jsonOutputTokens - 2;
      const limited = await startLimited(`output_tokens_per_hour = ${limit}`);
      await waitForWindow(HOUR);
      const first = newProbe();
      const second = newProbe();
      assert.equal((await succeeds(limited, p, first)).text, JSON_TEXT);
      // The charge lands when the answer's usage is known; the record is written after it.
      const attrs = await successRecord(limited.llmtap, first);
      assert.equal(attrs['gen_ai.usage.output_tokens'], p.jsonOutputTokens);
      assert.ok(attrs['gen_ai.usage.output_tokens'] > limit);
      assert.ok(!attrs['llmtap.usage.estimated'], 'the provider reported its usage');
      const r = await refused(limited, p, second);
      assert.ok(r.message.includes('output_tokens_per_hour') && r.message.includes(CLIENT), r.message);
      assert.equal(r.shouldRetry, 'false', 'retrying this hour cannot help');
      assert.ok(Number(r.retryAfter) <= 3600);
      await refusalRecord(limited.llmtap, second, 'output_tokens_per_hour', p);
    });
  }

  for (const p of PROVIDERS) {
    test(`${p.name}: a used-up budget (x-should-retry: false) is not retried by an SDK that retries (maxRetries: 2)`, async () => {
      const limited = await startLimited(`output_tokens_per_hour = ${p.jsonOutputTokens - 2}`);
      await waitForWindow(HOUR);
      const first = newProbe();
      const second = newProbe();
      assert.equal((await succeeds(limited, p, first)).text, JSON_TEXT);
      await successRecord(limited.llmtap, first);
      const started = Date.now();
      const run = await runSdkClient({
        scenario: p.json,
        args: { baseURL: limited.baseURL(p), apiKey: API_KEY, model: p.model, probe: second, headers: { 'x-request-id': second }, maxRetries: 2 },
        env: limited.env,
      });
      const elapsed = Date.now() - started;
      assert.ok(run.result, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
      assert.equal(run.result.rateLimit, true, run.result.message);
      assert.equal(run.result.shouldRetry, 'false');
      assert.ok(elapsed < 10_000, `the SDK took ${elapsed} ms: it retried`);
      await refusalRecord(limited.llmtap, second, 'output_tokens_per_hour', p);
      // A retry would have been sent within the SDK's first backoff (about 0.5 s); its record would
      // follow the first one's.
      await sleep(2000);
      assert.equal(limited.llmtap.stdout.split('\n').filter((l) => l.includes(second)).length, 1, 'one attempt only');
    });
  }

  for (const p of PROVIDERS) {
    test(`${p.name}: a priced model's record has llmtap.cost.usd > 0, charged to cost_usd_per_day: the next call is refused`, async () => {
      const budget = 0.000005; // 5 millionths of a dollar: below either answer's cost
      assert.ok(p.jsonCost > budget);
      const limited = await startLimited(`cost_usd_per_day = ${budget}`);
      await waitForWindow(DAY);
      const first = newProbe();
      const second = newProbe();
      assert.equal((await succeeds(limited, p, first)).text, JSON_TEXT);
      const attrs = await successRecord(limited.llmtap, first);
      const cost = attrs['llmtap.cost.usd'];
      assert.equal(typeof cost, 'number', `llmtap.cost.usd = ${cost} for ${p.model}`);
      assert.ok(cost > 0);
      assert.ok(Math.abs(cost - p.jsonCost) <= p.jsonCost * 1e-9, `cost ${cost}, prices.toml gives ${p.jsonCost}`);
      const r = await refused(limited, p, second);
      assert.ok(r.message.includes('cost_usd_per_day') && r.message.includes(CLIENT), r.message);
      assert.equal(r.shouldRetry, 'false');
      await refusalRecord(limited.llmtap, second, 'cost_usd_per_day', p);
    });
  }

  test('openai stream without include_usage: charged an estimate (llmtap.usage.estimated), which uses up output_tokens_per_hour', async () => {
    // 12 KB of padding is about 3000 tokens at 4 bytes a token: above the budget of 2000.
    const budget = 2000;
    const padding = 12_000;
    const limited = await startLimited(`output_tokens_per_hour = ${budget}`);
    await waitForWindow(HOUR);
    const first = newProbe();
    const second = newProbe();
    mock.padStream(first, padding);
    mock.release(first); // no gate: this test is not about incremental delivery
    const r1 = await succeeds(limited, OPENAI, first, { scenario: 'openai.chat.stream', includeUsage: false });
    assert.equal(r1.usage, null, 'no usage without include_usage');
    assert.equal(r1.text, STREAM_TEXT + fillerText(padding));
    const [seen] = mock.requestsFor(first);
    assert.equal(seen.stream, true);
    assert.ok(!('stream_options' in seen.body));

    const attrs = await successRecord(limited.llmtap, first);
    assert.equal(attrs['gen_ai.request.stream'], true);
    assert.equal(attrs['llmtap.usage.estimated'], true);
    assert.ok(!('gen_ai.usage.output_tokens' in attrs) && !('gen_ai.usage.input_tokens' in attrs),
      'gen_ai.usage.* stays what the provider said: nothing');
    const cost = attrs['llmtap.cost.usd'];
    assert.ok(typeof cost === 'number' && cost >= (padding / 4) * 0.60 / 1e6, `the estimate is priced: ${cost}`);

    const r2 = await refused(limited, OPENAI, second);
    assert.ok(r2.message.includes('output_tokens_per_hour') && r2.message.includes(CLIENT), r2.message);
    assert.equal(r2.shouldRetry, 'false');
    await refusalRecord(limited.llmtap, second, 'output_tokens_per_hour', OPENAI);
  });

  for (const p of PROVIDERS) {
    for (const way of ['proxy', 'base-url']) {
      test(`${p.name} (${way}): one client over kept-alive connections: two answers, then RateLimitError, never a broken connection`, async () => {
        // A large prompt: a body llmtap does not read when it refuses must not spoil the connection
        // for the next call (maxRetries: 0 would surface that as APIConnectionError).
        const limited = await startLimited('requests_per_minute = 2', way);
        await waitForWindow(MINUTE);
        const probes = [newProbe(), newProbe(), newProbe(), newProbe(), newProbe()];
        const run = await inOneWindow(MINUTE, async () => {
          const r = await runSdkClient({
            scenario: 'repeat',
            args: { baseURL: limited.baseURL(p), apiKey: API_KEY, model: p.model, provider: p.name, probes, padding: 64_000 },
            env: limited.env,
          });
          assert.equal(r.result && r.result.ok, true, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
          assert.deepEqual(r.result.outcomes, ['ok', 'ok', 'RateLimitError', 'RateLimitError', 'RateLimitError']);
          return r;
        });
        assert.deepEqual(probes.map((probe) => mock.requestsFor(probe).length), [1, 1, 0, 0, 0]);
        for (const probe of probes.slice(2)) await refusalRecord(limited.llmtap, probe, 'requests_per_minute', p);
      });
    }
  }

  test('anthropic: concurrent_calls = 1: a call made while a stream is open is RateLimitError; the place comes back when it ends', async () => {
    const limited = await startLimited('concurrent_calls = 1');
    const streaming = newProbe();
    const during = newProbe();
    const afterwards = newProbe();
    let duringCall = null;
    const r1 = await succeeds(limited, ANTHROPIC, streaming, {
      scenario: 'anthropic.stream',
      // The mock holds the rest of the stream until release: it is still open while this runs.
      onFirst: () => {
        duringCall = refused(limited, ANTHROPIC, during).finally(() => mock.release(streaming));
        duringCall.catch(() => {}); // awaited below, after the stream: not an unhandled rejection
      },
    });
    assert.equal(r1.text, STREAM_TEXT);
    assert.ok(duringCall, 'the stream announced its first event');
    const r2 = await duringCall;
    assert.equal(mock.requestsFor(streaming)[0].releasedBy, 'ack', 'the second call was answered while the stream was held open');
    assert.ok(r2.message.includes('concurrent_calls') && r2.message.includes(CLIENT), r2.message);
    assert.equal(r2.shouldRetry, 'true');
    await refusalRecord(limited.llmtap, during, 'concurrent_calls', ANTHROPIC);

    await successRecord(limited.llmtap, streaming);
    assert.equal((await succeeds(limited, ANTHROPIC, afterwards)).text, JSON_TEXT, 'the place came back when the stream ended');
  });
});
