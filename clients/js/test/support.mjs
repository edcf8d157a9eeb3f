// Test support: a real redis-server and a real hub (target/debug/progress-hub, or
// $HUB_BIN) on free ports, a proxy that can refuse WebSocket upgrades, and a static file
// server that forwards the rest to the hub. Every process started here is killed when
// the test file ends.
import { after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { startProxy as proxy } from './proxy.mjs';
import { watchProjects } from '../dist/projects.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = path.resolve(PKG, '../..');
export const HUB_BIN = process.env.HUB_BIN || path.join(ROOT, 'target/debug/progress-hub');

const children = new Set();
const servers = new Set();
after(async () => {
  await Promise.all([...children].map((c) => stop(c, 'SIGKILL')));
  for (const s of servers) s.closeAllConnections?.(), s.close();
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** Starts a process; resolves once its output matches `ready`. */
function start(cmd, args, ready, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    let out = '';
    const timeout = setTimeout(() => reject(new Error(`${cmd} not ready in 20 s: ${out}`)), 20000);
    const onData = (chunk) => {
      out += chunk;
      const m = out.match(ready);
      if (m) {
        clearTimeout(timeout);
        child.stdout.off('data', onData);
        child.stderr.off('data', onData);
        child.stdout.resume();
        child.stderr.resume();
        resolve({ child, match: m });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    // 'close', not 'exit': the output is read to its end, so the error says why (a port taken).
    child.once('close', (code) => { clearTimeout(timeout); reject(new Error(`${cmd} exited (${code}) before ready: ${out}`)); });
  });
}

export function stop(child, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/**
 * A redis-server on a free port (`port`: the first one tried). Its own "Ready to accept
 * connections" says it is the one answering there; a port another process took between
 * choosing and binding ("Address already in use") is given up for another, 5 tries at most.
 */
export async function startRedis(port) {
  for (let tries = 1; ; tries++) {
    port ??= await freePort();
    try {
      const { child } = await start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
      return redisOn(port, child);
    } catch (e) {
      if (tries === 5 || !/Address already in use/.test(e.message)) throw e;
      port = undefined;
    }
  }
}

function redisOn(port, child) {
  return {
    child,
    url: `redis://127.0.0.1:${port}`,
    /** Sends one command (RESP) and resolves with the raw reply. */
    command: (...words) => new Promise((resolve, reject) => {
      const sock = connect(port, '127.0.0.1');
      sock.on('error', reject);
      sock.once('data', (d) => { sock.end(); resolve(d.toString()); });
      sock.write(`*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`);
    }),
  };
}

/**
 * A hub on a port of its own, which it binds (0) at its first start and keeps at restarts
 * (so it comes back at the same address): no port is chosen before the hub binds it.
 */
export async function startHub(args = [], { port = 0, env } = {}) {
  const hub = {
    port,
    get url() { return `http://127.0.0.1:${hub.port}`; },
    child: null,
    async start() {
      const argv = ['serve', '--listen', `127.0.0.1:${hub.port}`, ...args];
      const { child, match } = await start(HUB_BIN, argv, /listening on http:\/\/127\.0\.0\.1:(\d+)\D/, { HUB_LOG_FORMAT: 'text', ...env });
      hub.child = child;
      hub.port = Number(match[1]);
      return hub;
    },
    stop: (signal = 'SIGTERM') => stop(hub.child, signal),
    async restart(signal = 'SIGTERM') {
      await hub.stop(signal);
      return hub.start();
    },
  };
  return hub.start();
}

export async function startWorker(redisUrl, args = []) {
  return (await start(HUB_BIN, ['worker', '--redis-url', redisUrl, ...args], /worker started/)).child;
}

export async function mintToken(secret, project, ttl = '1h', publish = false) {
  const { stdout } = await promisify(execFile)(HUB_BIN, ['token', '--project', project, '--ttl', ttl, '--auth-secret', secret, ...(publish ? ['--publish'] : [])]);
  return stdout.trim();
}

async function post(url, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
  const json = await res.json().catch(() => null);
  if (res.status !== 202) throw new Error(`POST ${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export const generate = (hub, id, body = {}, token) => post(`${hub.url}/api/v1/projects/${id}/generate`, body, token);
export const publish = (hub, id, event, data) => post(`${hub.url}/api/v1/projects/${id}/events`, { event, data });

/** Resolves when `predicate()` holds, checked after each callback of `subscribe`. */
export function until(subscribe, predicate, ms = 30000, what = 'condition') {
  return new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    subscribe(() => { if (predicate()) { clearTimeout(t); resolve(); } });
  });
}

/** Collects a watcher's callbacks, so tests can await a state or connection. */
export function recorder() {
  const listeners = new Set();
  const r = {
    frames: [],
    connections: [],
    onEvent: (f) => { r.frames.push(f); listeners.forEach((l) => l()); },
    onConnection: (c) => { r.connections.push(c); listeners.forEach((l) => l()); },
    onState: () => listeners.forEach((l) => l()),
    subscribe: (l) => listeners.add(l),
  };
  return r;
}

/** A proxy to `target` (see proxy.mjs), closed when the test file ends. */
export async function startProxy(target, options) {
  const p = await proxy(target, options);
  servers.add(p.server);
  return p;
}

export const readText = (p) => readFile(p, 'utf8');

/** A mock run's log (15 images) in a watcher's state: every line once, no id twice. */
export function assertEveryLogOnce(state, what) {
  const ids = state.logs.map((l) => l.id);
  assert.equal(new Set(ids).size, ids.length, `${what}: no id twice`);
  for (let n = 1; n <= 15; n++) {
    assert.equal(state.logs.filter((l) => l.message.startsWith(`[${n}/15] `)).length, 1, `${what}: image ${n} logged exactly once`);
  }
}

/** Every watchProjects made by `watchingProjects` is closed when its test ends, passed or
 * not (a watch left open reconnects forever, and the file never ends). */
const watches = new Set();
afterEach(() => { watches.forEach((w) => w.close()); watches.clear(); });

/** A watchProjects with its frames, and `when(predicate, what, ms)`: resolves when
 * `predicate()` holds, checked on each change of the watch (a timeout says its state). */
export function watchingProjects(url, options) {
  const listeners = new Set();
  const frames = [];
  const w = watchProjects(url, {
    ...options,
    onChange: () => listeners.forEach((l) => l()),
    onConnection: () => listeners.forEach((l) => l()),
    onEvent: (f) => { frames.push(f); listeners.forEach((l) => l()); },
  });
  watches.add(w);
  const seen = () => JSON.stringify({ connection: w.connection, errors: [...w.errors], states: [...w.states].map(([id, s]) => [id, s.status, s.progress]) });
  const when = (predicate, what, ms = 30000) => until((l) => listeners.add(l), predicate, ms, what)
    .catch((e) => { throw new Error(`${e.message}: ${seen()}`); });
  return { w, listeners, frames, when };
}
