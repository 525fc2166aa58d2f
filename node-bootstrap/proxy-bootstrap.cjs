'use strict';
// llmtap proxy bootstrap: load it first with `node --require /opt/llmtap/proxy-bootstrap.cjs app.js`.
// One self-contained file: it uses only Node's own modules (no npm install, nothing next to it).
//
// With HTTPS_PROXY / HTTP_PROXY (or their lower-case forms) set, it sends
//   - fetch() (and undici's WebSocket/EventSource built into Node) through the proxy: it takes the Agent
//     class of Node's built-in fetch from Node's own global dispatcher and installs an Agent whose
//     `connect` opens a CONNECT tunnel for https:// origins (TLS then runs end to end, inside the
//     tunnel); http:// origins are sent to the proxy in absolute form; NO_PROXY hosts go direct;
//   - node:https (https.globalAgent, every https.Agent, and agent-less callers such as `ws`) through a
//     CONNECT tunnel, so TLS runs end to end between the client and the proxy's leaf certificate;
//   - node:http (http.globalAgent and agent-less callers) as absolute-form requests to the proxy;
// and honours NO_PROXY with the same rules as undici (exact host or any subdomain, optional :port,
// leading "." or "*." ignored, "*" = never proxy). Without any proxy variable it does nothing.
//
// On Node >= 22.21 / >= 24.5 started with NODE_USE_ENV_PROXY=1 (or --use-env-proxy), Node itself proxies
// fetch() and the global agents; this file then only routes agent-less callers (ws) to the global agent.
//
// It never stops the process it is loaded into: a proxy variable it cannot use, or a Node whose fetch()
// internals are not where this file looks for them, gets one "llmtap proxy-bootstrap: ..." warning on
// stderr and the process carries on (without the proxy for what the warning names).
//
// Clients still have to trust llmtap's CA: NODE_EXTRA_CA_CERTS=/path/to/ca.pem (read once at start-up).
// A client that does not trust it fails with a TLS error; when the proxy cannot be reached or refuses,
// the request fails; it never falls back to a direct connection.

const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');

const STATE = Symbol.for('llmtap.proxyBootstrap');
// Where undici (Node's fetch() is undici bundled into Node) keeps the dispatcher that fetch() uses.
const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
const CONNECT_TIMEOUT_MS = 30_000;
const MAX_CONNECT_RESPONSE_HEAD = 16 * 1024;

/** Proxy settings from the environment, with undici's precedence (lower-case first). */
function readProxyEnv(env = process.env) {
  const httpProxy = normaliseProxyUrl(env.http_proxy ?? env.HTTP_PROXY ?? '');
  const httpsProxy = normaliseProxyUrl(env.https_proxy ?? env.HTTPS_PROXY ?? '') || httpProxy;
  const noProxy = env.no_proxy ?? env.NO_PROXY ?? '';
  return { httpProxy, httpsProxy, noProxy, noProxyEntries: parseNoProxy(noProxy) };
}

