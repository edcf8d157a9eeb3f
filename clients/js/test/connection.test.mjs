// The connection shell alone (src/connection.ts), which both watchers run (watch.ts for
// one project, projects.ts for many): its own decisions without a hub — which link it
// dials and how, a `ping` answered, the idle timer, news of a link let go of ignored, the
// reconnect delay, the in-band token refresh (WebSocket only), the refusal probe, the
// stop. A fake WebSocket, a fake fetch and mocked timers stand in for the network and
// the clock; the host is a stub that records what it is fed (the machines' decisions
// are tested in machine.test.mjs and many.test.mjs).
import { test, mock, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { importSource } from './source.mjs';

const { connect, ProgressHubError } = await importSource('src/connection.ts');

const T0 = Date.parse('2026-12-06T10:00:00Z');
afterEach(() => mock.timers.reset());

class FakeWebSocket {
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    this.closed = false;
    FakeWebSocket.made.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.closed = true; }
  say(frame) { this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) }); }
  end(code) { this.onclose?.({ code }); }
}
const lastSocket = () => FakeWebSocket.made.at(-1);

/** A stub watcher: its machine's connection (`m`), and what the shell fed it. */
function stubHost(link = {}) {
  const host = {
    m: { phase: 'connecting', transport: 'websocket', attempt: 0, failure: null, ...link },
    fed: [],
    position: () => host.at,
    link: () => host.m,
    feed: (input) => host.fed.push(input),
    url: (kind, token) => `http://hub/${kind}${token ? `?token=${token}` : ''}`,
  };
  return host;
}
const jwt = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.s`;
const connectedData = (heartbeat = 2) => ({ timestamp: new Date(Date.now()).toISOString(), heartbeat_interval: heartbeat });
const ticks = () => new Promise((r) => setImmediate(r));

test('dial: a WebSocket on the ws URL with the token; a ping is answered with pong; frames are fed in, pong and non-frames are not', () => {
  const host = stubHost();
  const connections = [];
  const shell = connect(host, { WebSocket: FakeWebSocket, token: 't1', onConnection: (c) => connections.push(c) });
  shell.run({ do: 'dial' });
  const ws = lastSocket();
  assert.equal(ws.url, 'ws://hub/websocket?token=t1');
  assert.deepEqual(connections, [{ status: 'connecting', attempt: 0, transport: 'websocket' }]);
  ws.say({ event: 'ping', data: {} });
  assert.deepEqual(ws.sent, [{ event: 'pong' }]);
  ws.say({ event: 'pong' });
  ws.say('not json');
  ws.say('[1]');
  ws.say({ event: 'log', id: 'e:1', data: { message: 'x' } });
  assert.deepEqual(host.fed, [{ on: 'frame', frame: { event: 'log', id: 'e:1', data: { message: 'x' } } }]);
  ws.end(1012);
  assert.deepEqual(host.fed.at(-1), { on: 'ended', code: 1012 });
});

test('a link let go of says nothing: after the next dial, its frames and its end are ignored', () => {
  const host = stubHost();
  const shell = connect(host, { WebSocket: FakeWebSocket });
  shell.run({ do: 'dial' });
  const old = lastSocket();
  shell.run({ do: 'dial' });
  assert.equal(old.closed, true, 'the old link is closed');
  old.say({ event: 'log', data: {} });
  old.end(1006);
  assert.deepEqual(host.fed, []);
  lastSocket().say({ event: 'log', data: {} });
  assert.equal(host.fed.length, 1);
});

test('the idle timer: 2.5 heartbeats without a frame feed `idle` (a dead link the OS has not noticed); each frame restarts it', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const host = stubHost();
  const shell = connect(host, { WebSocket: FakeWebSocket });
  shell.run({ do: 'dial' });
  shell.run({ do: 'opened', data: connectedData(2) });
  assert.equal(shell.connection.status, 'open');
  const ws = lastSocket();
  ws.say({ event: 'ping', data: {} });
  mock.timers.tick(4999);
  ws.say({ event: 'ping', data: {} });
  mock.timers.tick(4999);
  assert.deepEqual(host.fed, [], 'each frame restarted it');
  mock.timers.tick(1);
  assert.deepEqual(host.fed, [{ on: 'idle' }]);
});

test('wait: the link is dropped, `reconnecting` with a delay drawn from [min, max], then an attempt that says whether the token expired', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const host = stubHost();
  const expiring = jwt({ iat: T0 / 1000 - 10, exp: T0 / 1000 + 1 });
  const shell = connect(host, { WebSocket: FakeWebSocket, token: expiring, getToken: async () => 'x' });
  shell.run({ do: 'dial' });
  const ws = lastSocket();
  host.m = { ...host.m, phase: 'waiting', attempt: 3 };
  shell.run({ do: 'wait', minMs: 400, maxMs: 800 });
  assert.equal(ws.closed, true);
  const { status, attempt, retryInMs } = shell.connection;
  assert.deepEqual([status, attempt], ['reconnecting', 3]);
  assert.ok(retryInMs >= 400 && retryInMs <= 800, String(retryInMs));
  mock.timers.tick(retryInMs + 1000);
  assert.deepEqual(host.fed, [{ on: 'attempt', expired: true }], 'past exp: renew before dialing');
});

test('refresh: before a WebSocket token expires, the next one is sent in-band; never on SSE, nor with refreshInBand false', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const now = T0 / 1000;
  const first = jwt({ iat: now, exp: now + 100 });
  const next = jwt({ iat: now, exp: now + 3600 });
  let asked = 0;
  const getToken = async () => { asked++; return next; };
  const host = stubHost();
  const shell = connect(host, { WebSocket: FakeWebSocket, token: first, getToken });
  shell.run({ do: 'dial' });
  shell.run({ do: 'opened', data: connectedData(0) });
  mock.timers.tick(79_999);
  assert.equal(asked, 0);
  mock.timers.tick(1);
  await ticks();
  assert.equal(asked, 1, 'at 80% of its life');
  assert.deepEqual(lastSocket().sent, [{ event: 'refresh', data: { token: next } }]);
  assert.equal(shell.token, next, 'the next dial uses it');
  for (const [what, h, options] of [['SSE', stubHost({ transport: 'sse' }), {}], ['refreshInBand false', stubHost(), { refreshInBand: false }]]) {
    asked = 0;
    const s = connect(h, { WebSocket: FakeWebSocket, token: first, getToken, ...options });
    globalThis.fetch = async () => new Response(new ReadableStream({ start() {} }), { status: 200 });
    s.run({ do: 'dial' });
    s.run({ do: 'opened', data: connectedData(0) });
    mock.timers.tick(200_000);
    await ticks();
    assert.equal(asked, 0, what);
    s.stop();
  }
});

test('SSE: fetch with Accept and the Last-Event-ID the host gives; records fed in; a refusal is its HTTP status and the JSON error code', async () => {
  const calls = [];
  const realFetch = globalThis.fetch;
  let answer;
  globalThis.fetch = async (url, init) => { calls.push([url, init.headers]); return answer(); };
  try {
    const host = stubHost({ transport: 'sse' });
    host.at = 'm1.7a8f5e87.1:3,,1:9';
    const shell = connect(host, { token: 't' });
    answer = () => new Response('data: {"event":"connected","data":{}}\n\ndata: {"event":"ping","data":{}}\n\n', { status: 200 });
    shell.run({ do: 'dial' });
    await ticks();
    await ticks();
    assert.deepEqual(calls[0], ['http://hub/sse?token=t', { accept: 'text/event-stream', 'last-event-id': 'm1.7a8f5e87.1:3,,1:9' }]);
    assert.deepEqual(host.fed, [{ on: 'frame', frame: { event: 'connected', data: {} } }, { on: 'ended', code: undefined }]);
    host.fed.length = 0;
    host.at = undefined;
    answer = () => new Response(JSON.stringify({ error: { code: 'INVALID_EVENT_ID', message: 'no' } }), { status: 400 });
    shell.run({ do: 'dial' });
    await ticks();
    await ticks();
    assert.deepEqual(calls[1][1], { accept: 'text/event-stream' }, 'no position: no header');
    assert.deepEqual(host.fed, [{ on: 'refused', status: 400, code: 'INVALID_EVENT_ID', message: 'no' }]);
  } finally {
    globalThis.fetch = realFetch;
  }
});

test('probe: a refused WebSocket is asked over plain HTTP why (its code), or found unreachable; stop drops the link and side requests and gives the failure', async () => {
  const realFetch = globalThis.fetch;
  const aborted = [];
  let answer;
  globalThis.fetch = (url, init) => { init.signal.addEventListener('abort', () => aborted.push(url)); return answer(url); };
  try {
    const host = stubHost();
    const shell = connect(host, { WebSocket: FakeWebSocket, token: 'tk' });
    answer = async (url) => { assert.equal(url, 'http://hub/probe?token=tk'); return new Response(JSON.stringify({ error: { code: 'UPGRADE_REQUIRED', message: 'ws' } }), { status: 400 }); };
    shell.run({ do: 'probe' });
    await ticks();
    assert.deepEqual(host.fed, [{ on: 'refused', status: 400, code: 'UPGRADE_REQUIRED', message: 'ws' }]);
    answer = async () => { throw new TypeError('fetch failed'); };
    shell.run({ do: 'probe' });
    await ticks();
    assert.deepEqual(host.fed.at(-1), { on: 'unreachable' });
    // A probe still out when the watch stops is aborted, and its answer ignored.
    host.fed.length = 0;
    answer = () => new Promise(() => {});
    shell.run({ do: 'dial' });
    shell.run({ do: 'probe' });
    host.m = { ...host.m, phase: 'stopped', failure: { code: 'FORBIDDEN', message: 'not yours', status: 403 } };
    const err = shell.stop();
    assert.ok(err instanceof ProgressHubError);
    assert.deepEqual([err.code, err.message, err.status], ['FORBIDDEN', 'not yours', 403]);
    assert.equal(lastSocket().closed, true);
    assert.deepEqual(aborted, ['http://hub/probe?token=tk']);
    assert.equal(shell.connection.status, 'closed');
    lastSocket().say({ event: 'log', data: {} });
    assert.deepEqual(host.fed, []);
  } finally {
    globalThis.fetch = realFetch;
  }
});

test('hangUp: nothing to dial for now (SSE naming nothing): the link is let go of, the status is connecting', () => {
  const host = stubHost();
  const shell = connect(host, { WebSocket: FakeWebSocket });
  shell.run({ do: 'dial' });
  shell.run({ do: 'opened', data: connectedData(0) });
  shell.hangUp();
  assert.equal(lastSocket().closed, true);
  assert.equal(shell.connection.status, 'connecting');
  lastSocket().end(1006);
  assert.deepEqual(host.fed, []);
});
