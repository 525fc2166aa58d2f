'use strict';
// An agent made of the official SDKs, unchanged: `node --require proxy-bootstrap.cjs sdk-client.cjs
// SCENARIO ARGS_JSON`. ARGS_JSON: { baseURL, apiKey, model, probe, includeUsage, headers, apiKeyHeader }:
// headers are the client's defaultHeaders; apiKeyHeader (Anthropic) sends apiKey as an x-api-key default
// header instead of as the SDK's own credential (Authorization: Bearer). The 'repeat' scenario takes
// { provider, probes, padding } instead of probe: one call per probe with one client. maxRetries: the
// SDK's (default 0 here: the tests see every answer as it came).
// Prints JSON lines: `{"first":true,...}` as soon as a stream yields its first event (the test then
// lets the mock send the rest), and a last line `{"ok":true,...}` or `{"ok":false,code,message,status,
// errorClass,permissionDenied,rateLimit,llmtapError,retryAfter,shouldRetry,errorType,errorBody}` (the
// SDK's error class, whether it is the SDK's PermissionDeniedError / the scenario's SDK's
// RateLimitError, the response's x-llmtap-error, retry-after and x-should-retry headers, the error's
// `type` and the error body as the SDK holds it).

const Anthropic = require('@anthropic-ai/sdk');
const OpenAI = require('openai');

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs || '{}');
const prompt = `ping ${args.probe}`;

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const AnthropicClient = Anthropic.Anthropic || Anthropic.default || Anthropic;
const OpenAIClient = OpenAI.OpenAI || OpenAI.default || OpenAI;

function anthropic() {
  const defaultHeaders = { ...(args.headers || {}) };
  if (args.apiKeyHeader) {
    defaultHeaders['x-api-key'] = args.apiKey;
    return new AnthropicClient({ apiKey: null, baseURL: args.baseURL, maxRetries: args.maxRetries ?? 0, timeout: 20_000, defaultHeaders });
  }
  return new AnthropicClient({ apiKey: args.apiKey, baseURL: args.baseURL, maxRetries: args.maxRetries ?? 0, timeout: 20_000, defaultHeaders });
}

function openai() {
  return new OpenAIClient({ apiKey: args.apiKey, baseURL: args.baseURL, maxRetries: args.maxRetries ?? 0, timeout: 20_000, defaultHeaders: args.headers || {} });
}

/** Iterates an SDK stream, announcing the first event; returns the events. */
async function drain(stream, describe) {
  const events = [];
  for await (const event of stream) {
    if (events.length === 0) emit({ first: true, event: describe(event) });
    events.push(event);
  }
  return events;
}