/** "llmtap:8080" -> "http://llmtap:8080"; rejects schemes this file cannot speak, loudly. */
function normaliseProxyUrl(value) {
  const raw = String(value).trim();
  if (!raw) return '';
  const withScheme = raw.includes('://') ? raw : `http://${raw}`;
  let url;
  try {
    url = new URL(withScheme);
  } catch {
    // Credentials (user:token@) stay out of the message: it goes to the agent's stderr.
    const shown = withScheme.replace(/:\/\/[^/@]*@/, '://***@');
    throw new Error(`llmtap proxy-bootstrap: proxy URL ${JSON.stringify(shown)} is not a valid URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`llmtap proxy-bootstrap: proxy scheme ${url.protocol} is not supported (use http:// or https://)`);
  }
  return url.href;
}

/** NO_PROXY -> [{ hostname, port }], as undici's EnvHttpProxyAgent parses it. */
function parseNoProxy(value) {
  const entries = [];
  for (const entry of String(value).split(/[,\s]/)) {
    if (!entry) continue;
    if (entry === '*') return [{ hostname: '*', port: 0 }];
    let hostname = entry;
    let port = 0;
    const withPort = entry.match(/^(.+):(\d+)$/);
    // A bare IPv6 address ("::1") has colons but no port: only "[::1]:443" carries one.
    if (withPort && !(net.isIPv6(entry) && !entry.startsWith('['))) {
      hostname = withPort[1];
      port = Number.parseInt(withPort[2], 10);
    }
    hostname = hostname.replace(/^\*?\./, '').toLowerCase();
    if (net.isIPv6(hostname)) hostname = `[${hostname}]`;
    entries.push({ hostname, port });
  }
  return entries;
}

/** Host as undici compares it: lower case, IPv6 in brackets. */
function canonicalHost(host) {
  const bare = String(host).replace(/^\[|\]$/g, '').toLowerCase();
  return net.isIPv6(bare) ? `[${bare}]` : bare;
}

/** True when a request to host:port should go through the proxy. */
function shouldProxy(entries, host, port) {
  const hostname = canonicalHost(host);
  for (const entry of entries) {
    if (entry.hostname === '*') return false;
    if (entry.port && entry.port !== port) continue;
    if (hostname === entry.hostname) return false;
    if (hostname.endsWith(`.${entry.hostname}`)) return false;
  }
  return true;
}

function proxyAuthorization(proxyUrl) {
  if (!proxyUrl.username && !proxyUrl.password) return null;
  const user = decodeURIComponent(proxyUrl.username);
  const pass = decodeURIComponent(proxyUrl.password);
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

/** The proxy URL without credentials, for error messages. */
function safeProxyName(proxyUrl) {
  return `${proxyUrl.protocol}//${proxyUrl.host}`;
}

function authorityOf(host, port) {
  const bare = String(host).replace(/^\[|\]$/g, '');
  return net.isIPv6(bare) ? `[${bare}]:${port}` : `${bare}:${port}`;
}

/** Connects to the proxy itself (TCP, or TLS for an https:// proxy). */
function connectToProxy(proxyUrl) {
  const host = proxyUrl.hostname.replace(/^\[|\]$/g, '');
  const secure = proxyUrl.protocol === 'https:';
  const port = Number(proxyUrl.port) || (secure ? 443 : 80);
  if (!secure) return { socket: net.connect({ host, port }), readyEvent: 'connect' };
  const servername = net.isIP(host) ? undefined : host;
  const socket = tls.connect({ host, port, servername, ALPNProtocols: ['http/1.1'] });
  return { socket, readyEvent: 'secureConnect' };
}

/**
 * Opens a CONNECT tunnel to host:port through the proxy. Resolves with the raw socket once the
 * proxy answered 200; rejects with the proxy's status line (and the start of its body) otherwise.
 */
function openTunnel(proxyHref, host, port, timeoutMs = CONNECT_TIMEOUT_MS) {
  const proxyUrl = new URL(proxyHref);
  const authority = authorityOf(host, port);
  const auth = proxyAuthorization(proxyUrl);
  return new Promise((resolve, reject) => {
    const { socket, readyEvent } = connectToProxy(proxyUrl);
    let head = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => {
      fail(new Error(`llmtap proxy-bootstrap: no answer from proxy ${safeProxyName(proxyUrl)} to CONNECT ${authority} within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onError);
      socket.removeListener('end', onEnd);
      socket.removeListener(readyEvent, onReady);
    };
    const fail = (err) => {
      if (settled) return;
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onError = (err) => {
      err.message = `llmtap proxy-bootstrap: proxy ${safeProxyName(proxyUrl)} for ${authority}: ${err.message}`;
      fail(err);
    };
    const onEnd = () => fail(new Error(`llmtap proxy-bootstrap: proxy ${safeProxyName(proxyUrl)} closed the connection before answering CONNECT ${authority}`));
    const onReady = () => {
      const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
      if (auth) lines.push(`Proxy-Authorization: ${auth}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    };
    const onReadable = () => {
      let chunk;
      while ((chunk = socket.read()) !== null) head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) {
        if (head.length > MAX_CONNECT_RESPONSE_HEAD) fail(new Error('llmtap proxy-bootstrap: proxy CONNECT answer too long'));
        return;
      }
      const statusLine = head.subarray(0, end).toString('latin1').split('\r\n')[0];
      const status = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(statusLine);
      if (!status || status[1] !== '200') {
        const body = head.subarray(end + 4, end + 4 + 300).toString('utf8').trim();
        const err = new Error(`llmtap proxy-bootstrap: proxy ${safeProxyName(proxyUrl)} refused CONNECT ${authority}: ${statusLine}${body ? ` (${body})` : ''}`);
        err.code = 'ERR_PROXY_CONNECT';
        err.statusCode = status ? Number(status[1]) : undefined;
        fail(err);
        return;
      }
      const rest = head.subarray(end + 4);
      cleanup();
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.once(readyEvent, onReady);
    socket.on('readable', onReadable);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
}

/** Target host and port from the options node:http hands an agent. */
function targetOf(options, defaultPort) {
  const host = options.host || options.hostname || 'localhost';
  const port = Number(options.port) || defaultPort;
  return { host, port };
}

/**
 * Wraps https.Agent.prototype.createConnection: every https.Agent (the global one, ones made by
 * libraries, agentkeepalive's HttpsAgent) opens a CONNECT tunnel first and runs its TLS inside it.
 */
function patchHttpsAgents(config) {
  const original = https.Agent.prototype.createConnection;
  https.Agent.prototype.createConnection = function llmtapCreateConnection(options, callback) {
    if (typeof callback !== 'function' || !options || options.socket || options.socketPath) {
      return original.apply(this, arguments);
    }
    const { host, port } = targetOf(options, 443);
    if (!shouldProxy(config.noProxyEntries, host, port)) return original.apply(this, arguments);
    openTunnel(config.httpsProxy, host, port).then(
      (socket) => {
        let tlsSocket;
        try {
          tlsSocket = original.call(this, { ...options, socket });
        } catch (err) {
          socket.destroy();
          callback(err);
          return;
        }
        callback(null, tlsSocket);
      },
      (err) => callback(err),
    );
    return undefined;
  };
}

/** Rewrites an already serialised request line to the absolute-form target. */
function rewriteStoredRequestLine(req, oldPath) {
  const oldLine = `${req.method} ${oldPath} HTTP/1.1\r\n`;
  const newLine = `${req.method} ${req.path} HTTP/1.1\r\n`;
  if (typeof req._header === 'string' && req._header.startsWith(oldLine)) {
    req._header = newLine + req._header.slice(oldLine.length);
  }
  const first = req.outputData && req.outputData[0];
  if (first && typeof first.data === 'string' && first.data.startsWith(oldLine)) {
    first.data = newLine + first.data.slice(oldLine.length);
  }
}

/** http.Agent that sends plain-HTTP requests to the proxy in absolute form, unless NO_PROXY says not to. */
class EnvProxyHttpAgent extends http.Agent {
  constructor(config, options) {
    super(options);
    this.llmtapConfig = config;
    this.llmtapProxy = new URL(config.httpProxy);
  }

  addRequest(req, options) {
    const { host, port } = targetOf(options, 80);
    const isAbsolute = /^[a-z][a-z0-9+.-]*:\/\//i.test(req.path || '');
    if (options.socketPath || isAbsolute || !shouldProxy(this.llmtapConfig.noProxyEntries, host, port)) {
      return super.addRequest(req, options);
    }
    const proxy = this.llmtapProxy;
    const oldPath = req.path;
    req.path = `http://${authorityOf(host, port).replace(/:80$/, '')}${oldPath}`;
    const auth = proxyAuthorization(proxy);
    if (auth && !req.headersSent) req.setHeader('Proxy-Authorization', auth);
    if (req._header) rewriteStoredRequestLine(req, oldPath);
    const secure = proxy.protocol === 'https:';
    const proxyHost = proxy.hostname.replace(/^\[|\]$/g, '');
    return super.addRequest(req, {
      ...options,
      host: proxyHost,
      hostname: proxyHost,
      port: Number(proxy.port) || (secure ? 443 : 80),
      servername: net.isIP(proxyHost) ? undefined : proxyHost,
      llmtapProxyTls: secure,
    });
  }

  createConnection(options, callback) {
    if (options.llmtapProxyTls) return tls.connect(options, callback);
    return net.createConnection(options, callback);
  }
}

/** Splits the (url, options, callback) forms of http.request into a target and a mutable copy of options. */
function requestParts(args, defaultProtocol) {
  const [first, second] = args;
  if (typeof first === 'string' || first instanceof URL) {
    const url = typeof first === 'string' ? new URL(first) : first;
    const options = second && typeof second === 'object' ? second : null;
    return { url, options, optionsIndex: options ? 1 : -1 };
  }
  if (first && typeof first === 'object') {
    const protocol = first.protocol || defaultProtocol;
    const host = first.hostname || first.host || 'localhost';
    const url = { protocol, hostname: host, port: first.port };
    return { url, options: first, optionsIndex: 0 };
  }
  return { url: null, options: null, optionsIndex: -1 };
}

/**
 * Wraps request/get of node:http or node:https: a caller that passes no agent but its own
 * createConnection (ws does this) would bypass every agent; it gets the module's global agent instead.
 */
function patchRequestFunctions(mod, defaultPort, defaultProtocol, config) {
  const original = mod.request;
  mod.request = function llmtapRequest(...args) {
    const { url, options, optionsIndex } = requestParts(args, defaultProtocol);
    const needsAgent = url && options
      && options.agent === undefined
      && typeof options.createConnection === 'function'
      && !options.socketPath;
    if (needsAgent) {
      const host = options.hostname || options.host || url.hostname;
      const port = Number(options.port || url.port) || defaultPort;
      if (shouldProxy(config.noProxyEntries, host, port)) {
        const copy = { ...options, agent: mod.globalAgent };
        delete copy.createConnection;
        args[optionsIndex] = copy;
      }
    }
    return original.apply(this, args);
  };
  mod.get = function llmtapGet(...args) {
    const req = mod.request(...args);
    req.end();
    return req;
  };
}

/** Does this Node proxy fetch() and the global agents itself (NODE_USE_ENV_PROXY)? */
function builtinEnvProxyActive(env = process.env) {
  const [major, minor] = process.versions.node.split('.').map(Number);
  const supported = (major === 22 && minor >= 21) || (major === 24 && minor >= 5) || major >= 25;
  const nodeOptions = String(env.NODE_OPTIONS || '').split(/\s+/);
  const enabled = env.NODE_USE_ENV_PROXY === '1' || process.execArgv.includes('--use-env-proxy') || nodeOptions.includes('--use-env-proxy');
  return supported && enabled;
}

/** One line on stderr, for a piece this file needs and cannot find or use; the process carries on. */
function warn(message) {
  try {
    process.stderr.write(`llmtap proxy-bootstrap: ${message}\n`);
  } catch {
    // No usable stderr: nothing else to tell anyone with.
  }
}

/**
 * Node's fetch() loads its undici lazily; the load installs the default dispatcher (an undici Agent)
 * under GLOBAL_DISPATCHER. Touching the lazy `Headers` global loads that same module without sending
 * anything. Returns the dispatcher fetch() will use, or undefined.
 */
function builtinFetchDispatcher() {
  if (globalThis[GLOBAL_DISPATCHER] === undefined) {
    try {
      void globalThis.Headers;
    } catch {
      // A getter that throws: reported below as a missing dispatcher.
    }
  }
  return globalThis[GLOBAL_DISPATCHER];
}

/** Adds `name: value` to undici dispatch headers (flat array, iterable of pairs, or object) unless present. */
function withHeaders(headers, extra) {
  let flat;
  if (headers == null) {
    flat = [];
  } else if (Array.isArray(headers)) {
    flat = headers.slice();
  } else if (typeof headers[Symbol.iterator] === 'function') {
    flat = [];
    for (const [name, value] of headers) flat.push(name, value);
  } else {
    flat = [];
    for (const [name, value] of Object.entries(headers)) flat.push(name, value);
  }
  const present = new Set();
  for (let i = 0; i < flat.length; i += 2) present.add(String(flat[i]).toLowerCase());
  for (const [name, value] of extra) if (!present.has(name)) flat.push(name, value);
  return flat;
}

/**
 * Dispatch options for a plain-http:// request sent to the proxy in absolute form
 * (`GET http://host:port/path HTTP/1.1`, Host: the target), as undici's own ProxyAgent does it.
 */
function absoluteFormOptions(opts, target, proxy) {
  const extra = [['host', target.host]];
  const auth = proxyAuthorization(proxy);
  if (auth) extra.push(['proxy-authorization', auth]);
  return {
    ...opts,
    origin: proxy.origin,
    path: `${target.origin}${opts.path || '/'}`,
    headers: withHeaders(opts.headers, extra),
  };
}

/**
 * undici `connect` function for https:// origins: CONNECT tunnel through the proxy, then TLS to the
 * target inside it (SNI = the target, verified against Node's CA store incl. NODE_EXTRA_CA_CERTS).
 */
function tunnelConnector(proxyHref) {
  return function llmtapConnect(opts, callback) {
    const host = String(opts.hostname || opts.host || '').replace(/^\[|\]$/g, '');
    const port = Number(opts.port) || 443;
    openTunnel(proxyHref, host, port).then(
      (raw) => {
        raw.setNoDelay(true);
        raw.setKeepAlive(true, 60_000);
        const servername = opts.servername || (net.isIP(host) ? undefined : host);
        let socket;
        try {
          socket = tls.connect({ socket: raw, servername, ALPNProtocols: ['http/1.1'] });
        } catch (err) {
          raw.destroy();
          callback(err);
          return;
        }
        const timer = setTimeout(() => {
          socket.destroy(new Error(`llmtap proxy-bootstrap: TLS handshake with ${authorityOf(host, port)} through the proxy took longer than ${CONNECT_TIMEOUT_MS} ms`));
        }, CONNECT_TIMEOUT_MS);
        const onError = (err) => {
          clearTimeout(timer);
          socket.destroy();
          callback(err);
        };
        socket.once('error', onError);
        socket.once('secureConnect', () => {
          clearTimeout(timer);
          socket.removeListener('error', onError);
          callback(null, socket);
        });
      },
      (err) => callback(err),
    );
  };
}

/**
 * The dispatcher fetch() gets: an Agent of Node's own undici whose connections to https:// origins
 * are CONNECT tunnels; plain http:// origins go to `direct` (Node's original Agent) rewritten to the
 * proxy in absolute form; NO_PROXY origins and anything else go to `direct` unchanged.
 */
function makeFetchDispatcher(Agent, direct, config) {
  const httpsProxy = config.httpsProxy ? new URL(config.httpsProxy) : null;
  const httpProxy = config.httpProxy ? new URL(config.httpProxy) : null;

  class LlmtapProxyDispatcher extends Agent {
    constructor() {
      super(httpsProxy ? { connect: tunnelConnector(httpsProxy.href) } : {});
    }

    dispatch(opts, handler) {
      let target = null;
      try {
        target = new URL(String(opts && opts.origin));
      } catch {
        // No usable origin: undici reports that itself, below.
      }
      if (target) {
        const secure = target.protocol === 'https:' || target.protocol === 'wss:';
        const port = Number(target.port) || (secure ? 443 : 80);
        const proxied = shouldProxy(config.noProxyEntries, target.hostname, port);
        if (secure && httpsProxy && proxied) return super.dispatch(opts, handler);
        if (target.protocol === 'http:' && httpProxy && proxied) {
          return direct.dispatch(absoluteFormOptions(opts, target, httpProxy), handler);
        }
      }
      return direct.dispatch(opts, handler);
    }

    close(callback) {
      const done = Promise.all([super.close(), direct.close()]).then(() => undefined);
      if (typeof callback !== 'function') return done;
      done.then(() => callback(null, null), (err) => callback(err, null));
      return undefined;
    }

    destroy(err, callback) {
      if (typeof err === 'function') {
        callback = err;
        err = null;
      }
      const done = Promise.all([super.destroy(err), direct.destroy(err)]).then(() => undefined);
      if (typeof callback !== 'function') return done;
      done.then(() => callback(null, null), (e) => callback(e, null));
      return undefined;
    }
  }
  return new LlmtapProxyDispatcher();
}

/**
 * Routes Node's built-in fetch() through the proxy. Returns what it did, for process[STATE].fetch;
 * anything it cannot find or use is one warning and fetch() is left as it was.
 */
function installFetchProxy(config) {
  const leftAlone = 'fetch() is NOT sent through the proxy (node:http/https are)';
  let current;
  try {
    if (typeof globalThis.fetch !== 'function') return 'no-fetch';
    current = builtinFetchDispatcher();
  } catch (err) {
    warn(`could not read the global fetch() dispatcher (${err && err.message}); ${leftAlone}`);
    return 'unavailable';
  }
  if (current === undefined || current === null) {
    warn(`this Node (${process.version}) has no global fetch() dispatcher under Symbol.for('undici.globalDispatcher.1'); ${leftAlone}`);
    return 'unavailable';
  }
  const Agent = current.constructor;
  const name = typeof Agent === 'function' ? Agent.name : typeof current;
  if (name === 'EnvHttpProxyAgent') return 'already-env-proxy';
  if (name !== 'Agent' || typeof Agent.prototype.dispatch !== 'function' || typeof current.dispatch !== 'function') {
    warn(`the global fetch() dispatcher is ${JSON.stringify(name)}, not undici's default Agent (set before this file ran?); ${leftAlone}`);
    return 'unavailable';
  }
  let dispatcher;
  try {
    dispatcher = makeFetchDispatcher(Agent, current, config);
  } catch (err) {
    warn(`could not build a proxying fetch() dispatcher from Node's Agent (${err && err.message}); ${leftAlone}`);
    return 'unavailable';
  }
  try {
    globalThis[GLOBAL_DISPATCHER] = dispatcher;
  } catch {
    // A read-only property in strict mode: checked just below.
  }
  if (globalThis[GLOBAL_DISPATCHER] !== dispatcher) {
    warn(`the global fetch() dispatcher cannot be replaced; ${leftAlone}`);
    return 'unavailable';
  }
  return 'proxied';
}

function install(env = process.env) {
  if (process[STATE]) return process[STATE];
  let config;
  try {
    config = readProxyEnv(env);
  } catch (err) {
    // A proxy variable this file cannot use: routing only some traffic would be worse than a clear
    // word, so nothing is installed and the agent starts as if no proxy were set.
    const reason = String(err && err.message).replace(/^llmtap proxy-bootstrap: /, '');
    warn(`${reason}; nothing is routed through a proxy, requests go direct`);
    process[STATE] = { installed: false, mode: 'bad-proxy-variable', error: reason };
    return process[STATE];
  }
  if (!config.httpProxy && !config.httpsProxy) {
    process[STATE] = { installed: false, mode: 'no-proxy-variables' };
    return process[STATE];
  }
  if (builtinEnvProxyActive(env)) {
    if (config.httpsProxy) patchRequestFunctions(https, 443, 'https:', config);
    if (config.httpProxy) patchRequestFunctions(http, 80, 'http:', config);
    process[STATE] = { installed: true, mode: 'node-builtin-env-proxy', httpsProxy: config.httpsProxy ? safeProxyName(new URL(config.httpsProxy)) : '' };
    return process[STATE];
  }
  const fetchMode = installFetchProxy(config);
  if (config.httpsProxy) {
    patchHttpsAgents(config);
    patchRequestFunctions(https, 443, 'https:', config);
  }
  if (config.httpProxy) {
    http.globalAgent = new EnvProxyHttpAgent(config, { keepAlive: true, scheduling: 'lifo', timeout: 5000 });
    patchRequestFunctions(http, 80, 'http:', config);
  }
  process[STATE] = {
    installed: true,
    mode: 'bootstrap',
    fetch: fetchMode,
    httpProxy: config.httpProxy ? safeProxyName(new URL(config.httpProxy)) : '',
    httpsProxy: config.httpsProxy ? safeProxyName(new URL(config.httpsProxy)) : '',
  };
  return process[STATE];
}

try {
  install();
} catch (err) {
  warn(`could not install the proxy routing (${err && err.stack ? err.stack : err}); the process carries on`);
}

module.exports = { install, readProxyEnv, parseNoProxy, shouldProxy, openTunnel, builtinEnvProxyActive };
