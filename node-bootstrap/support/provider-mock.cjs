'use strict';
// A loopback HTTPS mock of the real provider APIs, for driving the official SDKs through llmtap:
//   POST /v1/messages          Anthropic Messages, JSON and SSE
//   POST /v1/chat/completions  OpenAI Chat Completions, JSON and SSE (usage chunk only when the request
//                              asks with stream_options.include_usage, as the real API does)
//   POST /v1/responses         OpenAI Responses, JSON and SSE
// Its certificate names api.anthropic.com and api.openai.com (signed by a CA made at run time), so
// llmtap, started with --resolve NAME:<mock port>:127.0.0.1 and --upstream-ca, reaches it under the
// real names. Streams are gated: the mock sends the first events, then holds the rest until the
// test calls release(probe) (the client saw an event) or a bounded wait runs out, so "the client got
// its first event before the upstream sent the last" is checked without timing thresholds.
//
// JSON answers are compressed as the real APIs (behind Cloudflare) do: br, else gzip, when the client
// accepts it; SSE goes out uncompressed. A request is tied to its test by a probe (`probe_<hex>`)
// that the client puts in the prompt.
//
// Started with { expectKeys: { host: key } }, the mock checks the credential as the real APIs do: an
// Anthropic call must carry `x-api-key: <key>` or `Authorization: Bearer <key>` (the pinned Anthropic
// SDK sends an apiKey the second way), an OpenAI call `Authorization: Bearer <key>`; anything else gets
// the provider's 401. The request's `auth` ('accepted' | 'rejected') and `authHeader` say how it went.
//
// padStream(probe, nbytes) makes the Chat Completions stream of that probe carry fillerText(nbytes)
// after its usual text (in content chunks of FILLER_CHUNK characters): a stream long enough for a
// byte-based usage estimate to matter.

const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const { LLMTAP_BIN, tempDir, sleep, stopLlmtap } = require('./helpers.cjs');

const ANTHROPIC_HOST = 'api.anthropic.com';
const OPENAI_HOST = 'api.openai.com';
const PROVIDER_HOSTS = [ANTHROPIC_HOST, OPENAI_HOST];
const PACKAGE_DIR = path.resolve(__dirname, '..');
const REPO_DIR = path.resolve(PACKAGE_DIR, '..');
const SDK_CLIENT = path.join(__dirname, 'sdk-client.cjs');
const BOOTSTRAP = path.join(PACKAGE_DIR, 'proxy-bootstrap.cjs');
/** How long a gated stream waits for release() before sending its tail anyway (the test then fails). */
const GATE_TIMEOUT_MS = 15_000;

/** Token counts the mock reports, per scenario; tests compare llmtap's record against these. */
const USAGE = {
  anthropicJson: { input_tokens: 21, cache_creation_input_tokens: 300, cache_read_input_tokens: 1000, output_tokens: 7 },
  // message_start carries the input side and output 1; message_delta the cumulative totals.
  anthropicStreamStart: { input_tokens: 12, cache_creation_input_tokens: 310, cache_read_input_tokens: 2048, output_tokens: 1 },
  anthropicStreamDelta: { input_tokens: 12, cache_creation_input_tokens: 310, cache_read_input_tokens: 2048, output_tokens: 87 },
  openaiChat: { prompt_tokens: 19, completion_tokens: 10, cached_tokens: 4, reasoning_tokens: 2 },
  openaiChatStream: { prompt_tokens: 23, completion_tokens: 14, cached_tokens: 0, reasoning_tokens: 0 },
  openaiResponses: { input_tokens: 37, cached_tokens: 5, output_tokens: 11, reasoning_tokens: 3 },
  openaiResponsesStream: { input_tokens: 41, cached_tokens: 0, output_tokens: 13, reasoning_tokens: 0 },
};

/** The model the mock answers with: the requested one plus a date, as the real APIs do. */
function responseModel(requested) {
  return `${requested}-2025-09-29`;
}

/** The text chunks a streamed answer is made of; the first goes out before the gate. */
const STREAM_CHUNKS = ['Hel', 'lo', ' from', ' the', ' mock'];
const STREAM_TEXT = STREAM_CHUNKS.join('');
const JSON_TEXT = 'pong';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