const scenarios = {
  async 'anthropic.json'() {
    const msg = await anthropic().messages.create({
      model: args.model, max_tokens: 64, messages: [{ role: 'user', content: prompt }],
    });
    return { id: msg.id, model: msg.model, text: msg.content.map((c) => c.text).join(''), usage: msg.usage, stopReason: msg.stop_reason };
  },

  async 'anthropic.stream'() {
    const stream = await anthropic().messages.create({
      model: args.model, max_tokens: 64, stream: true, messages: [{ role: 'user', content: prompt }],
    });
    const events = await drain(stream, (e) => e.type);
    let text = '';
    let usage = null;
    let id = null;
    let model = null;
    for (const e of events) {
      if (e.type === 'message_start') ({ id, model } = e.message);
      if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
      if (e.type === 'message_delta') usage = e.usage;
    }
    return { id, model, text, usage, types: events.map((e) => e.type) };
  },

  // The SDK's own stream helper, which accumulates the message (and its usage) itself.
  async 'anthropic.stream-helper'() {
    const stream = anthropic().messages.stream({
      model: args.model, max_tokens: 64, messages: [{ role: 'user', content: prompt }],
    });
    const events = await drain(stream, (e) => e.type);
    const msg = await stream.finalMessage();
    return { id: msg.id, model: msg.model, text: msg.content.map((c) => c.text).join(''), usage: msg.usage, types: events.map((e) => e.type) };
  },

  // The agent stops reading after the first event (breaks out of the loop: the SDK aborts the request).
  async 'anthropic.stream-abort'() {
    const stream = await anthropic().messages.create({
      model: args.model, max_tokens: 64, stream: true, messages: [{ role: 'user', content: prompt }],
    });
    let first = null;
    for await (const event of stream) {
      first = event.type;
      break;
    }
    return { first };
  },

  async 'openai.chat.json'() {
    const c = await openai().chat.completions.create({
      model: args.model, max_completion_tokens: 64, messages: [{ role: 'user', content: prompt }],
    });
    return { id: c.id, model: c.model, text: c.choices[0].message.content, usage: c.usage, finish: c.choices[0].finish_reason };
  },

  async 'openai.chat.stream'() {
    const request = { model: args.model, max_completion_tokens: 64, stream: true, messages: [{ role: 'user', content: prompt }] };
    if (args.includeUsage) request.stream_options = { include_usage: true };
    const stream = await openai().chat.completions.create(request);
    const chunks = await drain(stream, (c) => c.object);
    let text = '';
    let usage = null;
    for (const c of chunks) {
      for (const choice of c.choices) text += choice.delta.content || '';
      if (c.usage) usage = c.usage;
    }
    return { id: chunks[0] && chunks[0].id, model: chunks[0] && chunks[0].model, text, usage, chunks: chunks.length };
  },

  // One client, two calls (JSON, then a stream with usage) over its kept-alive connection.
  async 'openai.chat.twice'() {
    const client = openai();
    const messages = [{ role: 'user', content: prompt }];
    const first = await client.chat.completions.create({ model: args.model, messages });
    const stream = await client.chat.completions.create({ model: args.model, messages, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage = null;
    for await (const c of stream) {
      for (const choice of c.choices) text += choice.delta.content || '';
      if (c.usage) usage = c.usage;
    }
    return { calls: [{ id: first.id, text: first.choices[0].message.content, usage: first.usage }, { text, usage }] };
  },

  // One client, one call per probe of args.probes (each with x-request-id: probe and args.padding more
  // prompt characters), over its kept-alive connections; each call's outcome: 'ok' or the error's class.
  async 'repeat'() {
    const isAnthropic = args.provider === 'anthropic';
    const client = isAnthropic ? anthropic() : openai();
    const outcomes = [];
    for (const probe of args.probes) {
      const messages = [{ role: 'user', content: `ping ${probe} ${'x'.repeat(args.padding || 0)}` }];
      const options = { headers: { 'x-request-id': probe } };
      try {
        if (isAnthropic) await client.messages.create({ model: args.model, max_tokens: 64, messages }, options);
        else await client.chat.completions.create({ model: args.model, messages }, options);
        outcomes.push('ok');
      } catch (err) {
        outcomes.push((err && err.constructor && err.constructor.name) || String(err));
      }
    }
    return { outcomes };
  },

  async 'openai.responses.json'() {
    const r = await openai().responses.create({ model: args.model, max_output_tokens: 64, input: prompt });
    return { id: r.id, model: r.model, text: r.output_text, usage: r.usage, status: r.status };
  },

  async 'openai.responses.stream'() {
    const stream = await openai().responses.create({ model: args.model, max_output_tokens: 64, input: prompt, stream: true });
    const events = await drain(stream, (e) => e.type);
    let text = '';
    let completed = null;
    for (const e of events) {
      if (e.type === 'response.output_text.delta') text += e.delta;
      if (e.type === 'response.completed') completed = e.response;
    }
    return {
      id: completed && completed.id, model: completed && completed.model, text,
      usage: completed && completed.usage, types: events.map((e) => e.type),
    };
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  return run();
}

main().then(
  (result) => {
    emit({ ok: true, scenario, ...result });
    process.exit(0);
  },
  (err) => {
    const cause = err && err.cause;
    const headers = err && err.headers;
    const header = (name) => (headers && typeof headers.get === 'function' && headers.get(name)) || null;
    emit({
      ok: false,
      scenario,
      code: (cause && cause.code) || err.code || err.status || '',
      message: `${err.name}: ${err.message}${cause ? ` <- ${cause.message}` : ''}`,
      status: (err && err.status) || null,
      errorClass: (err && err.constructor && err.constructor.name) || null,
      permissionDenied: err instanceof AnthropicClient.PermissionDeniedError || err instanceof OpenAIClient.PermissionDeniedError,
      rateLimit: err instanceof (scenario.startsWith('anthropic') ? AnthropicClient : OpenAIClient).RateLimitError,
      llmtapError: header('x-llmtap-error'),
      retryAfter: header('retry-after'),
      shouldRetry: header('x-should-retry'),
      errorType: (err && err.type) || null,
      errorBody: (err && err.error) || null,
    });
    process.exit(1);
  },
);
