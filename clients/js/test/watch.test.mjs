// watchProject against a real hub (and a real redis-server where history must outlive
// the hub): a whole run, restarts (SIGTERM and SIGKILL) mid-run, a lost history, tokens,
// refusals, SSE and the fallback to it. No mocked server, no fixed ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { watchProject, ProgressHubError } from '../dist/index.js';
import {
  startHub, startRedis, startWorker, startProxy, mintToken, generate, publish, until, recorder, stop,
} from './support.mjs';

const FAST = ['--mock-delay', '20ms', '--retry-backoff', '20ms'];
const BACKOFF = { initialMs: 100, maxMs: 1000 };

/** Every image line of a run exactly once, and no log id twice. */
function assertEveryLogOnce(logs, what = 'log') {
  const ids = logs.map((l) => l.id);
  assert.equal(new Set(ids).size, ids.length, `${what}: no id twice`);
  for (let n = 1; n <= 15; n++) {
    assert.equal(logs.filter((l) => l.message.startsWith(`[${n}/15] `)).length, 1, `${what}: image ${n} logged exactly once`);
  }
}

function assertFinished(state) {
  assert.equal(state.status, 'COMPLETED');
  assert.equal(state.progress, 100);
  assert.match(state.youtubeUrl, /^https:\/\/youtube\.com\/watch\?v=/);
  for (const [stage, info] of Object.entries(state.stages)) assert.equal(info.outcome, 'done', stage);
}

/** A late watcher backfills the whole history: the reference the live watchers match. */
async function historyOf(hub, id) {
  const w = watchProject(hub.url, id, { WebSocket });
  await w.done;
  return w.state.logs;
}

test('a full generate run: done resolves COMPLETED with the link, every log once, frames in order', async () => {
  const hub = await startHub(FAST);
  const id = `full-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, ...rec });
  const iterated = [];
  const iterating = (async () => { for await (const f of w) iterated.push(f); })();
  // The global WebSocket (Node ≥ 22, or Node 20 with --experimental-websocket) as well.
  const g = globalThis.WebSocket ? watchProject(hub.url, id, {}) : null;
  await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
  await generate(hub, id, { topic: 't' });
  const result = await w.done;
  assert.equal(result.status, 'COMPLETED');
  assert.match(result.youtubeUrl, /^https:\/\/youtube\.com\/watch\?v=/);
  assertFinished(w.state);
  assertEveryLogOnce(w.state.logs);
  const stage = w.state.stages.SCRIPT_GENERATING;
  assert.ok(stage.startedAt && stage.endedAt && stage.durationMs >= 0, JSON.stringify(stage));
  assert.equal(w.state.recovered, true);
  assert.equal(w.state.lastEventId, rec.frames.at(-1).id);
  // Closed after complete (no stayOpen); the iterator ends and saw what onEvent saw.
  await iterating;
  assert.equal(w.connection.status, 'closed');
  assert.deepEqual(iterated, rec.frames);
  assert.ok(!rec.frames.some((f) => f.event === 'ping' || f.event === 'pong'));
  if (g) {
    assert.equal((await g.done).status, 'COMPLETED');
    assert.deepEqual(g.state.logs, w.state.logs, 'the global WebSocket sees the same run');
  }
  // Opened later: the whole history is read back (backfill), and done resolves at once.
  assert.deepEqual(await historyOf(hub, id), w.state.logs);
  await hub.stop();
});

test('hub killed (SIGTERM, then SIGKILL) and restarted mid-run: resume, every log once, state consistent', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '120ms']);
  const id = `restart-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, backoff: BACKOFF, ...rec });
  await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
  await generate(hub, id);
  const logged = (n) => () => w.state.logs.some((l) => l.message.startsWith(`[${n}/15] `));
  const reconnected = (k) => () => rec.connections.filter((c) => c.status === 'open').length >= k;

  await until(rec.subscribe, logged(3), 30000, 'image 3');
  await hub.stop('SIGTERM');
  await until(rec.subscribe, () => w.connection.status === 'reconnecting', 5000, 'reconnecting after SIGTERM');
  await hub.start();
  await until(rec.subscribe, reconnected(2), 15000, 'open again after SIGTERM');

  await until(rec.subscribe, logged(9), 30000, 'image 9');
  await hub.stop('SIGKILL');
  await until(rec.subscribe, () => w.connection.status === 'reconnecting', 5000, 'reconnecting after SIGKILL');
  await hub.start();
  await until(rec.subscribe, reconnected(3), 15000, 'open again after SIGKILL');

  assert.equal((await w.done).status, 'COMPLETED');
  assertFinished(w.state);
  assertEveryLogOnce(w.state.logs, 'restarted watcher');
  assert.equal(w.state.recovered, true);
  const connected = rec.frames.filter((f) => f.event === 'connected');
  assert.equal(connected.length, 3);
  assert.ok(connected.slice(1).every((f) => f.data.resumed && f.data.recovered), 'both reconnects resumed');
  assert.deepEqual(w.state.logs, await historyOf(hub, id), 'exactly the history, in order');
  await stop(worker);
  await hub.stop();
});