/** A throwaway CA and a leaf for the provider names (and localhost/127.0.0.1), ECDSA P-256. */
function makeProviderCerts(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=llmtap-test-provider-mock-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', `/CN=${ANTHROPIC_HOST}`], dir);
  fs.writeFileSync(path.join(dir, 'leaf.ext'), [
    `subjectAltName=${PROVIDER_HOSTS.map((h) => `DNS:${h}`).join(',')},DNS:localhost,IP:127.0.0.1`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    '',
  ].join('\n'));
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-days', '2',
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-extfile', 'leaf.ext', '-out', 'leaf.pem'], dir);
  return {
    caPem: path.join(dir, 'ca.pem'),
    key: fs.readFileSync(path.join(dir, 'leaf.key')),
    cert: fs.readFileSync(path.join(dir, 'leaf.pem')),
  };
}

function sse(event, data) {
  const json = JSON.stringify(data);
  return event ? `event: ${event}\ndata: ${json}\n\n` : `data: ${json}\n\n`;
}

function probeOf(text) {
  const m = /probe_[0-9a-f]{12}/.exec(text);
  return m ? m[0] : '';
}

function idFor(prefix, probe) {
  return `${prefix}${(probe || crypto.randomBytes(6).toString('hex')).replace(/[^0-9a-zA-Z]/g, '')}`;
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

function anthropicJson(req) {
  const u = USAGE.anthropicJson;
  return {
    id: idFor('msg_01', req.probe),
    type: 'message',
    role: 'assistant',
    model: responseModel(req.body.model),
    content: [{ type: 'text', text: JSON_TEXT }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: {
      input_tokens: u.input_tokens,
      cache_creation_input_tokens: u.cache_creation_input_tokens,
      cache_read_input_tokens: u.cache_read_input_tokens,
      cache_creation: { ephemeral_5m_input_tokens: u.cache_creation_input_tokens, ephemeral_1h_input_tokens: 0 },
      output_tokens: u.output_tokens,
      service_tier: 'standard',
    },
  };
}

function anthropicStream(req) {
  const id = idFor('msg_01', req.probe);
  const start = USAGE.anthropicStreamStart;
  const end = USAGE.anthropicStreamDelta;
  const head = [
    sse('message_start', {
      type: 'message_start',
      message: {
        id, type: 'message', role: 'assistant', model: responseModel(req.body.model), content: [],
        stop_reason: null, stop_sequence: null,
        usage: { ...start, cache_creation: { ephemeral_5m_input_tokens: start.cache_creation_input_tokens, ephemeral_1h_input_tokens: 0 }, service_tier: 'standard' },
      },
    }),
    sse('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
    sse('ping', { type: 'ping' }),
    sse('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: STREAM_CHUNKS[0] } }),
  ];
  const tail = [
    ...STREAM_CHUNKS.slice(1).map((text) => sse('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } })),
    sse('ping', { type: 'ping' }),
    sse('content_block_stop', { type: 'content_block_stop', index: 0 }),
    sse('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { ...end } }),
    sse('message_stop', { type: 'message_stop' }),
  ];
  return { head, tail };
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

function openaiUsage(u) {
  return {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.prompt_tokens + u.completion_tokens,
    prompt_tokens_details: { cached_tokens: u.cached_tokens, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: u.reasoning_tokens, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

function chatJson(req) {
  return {
    id: idFor('chatcmpl-', req.probe),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: responseModel(req.body.model),
    choices: [{ index: 0, message: { role: 'assistant', content: JSON_TEXT, refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' }],
    usage: openaiUsage(USAGE.openaiChat),
    service_tier: 'default',
    system_fingerprint: 'fp_mock',
  };
}

/** Characters of padding per content chunk (padStream). */
const FILLER_CHUNK = 500;

/** The padding padStream adds: `nbytes` ASCII characters. */
function fillerText(nbytes) {
  const words = 'lorem ipsum dolor sit amet ';
  return words.repeat(Math.floor(nbytes / words.length) + 1).slice(0, nbytes);
}

function chatStream(req) {
  const id = idFor('chatcmpl-', req.probe);
  const includeUsage = Boolean(req.body.stream_options && req.body.stream_options.include_usage);
  const base = { id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: responseModel(req.body.model), service_tier: 'default', system_fingerprint: 'fp_mock' };
  // With include_usage every chunk carries "usage": null and a last chunk with empty choices has it.
  const chunk = (delta, finish) => sse(null, {
    ...base,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  });
  const head = [chunk({ role: 'assistant', content: '', refusal: null }, null), chunk({ content: STREAM_CHUNKS[0] }, null)];
  const filler = req.filler || '';
  const pads = [];
  for (let i = 0; i < filler.length; i += FILLER_CHUNK) pads.push(filler.slice(i, i + FILLER_CHUNK));
  const tail = [...[...STREAM_CHUNKS.slice(1), ...pads].map((content) => chunk({ content }, null)), chunk({}, 'stop')];
  if (includeUsage) tail.push(sse(null, { ...base, choices: [], usage: openaiUsage(USAGE.openaiChatStream) }));
  tail.push('data: [DONE]\n\n');
  return { head, tail };
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

function responsesObject(req, { status, text, usage }) {
  const u = usage;
  return {
    id: idFor('resp_', req.probe),
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    status,
    background: false,
    error: null,
    incomplete_details: null,
    instructions: null,
    max_output_tokens: req.body.max_output_tokens ?? null,
    model: responseModel(req.body.model),
    output: text === null ? [] : [{
      id: idFor('msg_', req.probe), type: 'message', status: 'completed', role: 'assistant',
      content: [{ type: 'output_text', text, annotations: [], logprobs: [] }],
    }],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: true,
    temperature: 1.0,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: 1.0,
    truncation: 'disabled',
    usage: u ? {
      input_tokens: u.input_tokens,
      input_tokens_details: { cached_tokens: u.cached_tokens },
      output_tokens: u.output_tokens,
      output_tokens_details: { reasoning_tokens: u.reasoning_tokens },
      total_tokens: u.input_tokens + u.output_tokens,
    } : null,
    user: null,
    metadata: {},
  };
}

function responsesJson(req) {
  return responsesObject(req, { status: 'completed', text: JSON_TEXT, usage: USAGE.openaiResponses });
}

function responsesStream(req) {
  const itemId = idFor('msg_', req.probe);
  let seq = 0;
  const ev = (type, data) => sse(type, { type, sequence_number: seq++, ...data });
  const inProgress = responsesObject(req, { status: 'in_progress', text: null, usage: null });
  const part = (text) => ({ type: 'output_text', text, annotations: [] });
  const item = (status, content) => ({ id: itemId, type: 'message', status, role: 'assistant', content });
  const delta = (d) => ev('response.output_text.delta', { item_id: itemId, output_index: 0, content_index: 0, delta: d, logprobs: [] });
  const head = [
    ev('response.created', { response: inProgress }),
    ev('response.in_progress', { response: inProgress }),
    ev('response.output_item.added', { output_index: 0, item: item('in_progress', []) }),
    ev('response.content_part.added', { item_id: itemId, output_index: 0, content_index: 0, part: part('') }),
    delta(STREAM_CHUNKS[0]),
  ];
  const tail = [
    ...STREAM_CHUNKS.slice(1).map(delta),
    ev('response.output_text.done', { item_id: itemId, output_index: 0, content_index: 0, text: STREAM_TEXT, logprobs: [] }),
    ev('response.content_part.done', { item_id: itemId, output_index: 0, content_index: 0, part: part(STREAM_TEXT) }),
    ev('response.output_item.done', { output_index: 0, item: item('completed', [part(STREAM_TEXT)]) }),
    ev('response.completed', { response: responsesObject(req, { status: 'completed', text: STREAM_TEXT, usage: USAGE.openaiResponsesStream }) }),
  ];
  return { head, tail };
}

// ---------------------------------------------------------------------------------------------

/** br, else gzip, else identity, as the client's accept-encoding allows. */
function compress(acceptEncoding, raw) {
  const accepted = String(acceptEncoding || '').split(',').map((e) => e.split(';')[0].trim().toLowerCase());
  if (accepted.includes('br')) return { encoding: 'br', bytes: zlib.brotliCompressSync(raw) };
  if (accepted.includes('gzip')) return { encoding: 'gzip', bytes: zlib.gzipSync(raw) };
  return { encoding: 'identity', bytes: raw };
}

const ROUTES = {
  '/v1/messages': { host: ANTHROPIC_HOST, json: anthropicJson, stream: anthropicStream },
  '/v1/chat/completions': { host: OPENAI_HOST, json: chatJson, stream: chatStream },
  '/v1/responses': { host: OPENAI_HOST, json: responsesJson, stream: responsesStream },
};

/** Where each provider takes its key: [header, how the key appears in it]. */
const AUTH_PLACES = {
  [ANTHROPIC_HOST]: [['x-api-key', (k) => k], ['authorization', (k) => `Bearer ${k}`]],
  [OPENAI_HOST]: [['authorization', (k) => `Bearer ${k}`]],
};

/** The 401 body the real API sends for a bad key (no key text in it). */
function authError(host) {
  if (host === ANTHROPIC_HOST) return { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } };
  return { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } };
}

/**
 * Starts the provider mock on a loopback port from the OS. Returns { port, caPem, seen, release,
 * requestsFor, close }. `seen` lists every request: { probe, path, host, servername, headers,
 * body, stream, encoding, state } where encoding is how a JSON answer went out, state is 'head-sent' |
 * 'tail-sent', and releasedBy is 'ack' | 'timeout'; with expectKeys also auth and authHeader.
 */
async function startProviderMock({ expectKeys = null } = {}) {
  const dir = tempDir('provider-mock');
  const certs = makeProviderCerts(dir);
  const seen = [];
  const gates = new Map();
  const padding = new Map(); // probe -> extra content bytes of its chat stream (padStream)
  const timers = new Set();

  function gate(probe) {
    let entry = gates.get(probe);
    if (!entry) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      entry = { promise, resolve };
      gates.set(probe, entry);
    }
    return entry;
  }

  const server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = {};
      try { body = JSON.parse(raw); } catch { /* answered below */ }
      const pathname = new URL(req.url, 'https://mock.invalid').pathname;
      const entry = {
        probe: probeOf(raw),
        method: req.method,
        path: pathname,
        host: req.headers.host || '',
        servername: req.socket.servername || '',
        headers: req.headers,
        body,
        stream: body.stream === true,
        encoding: 'identity',
        state: 'received',
        releasedBy: null,
        auth: 'unchecked',
        authHeader: null,
      };
      seen.push(entry);
      const route = ROUTES[pathname];
      if (req.method !== 'POST' || !route || !body.model) {
        const err = JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: `mock has no ${req.method} ${req.url}` } });
        res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(err) });
        res.end(err);
        return;
      }
      if (expectKeys) {
        const key = expectKeys[route.host];
        const place = AUTH_PLACES[route.host].find(([h, shape]) => req.headers[h] === shape(key));
        entry.authHeader = place ? place[0] : null;
        entry.auth = place ? 'accepted' : 'rejected';
        if (!place) {
          const err = JSON.stringify(authError(route.host));
          res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(err) });
          res.end(err);
          return;
        }
      }
      const pad = (entry.probe && pathname === '/v1/chat/completions' && padding.get(entry.probe)) || 0;
      const ctx = { probe: entry.probe, body, filler: pad ? fillerText(pad) : '' };
      if (!entry.stream) {
        const { encoding, bytes } = compress(req.headers['accept-encoding'], Buffer.from(JSON.stringify(route.json(ctx))));
        entry.encoding = encoding;
        const headers = { 'content-type': 'application/json', 'content-length': bytes.length, 'request-id': `req_${entry.probe}` };
        if (encoding !== 'identity') headers['content-encoding'] = encoding;
        res.writeHead(200, headers);
        res.end(bytes);
        entry.state = 'tail-sent';
        return;
      }
      const { head, tail } = route.stream(ctx);
      req.socket.setNoDelay(true);
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': `req_${entry.probe}` });
      for (const part of head) res.write(part);
      entry.state = 'head-sent';
      const g = gate(entry.probe);
      let timer;
      entry.releasedBy = await Promise.race([
        g.promise.then(() => 'ack'),
        new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), GATE_TIMEOUT_MS); timers.add(timer); }),
      ]);
      clearTimeout(timer);
      timers.delete(timer);
      if (res.destroyed) return;
      for (const part of tail) res.write(part);
      entry.state = 'tail-sent';
      res.end();
    });
  });
  const sockets = new Set();
  server.on('secureConnection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    caPem: certs.caPem,
    seen,
    /** Lets the stream for `probe` send its tail (idempotent; may come before the request). */
    release(probe) { gate(probe).resolve(); },
    requestsFor(probe) { return seen.filter((s) => s.probe === probe); },
    /** The Chat Completions stream for `probe` carries fillerText(nbytes) after its usual text. */
    padStream(probe, nbytes) { padding.set(probe, nbytes); },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const g of gates.values()) g.resolve();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// llmtap with the real provider names pinned to the mock

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function healthStatus(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Whether something accepts TCP connections on the loopback port (1 s at most). */
function accepts(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port, timeout: 1000 });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('timeout', () => { sock.destroy(); resolve(false); });
    sock.once('error', () => resolve(false));
  });
}

