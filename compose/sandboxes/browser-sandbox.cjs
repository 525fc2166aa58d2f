'use strict';
// A stand-in for a browser sandbox: it fetches a few URLs through llmtap and prints what came back.
// Its profile ("browse" in ../llmtap/policy.toml) allows any public host except *.internal, so the
// first fetch goes through and the others are refused by llmtap (403), each with an audit record.
//
// It knows nothing about llmtap: HTTPS_PROXY/HTTP_PROXY (with this sandbox's proxy credentials),
// NODE_USE_ENV_PROXY=1 and NODE_EXTRA_CA_CERTS, all set in compose.yaml, do it all. Its network is
// internal: without llmtap it reaches nothing.
//
// Env: SANDBOX_INTERVAL_SECONDS (0 = try once, then idle).

const intervalSeconds = Number(process.env.SANDBOX_INTERVAL_SECONDS || 0);

const URLS = [
  'https://example.com/', // allowed: a public host (tunnelled, never decrypted)
  'http://metadata.google.internal/computeMetadata/v1/', // denied: deny = ["*.internal"]
  'http://169.254.169.254/latest/meta-data/', // denied: a private (link-local) address
];

async function tryUrl(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    const body = (await res.text()).slice(0, 160).replace(/\s+/g, ' ');
    const why = res.headers.get('x-llmtap-error');
    return `${url}: HTTP ${res.status}${why ? ` (refused by llmtap: ${why})` : ''} ${body}`;
  } catch (err) {
    const cause = err.cause ? ` (${err.cause.code || err.cause.message})` : '';
    return `${url}: failed: ${err.message}${cause}`;
  }
}

async function round() {
  for (const url of URLS) console.log(await tryUrl(url));
}

async function main() {
  await round();
  if (intervalSeconds > 0) {
    setInterval(round, intervalSeconds * 1000);
  } else {
    console.log('done; idling (set SANDBOX_INTERVAL_SECONDS to repeat, or `docker compose restart browser-sandbox`).');
    setInterval(() => {}, 1 << 30);
  }
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
main();