test('history lost (FLUSHALL while the hub is down): recovered false, state rebuilt from the snapshot', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const id = `lost-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, backoff: BACKOFF, ...rec });
  await publish(hub, id, 'stage_change', { previous_stage: null, current_stage: 'SCRIPT_GENERATING', progress: 5 });
  await publish(hub, id, 'log', { level: 'INFO', message: 'before the loss' });
  await publish(hub, id, 'progress_update', { status: 'RENDERING', progress: 60, current_stage: 'rendering', estimated_remaining: 30 });
  await until(rec.subscribe, () => w.state.progress === 60, 10000, 'progress 60');
  assert.equal(w.state.logs.length, 1);

  await hub.stop();
  assert.match(await redis.command('FLUSHALL'), /OK/);
  await hub.start();
  // A new history (a new epoch): the old position means nothing in it.
  await publish(hub, id, 'progress_update', { status: 'ASSETS_GENERATING', progress: 20, current_stage: 'assets again', estimated_remaining: 90 });
  await until(rec.subscribe, () => w.state.progress === 20, 15000, 'state rebuilt');
  assert.equal(w.state.recovered, false);
  assert.deepEqual(w.state.logs, [], 'lines of the lost history are not pretended');
  assert.equal(w.state.status, 'ASSETS_GENERATING');
  assert.equal(w.state.stages.RENDERING.outcome, 'pending');
  const snapshot = rec.frames.filter((f) => f.event === 'snapshot').at(-1);
  assert.equal(snapshot.data.recovered, false);
  await publish(hub, id, 'complete', { status: 'COMPLETED', youtube_url: 'https://youtube.com/watch?v=x' });
  assert.deepEqual(await w.done, { status: 'COMPLETED', youtubeUrl: 'https://youtube.com/watch?v=x' });
  assert.equal(w.state.recovered, false, 'still says the history was lost');
  await hub.stop();
});

test('tokens: refreshed in-band before expiry, renewed after 4401; a 403 or a bad id is an error, not a loop', async () => {
  const secret = 'test-secret';
  const hub = await startHub(['--auth-secret', secret, '--mock-delay', '200ms', '--heartbeat-interval', '1s']);
  const expiry = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).exp * 1000;
  const run = async (id, options) => {
    const rec = recorder();
    let calls = 0;
    const getToken = () => { calls++; return mintToken(secret, id, '3s'); };
    const token = await mintToken(secret, id, '3s');
    const w = watchProject(hub.url, id, { WebSocket, backoff: BACKOFF, token, getToken, ...options, ...rec });
    await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
    await generate(hub, id, {}, await mintToken(secret, id, '1h', true));
    assert.equal((await w.done).status, 'COMPLETED');
    assert.ok(Date.now() > expiry(token) + 1000, 'the run outlived its first token');
    assertEveryLogOnce(w.state.logs, id);
    return { rec, calls };
  };

  // In-band: a `refresh` frame before expiry keeps the one session.
  const inBand = await run(`tok-a-${Date.now()}`, {});
  assert.ok(inBand.calls >= 1, `getToken called ${inBand.calls} times`);
  assert.equal(inBand.rec.frames.filter((f) => f.event === 'connected').length, 1, 'one session, never closed');

  // Without in-band refresh: the hub closes with 4401, the client gets a token, resumes.
  const closed = await run(`tok-b-${Date.now()}`, { refreshInBand: false });
  assert.ok(closed.calls >= 1);
  assert.ok(closed.rec.frames.filter((f) => f.event === 'connected').length >= 2, 'reconnected after 4401');
  assert.ok(closed.rec.frames.filter((f) => f.event === 'connected').slice(1).every((f) => f.data.resumed && f.data.recovered));

  // A token for another project: 403, a typed error, one attempt.
  const rec = recorder();
  const other = watchProject(hub.url, 'not-mine', { WebSocket, backoff: BACKOFF, token: await mintToken(secret, 'mine'), ...rec });
  const err = await other.done.then(() => null, (e) => e);
  assert.ok(err instanceof ProgressHubError, String(err));
  assert.equal(err.code, 'FORBIDDEN');
  assert.equal(err.status, 403);
  assert.equal(rec.connections.filter((c) => c.status === 'connecting').length, 1, 'no retry loop');
  assert.equal(other.connection.status, 'closed');

  // No token at all, and no way to get one: 401.
  const anon = await watchProject(hub.url, 'x', { WebSocket, backoff: BACKOFF }).done.then(() => null, (e) => e);
  assert.equal(anon?.code, 'UNAUTHORIZED');
  // An id the hub refuses: 400 INVALID_PROJECT_ID, also over SSE.
  for (const transport of ['websocket', 'sse']) {
    const bad = await watchProject(hub.url, 'no spaces!', { WebSocket, transport }).done.then(() => null, (e) => e);
    assert.equal(bad?.code, 'INVALID_PROJECT_ID', transport);
    assert.equal(bad?.status, 400);
  }
  await hub.stop();
});

test('SSE transport: a whole run with a hub restart, resumed by Last-Event-ID', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '60ms']);
  const id = `sse-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(hub.url, id, { transport: 'sse', backoff: BACKOFF, ...rec });
  await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
  assert.equal(w.connection.transport, 'sse');
  await generate(hub, id);
  await until(rec.subscribe, () => w.state.logs.some((l) => l.message.startsWith('[5/15] ')), 30000, 'image 5');
  await hub.restart('SIGKILL');
  assert.equal((await w.done).status, 'COMPLETED');
  assertFinished(w.state);
  assertEveryLogOnce(w.state.logs, 'sse');
  const connected = rec.frames.filter((f) => f.event === 'connected');
  assert.equal(connected.length, 2);
  assert.ok(connected[1].data.resumed && connected[1].data.recovered);
  assert.deepEqual(w.state.logs, await historyOf(hub, id));
  await stop(worker);
  await hub.stop();
});

