'use strict';
// A stand-in agent for the tests: `node [--require proxy-bootstrap.cjs] client.cjs MODE URL`.
// Prints one JSON line: { ok: true, ... } or { ok: false, code, message }; exits 0 or 1.
// Modes: fetch, https (https.request), https-get, https-agent (own https.Agent), http (plain
// http.request), ws (the ws package), state (what the bootstrap did).

const http = require('node:http');
const https = require('node:https');
const WebSocket = require('ws');

const [mode, url] = process.argv.slice(2);
const BODY = JSON.stringify({ model: 'claude-test-1', max_tokens: 16, messages: [{ role: 'user', content: 'ping' }] });

function issuerOf(socket) {
  const cert = socket && typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : null;
  return cert && cert.issuer ? cert.issuer.CN || '' : '';
}

async function viaFetch() {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'test-key' }, body: BODY });
  return { status: res.status, body: await res.json() };
}

function viaHttps(get, agent) {
  return new Promise((resolve, reject) => {
    const onResponse = (res) => {
      const issuer = issuerOf(res.socket);
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode,
        issuer,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
      }));
      res.on('error', reject);
    };
    if (get) {
      https.get(url, onResponse).on('error', reject);
      return;
    }
    const options = { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'test-key' } };
    if (agent) options.agent = agent;
    const req = https.request(url, options, onResponse);
    req.on('error', reject);
    req.end(BODY);
  });
}

function viaHttp() {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(BODY);
  });
}

function viaWs() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10_000 });
    let issuer = '';
    ws.on('open', () => {
      issuer = issuerOf(ws._socket);
      ws.send('hello');
    });
    ws.on('message', (data) => {
      const echoed = data.toString();
      ws.close(1000, 'done');
      ws.once('close', () => resolve({ echoed, issuer }));
    });
    ws.on('error', reject);
  });
}

function state() {
  return { state: process[Symbol.for('llmtap.proxyBootstrap')] || null, dispatcher: Boolean(globalThis[Symbol.for('undici.globalDispatcher.1')]) };
}

const modes = {
  fetch: viaFetch,
  https: () => viaHttps(false),
  'https-get': () => viaHttps(true),
  // An agent of the caller's own, as SDKs built on node-fetch/agentkeepalive pass one.
  'https-agent': () => viaHttps(false, new https.Agent({ keepAlive: true })),
  http: viaHttp,
  ws: viaWs,
  state: async () => state(),
};

async function main() {
  const run = modes[mode];
  if (!run) throw new Error(`unknown mode ${mode}`);
  return run();
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify({ ok: true, mode, ...result })}\n`);
    process.exit(0);
  },
  (err) => {
    const cause = err && err.cause;
    process.stdout.write(`${JSON.stringify({
      ok: false,
      mode,
      code: (cause && cause.code) || err.code || '',
      message: `${err.message}${cause ? ` <- ${cause.message}` : ''}`,
    })}\n`);
    process.exit(1);
  },
);