function cleanEnv(extra) {
  return { PATH: process.env.PATH || '/usr/bin:/bin', HOME: os.tmpdir(), LANG: 'C.UTF-8', ...extra };
}

/**
 * Starts the real llmtap binary on its default LLM hosts (api.anthropic.com, api.openai.com), both
 * pinned to the mock's loopback port, trusting the mock's CA upstream. Records go to stdout.
 * Options: extraArgs (more flags: --keys ...), env (more variables for llmtap's process), reverse
 * (the base-URL routes on a loopback port of their own, proc.reversePort, with port 443 of the
 * provider names pinned to the mock by --connect-to: a route's upstream is https://<name>).
 */
async function startLlmtapForProviders(mock, { extraArgs = [], env = {}, reverse = false } = {}) {
  if (!fs.existsSync(LLMTAP_BIN)) {
    throw new Error(`llmtap binary not found at ${LLMTAP_BIN}: build it with \`cargo build --bin llmtap\` or set LLMTAP_BIN`);
  }
  const port = await freePort();
  const caDir = tempDir('sdk-ca');
  const args = [
    '--listen', `127.0.0.1:${port}`,
    '--ca-dir', caDir,
    '--upstream-ca', mock.caPem,
    '--addons-config', path.join(REPO_DIR, 'addons-config'),
    ...PROVIDER_HOSTS.flatMap((h) => ['--resolve', `${h}:${mock.port}:127.0.0.1`]),
  ];
  const reversePort = reverse ? await freePort() : null;
  if (reverse) {
    args.push('--reverse-listen', `127.0.0.1:${reversePort}`);
    for (const h of PROVIDER_HOSTS) args.push('--connect-to', `${h}:443:127.0.0.1:${mock.port}`);
  }
  args.push(...extraArgs);
  const child = spawn(LLMTAP_BIN, args, {
    cwd: REPO_DIR,
    env: cleanEnv({ LLMTAP_LOG: process.env.LLMTAP_LOG || 'llmtap=info,warn', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = { child, port, reversePort, caDir, stdout: '', stderr: '', exited: null };
  child.stdout.setEncoding('utf8').on('data', (d) => { proc.stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { proc.stderr += d; });
  child.on('exit', (code, signal) => { proc.exited = { code, signal }; });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !proc.exited) {
    if (await healthStatus(port) === 200 && (!reverse || await accepts(reversePort))) {
      proc.caPem = path.join(caDir, 'ca.pem');
      if (fs.existsSync(proc.caPem)) return proc;
    }
    await sleep(100);
  }
  await stopLlmtap(proc);
  throw new Error(`llmtap did not become healthy on 127.0.0.1:${port} (exit: ${JSON.stringify(proc.exited)})\nstderr:\n${proc.stderr.slice(-4000)}`);
}

// ---------------------------------------------------------------------------------------------
// The SDK client process

/**
 * Runs support/sdk-client.cjs SCENARIO in a child node preloaded with the bootstrap. Each stdout
 * line is JSON; a line with "first": true (the client holds its first stream event) is handed to
 * onFirst at once, so the test can release the mock's gate. Resolves with every line, the last
 * one as `result`, and how the process ended. Killed after timeoutMs.
 */
function runSdkClient({ scenario, args, env, onFirst, timeoutMs = 30_000 }) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--require', BOOTSTRAP, SDK_CLIENT, scenario, JSON.stringify(args)], {
      cwd: PACKAGE_DIR,
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = [];
    let stdout = '';
    let pending = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
      pending += d;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (!line) continue;
        let parsed;
        try { parsed = JSON.parse(line); } catch { continue; }
        lines.push(parsed);
        if (parsed.first && onFirst) onFirst(parsed);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = lines.filter((l) => l.ok !== undefined).pop() || null;
      resolve({ code, signal, stdout, stderr, lines, result });
    });
  });
}

function newProbe() {
  return `probe_${crypto.randomBytes(6).toString('hex')}`;
}

module.exports = {
  ANTHROPIC_HOST,
  JSON_TEXT,
  OPENAI_HOST,
  STREAM_CHUNKS,
  STREAM_TEXT,
  USAGE,
  fillerText,
  newProbe,
  responseModel,
  runSdkClient,
  startLlmtapForProviders,
  startProviderMock,
};
