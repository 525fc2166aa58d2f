'use strict';
// A tiny stand-in for an agent gateway: it calls the Anthropic Messages API the way agents do,
// once with fetch() (streamed) and once with node:https, and prints what came back. It knows
// nothing about llmtap: HTTPS_PROXY, NODE_EXTRA_CA_CERTS and `--require proxy-bootstrap.cjs` do it all.
//
// Env: ANTHROPIC_API_KEY (in compose the sentinel "llmtap-managed": llmtap swaps it for the real key,
//      which only llmtap holds; without any key the calls get a 401, which llmtap records too),
//      GATEWAY_MODEL (default claude-haiku-4-5), GATEWAY_INTERVAL_SECONDS (0 = call once, then idle).

const https = require('node:https');

const API_URL = 'https://api.anthropic.com/v1/messages';
const apiKey = process.env.ANTHROPIC_API_KEY || '';
const model = process.env.GATEWAY_MODEL || 'claude-haiku-4-5';
const intervalSeconds = Number(process.env.GATEWAY_INTERVAL_SECONDS || 0);

function requestBody(stream) {
  return JSON.stringify({
    model,
    max_tokens: 64,
    stream,
    messages: [{ role: 'user', content: 'In one sentence: what does a forward proxy do?' }],
  });
}

function headers() {
  const h = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' };
  if (apiKey) h['x-api-key'] = apiKey;
  return h;
}

async function callWithFetch() {
  const res = await fetch(API_URL, { method: 'POST', headers: headers(), body: requestBody(true) });
  let text = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body) text += decoder.decode(chunk, { stream: true });
  const deltas = [...text.matchAll(/"text":"((?:[^"\\]|\\.)*)"/g)].map((m) => JSON.parse(`"${m[1]}"`));
  return `fetch (stream): HTTP ${res.status} ${deltas.join('') || text.slice(0, 200)}`;
}

function callWithHttps() {
  return new Promise((resolve, reject) => {
    const req = https.request(API_URL, { method: 'POST', headers: headers(), timeout: 60_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve(`https.request: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(requestBody(false));
  });
}

async function round() {
  for (const call of [callWithFetch, callWithHttps]) {
    try {
      console.log(await call());
    } catch (err) {
      console.error(`${call.name} failed: ${err.message}${err.cause ? ` (${err.cause.code || err.cause.message})` : ''}`);
    }
  }
}

async function main() {
  if (!apiKey) console.log('ANTHROPIC_API_KEY is not set: the calls will be answered 401, and still show up in Grafana.');
  else if (apiKey === 'llmtap-managed') console.log('ANTHROPIC_API_KEY is the sentinel llmtap-managed: llmtap puts the real key in its place.');
  await round();
  if (intervalSeconds > 0) {
    setInterval(round, intervalSeconds * 1000);
  } else {
    console.log('done; idling (set GATEWAY_INTERVAL_SECONDS to call periodically, or `docker compose restart gateway`).');
    setInterval(() => {}, 1 << 30);
  }
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
main();