test('auto falls back to SSE behind a proxy that refuses WebSocket upgrades', async () => {
  const hub = await startHub(FAST);
  const proxy = await startProxy(hub.url, { blockUpgrades: true });
  const id = `fallback-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(proxy.url, id, { WebSocket, backoff: BACKOFF, ...rec });
  await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
  assert.equal(w.connection.transport, 'sse');
  assert.equal(rec.connections[0].transport, 'websocket', 'tried WebSocket first');
  await generate(hub, id);
  assert.equal((await w.done).status, 'COMPLETED');
  assertEveryLogOnce(w.state.logs, 'fallback');
  // Without the proxy the same watcher stays on WebSocket.
  const direct = watchProject(hub.url, id, { WebSocket });
  await direct.done;
  assert.equal(direct.connection.transport, 'websocket');
  await hub.stop();
});

test('close() before complete rejects done with CLOSED and ends iteration', async () => {
  const hub = await startHub(FAST);
  const rec = recorder();
  const w = watchProject(hub.url, `idle-${Date.now()}`, { WebSocket, ...rec });
  await until(rec.subscribe, () => w.connection.status === 'open', 10000, 'open');
  const it = w[Symbol.asyncIterator]();
  const next = it.next();
  w.close();
  assert.equal((await w.done.catch((e) => e)).code, 'CLOSED');
  assert.deepEqual(await next, { value: undefined, done: true });
  await hub.stop();
});

test('answers pings (no 4408 under a short heartbeat timeout); 1013 backs off, then connects', async () => {
  const hub = await startHub(['--heartbeat-interval', '200ms', '--heartbeat-timeout', '700ms', '--max-connections', '1']);
  const id = `beat-${Date.now()}`;
  const rec = recorder();
  const sent = [];
  // The `ws` WebSocket, recording what the client sends.
  class Recording extends WebSocket {
    send(data) { sent.push(JSON.parse(data)); rec.onState(); super.send(data); }
  }
  const first = watchProject(hub.url, id, { WebSocket: Recording, ...rec });
  // Six pongs take over 1 s: well past the 700 ms a silent client would be allowed.
  await until(rec.subscribe, () => sent.filter((f) => f.event === 'pong').length >= 6, 10000, 'six pongs');
  assert.equal(first.connection.status, 'open');
  assert.equal(rec.connections.filter((c) => c.status === 'reconnecting').length, 0, 'never closed (no 4408)');

  const second = recorder();
  const w = watchProject(hub.url, id, { WebSocket, ...second });
  await until(second.subscribe, () => w.connection.status === 'reconnecting', 10000, 'refused with 1013');
  assert.ok(w.connection.retryInMs >= 2500, `backs off: ${w.connection.retryInMs} ms`);
  first.close();
  await until(second.subscribe, () => w.connection.status === 'open', 15000, 'open once there is room');
  w.close();
  await hub.stop();
});
