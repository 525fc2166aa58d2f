'use strict';
// The official SDKs (@anthropic-ai/sdk, openai), unchanged, in a child node started with
// `--require proxy-bootstrap.cjs`, HTTPS_PROXY = llmtap and NODE_EXTRA_CA_CERTS = llmtap's CA, talk to
// a loopback mock of the provider APIs through the real llmtap binary (LLMTAP_BIN, default
// ../target/debug/llmtap). The SDKs use the real host names with the mock's port
// (https://api.anthropic.com:<port>); llmtap pins those names to the mock with --resolve.
// Checked: the SDK gets the mocked answer (JSON and streaming, the stream arriving event by event),
// and llmtap's record of the call has the right model, token counts and usage source.

const { after, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { recordsMentioning, sleep, stopLlmtap, waitForRecord } = require('../support/helpers.cjs');
const {
  ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT, USAGE,
  newProbe, responseModel, runSdkClient, startLlmtapForProviders, startProviderMock,
} = require('../support/provider-mock.cjs');

const ANTHROPIC_MODEL = 'claude-mock-4-7';
const OPENAI_MODEL = 'gpt-mock-5';
// Key-shaped secrets: they must reach the mock and never appear in llmtap's output.
const ANTHROPIC_KEY = `sk-ant-api03-${crypto.randomBytes(24).toString('hex')}`;
const OPENAI_KEY = `sk-proj-${crypto.randomBytes(24).toString('hex')}`;

const TOKEN_ATTRS = [
  'gen_ai.usage.input_tokens',
  'gen_ai.usage.output_tokens',
  'gen_ai.usage.cache_read.input_tokens',
  'gen_ai.usage.cache_creation.input_tokens',
  'gen_ai.usage.reasoning.output_tokens',
];

describe('official SDKs through llmtap', { timeout: 120_000 }, () => {
  let mock;
  let llmtap;

  before(async () => {
    mock = await startProviderMock();
    llmtap = await startLlmtapForProviders(mock);
  });

  after(async () => {
    await stopLlmtap(llmtap);
    if (mock) await mock.close();
  });

  /**
   * Runs one SDK scenario through llmtap; checks the call worked, reached the mock once under the
   * real name, streamed incrementally (when it streams), and returns the SDK's result and llmtap's
   * record (attributes) for it.
   */
  async function call(scenario, { includeUsage = false } = {}) {
    const anthropic = scenario.startsWith('anthropic.');
    const host = anthropic ? ANTHROPIC_HOST : OPENAI_HOST;
    const probe = newProbe();
    const apiKey = anthropic ? ANTHROPIC_KEY : OPENAI_KEY;
    const args = {
      baseURL: anthropic ? `https://${host}:${mock.port}` : `https://${host}:${mock.port}/v1`,
      apiKey,
      model: anthropic ? ANTHROPIC_MODEL : OPENAI_MODEL,
      probe,
      includeUsage,
    };
    let stateAtFirst = null;
    const run = await runSdkClient({
      scenario,
      args,
      env: { HTTPS_PROXY: `http://127.0.0.1:${llmtap.port}`, NODE_EXTRA_CA_CERTS: llmtap.caPem },
      onFirst: () => {
        const req = mock.requestsFor(probe)[0];
        stateAtFirst = req ? req.state : 'not-received';
        mock.release(probe);
      },
    });
    const detail = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}\nllmtap stderr tail:\n${llmtap.stderr.slice(-2000)}`;
    assert.equal(run.result && run.result.ok, true, `SDK call failed\n${detail}`);

    const seen = mock.requestsFor(probe);
    assert.equal(seen.length, 1, 'the mock saw the call exactly once');
    const req = seen[0];
    assert.equal(req.host, `${host}:${mock.port}`, 'Host header names the real provider');
    assert.equal(req.servername, host, 'llmtap connected upstream with the real name as SNI');
    assert.ok(JSON.stringify(req.headers).includes(apiKey), 'the API key reached the upstream');

    if (req.stream) {
      assert.ok(run.lines.some((l) => l.first), 'the client announced its first stream event');
      assert.equal(stateAtFirst, 'head-sent', 'the SDK had its first event while the mock still held the rest of the stream');
      assert.equal(req.releasedBy, 'ack', 'the mock sent the tail only after the SDK acknowledged the first event');
    }

    const records = await waitForRecord(llmtap, probe);
    assert.equal(records.length, 1, 'exactly one record for the call');
    const line = llmtap.stdout.split('\n').find((l) => l.includes(probe));
    assert.ok(!line.includes(apiKey), 'the API key appears nowhere in the record');
    const attrs = records[0].attributes;
    assert.equal(attrs['http.response.status_code'], 200);
    assert.equal(attrs['server.address'], host);
    assert.equal(attrs['llmtap.outcome'], 'complete');
    // JSON answers went out compressed (br: the SDK accepts it); llmtap decoded its copy only.
    if (!req.stream) assert.equal(req.encoding, 'br');
    return { result: run.result, attrs, args };
  }

  function assertTokens(attrs, expected) {
    for (const key of TOKEN_ATTRS) {
      if (expected[key] === undefined) {
        assert.ok(!(key in attrs), `${key} must be absent, got ${attrs[key]}`);
      } else {
        assert.equal(attrs[key], expected[key], key);
      }
    }
  }

  // --- Anthropic Messages ---------------------------------------------------------------------

  test('anthropic: messages.create (JSON)', async () => {
    const { result, attrs } = await call('anthropic.json');
    const u = USAGE.anthropicJson;
    assert.equal(result.text, JSON_TEXT);
    assert.equal(result.model, responseModel(ANTHROPIC_MODEL));
    assert.equal(result.usage.input_tokens, u.input_tokens);
    assert.equal(result.usage.output_tokens, u.output_tokens);

    assert.equal(attrs['gen_ai.provider.name'], 'anthropic');
    assert.equal(attrs['gen_ai.request.model'], ANTHROPIC_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(ANTHROPIC_MODEL));
    assert.equal(attrs['gen_ai.response.id'], result.id);
    assert.equal(attrs['gen_ai.request.stream'], false);
    assert.equal(attrs['llmtap.usage.source'], 'response');
    assertTokens(attrs, {
      'gen_ai.usage.input_tokens': u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
      'gen_ai.usage.output_tokens': u.output_tokens,
      'gen_ai.usage.cache_read.input_tokens': u.cache_read_input_tokens,
      'gen_ai.usage.cache_creation.input_tokens': u.cache_creation_input_tokens,
    });
  });

  for (const scenario of ['anthropic.stream', 'anthropic.stream-helper']) {
    test(`anthropic: ${scenario === 'anthropic.stream' ? 'messages.create({stream: true})' : 'messages.stream() helper'} (SSE, incremental)`, async () => {
      const { result, attrs } = await call(scenario);
      const u = USAGE.anthropicStreamDelta;
      assert.equal(result.text, STREAM_TEXT);
      assert.equal(result.model, responseModel(ANTHROPIC_MODEL));
      assert.equal(result.usage.output_tokens, u.output_tokens);
      assert.equal(result.types[0], 'message_start');
      assert.equal(result.types.at(-1), 'message_stop');

      assert.equal(attrs['gen_ai.request.model'], ANTHROPIC_MODEL);
      assert.equal(attrs['gen_ai.response.model'], responseModel(ANTHROPIC_MODEL));
      assert.equal(attrs['gen_ai.response.id'], result.id);
      assert.equal(attrs['gen_ai.request.stream'], true);
      assert.deepEqual(attrs['gen_ai.response.finish_reasons'], ['end_turn']);
      assert.equal(attrs['llmtap.usage.source'], 'stream');
      // message_delta's usage is cumulative and repeats the input side: replaced, not added.
      assertTokens(attrs, {
        'gen_ai.usage.input_tokens': u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
        'gen_ai.usage.output_tokens': u.output_tokens,
        'gen_ai.usage.cache_read.input_tokens': u.cache_read_input_tokens,
        'gen_ai.usage.cache_creation.input_tokens': u.cache_creation_input_tokens,
      });
    });
  }

  test('anthropic: an agent that stops reading a stream: record says client_aborted / stream_cut_short, llmtap goes on', async () => {
    const probe = newProbe();
    const run = await runSdkClient({
      scenario: 'anthropic.stream-abort',
      args: { baseURL: `https://${ANTHROPIC_HOST}:${mock.port}`, apiKey: ANTHROPIC_KEY, model: ANTHROPIC_MODEL, probe },
      env: { HTTPS_PROXY: `http://127.0.0.1:${llmtap.port}`, NODE_EXTRA_CA_CERTS: llmtap.caPem },
    });
    assert.equal(run.result && run.result.ok, true, `SDK call failed\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
    assert.equal(run.result.first, 'message_start');
    mock.release(probe);
    const [record] = await waitForRecord(llmtap, probe);
    const attrs = record.attributes;
    const u = USAGE.anthropicStreamStart;
    assert.equal(attrs['llmtap.outcome'], 'client_aborted');
    assert.equal(attrs['llmtap.usage.source'], 'stream_cut_short');
    assert.equal(attrs['gen_ai.request.model'], ANTHROPIC_MODEL);
    assert.equal(attrs['gen_ai.usage.input_tokens'], u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens);
    const { result } = await call('anthropic.json');
    assert.equal(result.text, JSON_TEXT, 'llmtap still serves calls');
  });

  // --- OpenAI Chat Completions ----------------------------------------------------------------

  test('openai: chat.completions.create (JSON)', async () => {
    const { result, attrs } = await call('openai.chat.json');
    const u = USAGE.openaiChat;
    assert.equal(result.text, JSON_TEXT);
    assert.equal(result.model, responseModel(OPENAI_MODEL));
    assert.equal(result.usage.prompt_tokens, u.prompt_tokens);

    assert.equal(attrs['gen_ai.provider.name'], 'openai');
    assert.equal(attrs['gen_ai.request.model'], OPENAI_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(OPENAI_MODEL));
    assert.equal(attrs['gen_ai.response.id'], result.id);
    assert.equal(attrs['llmtap.usage.source'], 'response');
    // prompt_tokens already includes the cached ones.
    assertTokens(attrs, {
      'gen_ai.usage.input_tokens': u.prompt_tokens,
      'gen_ai.usage.output_tokens': u.completion_tokens,
      'gen_ai.usage.cache_read.input_tokens': u.cached_tokens,
      'gen_ai.usage.reasoning.output_tokens': u.reasoning_tokens,
    });
  });

  test('openai: chat.completions.create({stream: true, stream_options.include_usage}) (SSE, incremental)', async () => {
    const { result, attrs } = await call('openai.chat.stream', { includeUsage: true });
    const u = USAGE.openaiChatStream;
    assert.equal(result.text, STREAM_TEXT);
    assert.equal(result.usage.prompt_tokens, u.prompt_tokens);
    assert.equal(result.usage.completion_tokens, u.completion_tokens);

    assert.equal(attrs['gen_ai.request.model'], OPENAI_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(OPENAI_MODEL));
    assert.equal(attrs['gen_ai.response.id'], result.id);
    assert.equal(attrs['gen_ai.request.stream'], true);
    assert.equal(attrs['llmtap.usage.source'], 'stream');
    assertTokens(attrs, {
      'gen_ai.usage.input_tokens': u.prompt_tokens,
      'gen_ai.usage.output_tokens': u.completion_tokens,
      'gen_ai.usage.cache_read.input_tokens': u.cached_tokens,
      'gen_ai.usage.reasoning.output_tokens': u.reasoning_tokens,
    });
  });

  test('openai: chat.completions.create({stream: true}) without include_usage: usage absent, request unchanged', async () => {
    const { result, attrs, args } = await call('openai.chat.stream', { includeUsage: false });
    assert.equal(result.text, STREAM_TEXT);
    assert.equal(result.usage, null, 'the SDK got no usage: llmtap did not add stream_options');
    const [req] = mock.requestsFor(args.probe);
    assert.equal(req.body.stream_options, undefined, 'llmtap forwarded the request body unchanged');

    assert.equal(attrs['gen_ai.request.model'], OPENAI_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(OPENAI_MODEL));
    assert.equal(attrs['llmtap.usage.source'], 'absent');
    assertTokens(attrs, {});
  });

  test('openai: two calls on one client (kept-alive connection) are two records, each with its own usage', async () => {
    const probe = newProbe();
    mock.release(probe); // this one is not about incremental delivery: no gate
    const run = await runSdkClient({
      scenario: 'openai.chat.twice',
      args: { baseURL: `https://${OPENAI_HOST}:${mock.port}/v1`, apiKey: OPENAI_KEY, model: OPENAI_MODEL, probe },
      env: { HTTPS_PROXY: `http://127.0.0.1:${llmtap.port}`, NODE_EXTRA_CA_CERTS: llmtap.caPem },
    });
    assert.equal(run.result && run.result.ok, true, `SDK call failed\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
    assert.deepEqual(run.result.calls.map((c) => c.text), [JSON_TEXT, STREAM_TEXT]);
    assert.equal(mock.requestsFor(probe).length, 2);
    await waitForRecord(llmtap, probe);
    const deadline = Date.now() + 10_000;
    while (recordsMentioning(llmtap, probe).length < 2 && Date.now() < deadline) await sleep(50);
    const records = recordsMentioning(llmtap, probe);
    assert.equal(records.length, 2, 'one record per call');
    const bySource = Object.fromEntries(records.map((r) => [r.attributes['llmtap.usage.source'], r.attributes]));
    assert.deepEqual(Object.keys(bySource).sort(), ['response', 'stream']);
    assert.equal(bySource.response['gen_ai.usage.input_tokens'], USAGE.openaiChat.prompt_tokens);
    assert.equal(bySource.response['gen_ai.usage.output_tokens'], USAGE.openaiChat.completion_tokens);
    assert.equal(bySource.stream['gen_ai.usage.input_tokens'], USAGE.openaiChatStream.prompt_tokens);
    assert.equal(bySource.stream['gen_ai.usage.output_tokens'], USAGE.openaiChatStream.completion_tokens);
  });

  // --- OpenAI Responses -----------------------------------------------------------------------

  test('openai: responses.create (JSON)', async () => {
    const { result, attrs } = await call('openai.responses.json');
    const u = USAGE.openaiResponses;
    assert.equal(result.text, JSON_TEXT);
    assert.equal(result.status, 'completed');
    assert.equal(result.usage.input_tokens, u.input_tokens);

    assert.equal(attrs['gen_ai.provider.name'], 'openai');
    assert.equal(attrs['gen_ai.request.model'], OPENAI_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(OPENAI_MODEL));
    assert.equal(attrs['gen_ai.response.id'], result.id);
    assert.equal(attrs['llmtap.usage.source'], 'response');
    assertTokens(attrs, {
      'gen_ai.usage.input_tokens': u.input_tokens,
      'gen_ai.usage.output_tokens': u.output_tokens,
      'gen_ai.usage.cache_read.input_tokens': u.cached_tokens,
      'gen_ai.usage.reasoning.output_tokens': u.reasoning_tokens,
    });
  });

  test('openai: responses.create({stream: true}) (SSE, incremental)', async () => {
    const { result, attrs } = await call('openai.responses.stream');
    const u = USAGE.openaiResponsesStream;
    assert.equal(result.text, STREAM_TEXT);
    assert.equal(result.types[0], 'response.created');
    assert.equal(result.types.at(-1), 'response.completed');
    assert.equal(result.usage.output_tokens, u.output_tokens);

    assert.equal(attrs['gen_ai.request.model'], OPENAI_MODEL);
    assert.equal(attrs['gen_ai.response.model'], responseModel(OPENAI_MODEL));
    assert.equal(attrs['gen_ai.response.id'], result.id);
    assert.equal(attrs['gen_ai.request.stream'], true);
    assert.equal(attrs['llmtap.usage.source'], 'stream');
    assertTokens(attrs, {
      'gen_ai.usage.input_tokens': u.input_tokens,
      'gen_ai.usage.output_tokens': u.output_tokens,
      'gen_ai.usage.cache_read.input_tokens': u.cached_tokens,
      'gen_ai.usage.reasoning.output_tokens': u.reasoning_tokens,
    });
  });
});
