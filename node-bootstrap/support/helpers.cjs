'use strict';
// Test helpers: a test CA and a loopback HTTPS/WebSocket mock made at run time, the real llmtap binary
// on a free loopback port, and child Node processes loaded with the bootstrap. They live outside test/
// because `node --test test/` runs every .cjs file under a directory named test.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { WebSocketServer } = require('ws');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const REPO_DIR = path.resolve(PACKAGE_DIR, '..');
const BOOTSTRAP = path.join(PACKAGE_DIR, 'proxy-bootstrap.cjs');
const CLIENT_SCRIPT = path.join(__dirname, 'client.cjs');
const LLMTAP_BIN = path.resolve(PACKAGE_DIR, process.env.LLMTAP_BIN || '../target/debug/llmtap');

/** The intercepted (LLM) host name and a host the mock also answers for, used to test NO_PROXY. */
const LLM_HOST = 'llm.test';
const DIRECT_HOST = 'localhost';

const tempDirs = [];
process.on('exit', () => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the OS temp dir, removed when the test process exits. */
function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `llmtap-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

/** A throwaway CA and a leaf for llm.test, localhost and 127.0.0.1, ECDSA P-256, made with openssl. */
function makeMockCerts(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=llmtap-test-mock-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', `/CN=${LLM_HOST}`], dir);
  fs.writeFileSync(path.join(dir, 'leaf.ext'), [
    `subjectAltName=DNS:${LLM_HOST},DNS:${DIRECT_HOST},IP:127.0.0.1`,
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

function anthropicReply(model) {
  return {
    id: `msg_${crypto.randomBytes(6).toString('hex')}`,
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'text', text: 'pong' }],
    stop_reason: 'end_turn',
    usage: { input_tokens: 12, output_tokens: 3 },
  };
}

/** Loopback HTTPS server answering Anthropic-shaped JSON, plus a WebSocket echo on the same port. */
async function startMock(certs) {
  const seen = [];
  const server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      seen.push({ kind: 'http', method: req.method, url: req.url, servername: req.socket.servername || '' });
      let model = 'claude-test-1';
      try { model = JSON.parse(Buffer.concat(chunks).toString('utf8')).model || model; } catch { /* not JSON */ }
      const body = JSON.stringify(anthropicReply(model));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    seen.push({ kind: 'ws', method: req.method, url: req.url, servername: req.socket.servername || '' });
    ws.on('message', (data) => ws.send(`echo:${data}`));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const sockets = new Set();
  server.on('secureConnection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  return {
    port: server.address().port,
    seen,
    async close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port that was free a moment ago: llmtap needs a concrete --listen address. */
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

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function getStatus(url, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Environment without anything that would change llmtap's or a client's behaviour behind our back. */
function cleanEnv(extra) {
  const env = { PATH: process.env.PATH || '/usr/bin:/bin', HOME: os.tmpdir(), LANG: 'C.UTF-8' };
  return { ...env, ...extra };
}

/**
 * Starts the real llmtap binary: fresh CA dir, the mock's name as the only LLM host, the mock's CA as
 * the extra upstream root, llm.test pinned to the mock's loopback port. Records go to stdout.
 */
async function startLlmtap({ mockPort, mockCaPem, extraResolve = [] }) {
  if (!fs.existsSync(LLMTAP_BIN)) {
    throw new Error(`llmtap binary not found at ${LLMTAP_BIN}: build it with \`cargo build\` or set LLMTAP_BIN`);
  }
  const port = await freePort();
  const caDir = tempDir('ca');
  const args = [
    '--listen', `127.0.0.1:${port}`,
    '--ca-dir', caDir,
    '--llm-hosts', LLM_HOST,
    '--upstream-ca', mockCaPem,
    '--resolve', `${LLM_HOST}:${mockPort}:127.0.0.1`,
    '--addons-config', path.join(REPO_DIR, 'addons-config'),
    ...extraResolve.flatMap((r) => ['--resolve', r]),
  ];
  const child = spawn(LLMTAP_BIN, args, {
    cwd: REPO_DIR,
    env: cleanEnv({ LLMTAP_LOG: process.env.LLMTAP_LOG || 'llmtap=debug,hudsucker=warn,warn' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = { child, port, caDir, stdout: '', stderr: '', exited: null };
  child.stdout.setEncoding('utf8').on('data', (d) => { proc.stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { proc.stderr += d; });
  child.on('exit', (code, signal) => { proc.exited = { code, signal }; });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.exited) break;
    if (await getStatus(`http://127.0.0.1:${port}/healthz`, 1000) === 200) {
      proc.caPem = path.join(caDir, 'ca.pem');
      if (fs.existsSync(proc.caPem)) return proc;
    }
    await sleep(100);
  }
  await stopLlmtap(proc);
  throw new Error(`llmtap did not become healthy on 127.0.0.1:${port} (exit: ${JSON.stringify(proc.exited)})\nstderr:\n${proc.stderr.slice(-4000)}`);
}

async function stopLlmtap(proc) {
  if (!proc || proc.exited) return;
  proc.child.kill('SIGTERM');
  const deadline = Date.now() + 15_000;
  while (!proc.exited && Date.now() < deadline) await sleep(50);
  if (!proc.exited) proc.child.kill('SIGKILL');
  while (!proc.exited) await sleep(20);
}

/** llmtap's stdout lines that parse as JSON and mention `marker` (a unique string in the request URL). */
function recordsMentioning(proc, marker) {
  const found = [];
  for (const line of proc.stdout.split('\n')) {
    const text = line.trim();
    if (!text.startsWith('{') || !text.includes(marker)) continue;
    try { found.push(JSON.parse(text)); } catch { /* a partial line: the next poll sees it whole */ }
  }
  return found;
}

async function waitForRecord(proc, marker, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = recordsMentioning(proc, marker);
    if (found.length > 0) return found;
    if (Date.now() > deadline) {
      throw new Error(`no llmtap record mentions ${marker} within ${timeoutMs} ms\nstdout tail:\n${proc.stdout.slice(-3000)}\nstderr tail:\n${proc.stderr.slice(-3000)}`);
    }
    await sleep(50);
  }
}

/**
 * Runs test/fixtures/client.cjs in a child node with the bootstrap preloaded (unless bootstrap: false).
 * The environment is built from scratch: the machine presets NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, … .
 */
function runClient({ mode, url, env, bootstrap = true, timeoutMs = 20_000 }) {
  const args = bootstrap ? ['--require', BOOTSTRAP, CLIENT_SCRIPT, mode, url] : [CLIENT_SCRIPT, mode, url];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let result = null;
      const last = stdout.trim().split('\n').pop();
      try { result = JSON.parse(last); } catch { /* reported below */ }
      resolve({ code, signal, stdout, stderr, result });
    });
  });
}

function marker(label) {
  return `${label}-${crypto.randomBytes(6).toString('hex')}`;
}

module.exports = {
  BOOTSTRAP,
  DIRECT_HOST,
  LLM_HOST,
  LLMTAP_BIN,
  makeMockCerts,
  marker,
  recordsMentioning,
  runClient,
  sleep,
  startLlmtap,
  startMock,
  stopLlmtap,
  tempDir,
  waitForRecord,
};
