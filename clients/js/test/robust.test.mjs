// Failure paths and edge cases of watchProject against a real hub: the global WebSocket's
// failed handshakes, a project's second run, resuming at the end of a run, the token
// refresh timer, the async iterator's protocol, and the backfill's `connected`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { watchProject } from '../dist/index.js';
import { startHub, startRedis, startWorker, stop, mintToken, generate, publish, until, recorder, freePort } from './support.mjs';

const BACKOFF = { initialMs: 100, maxMs: 200 };
const within = (p, ms) => Promise.race([p, new Promise((r) => setTimeout(() => r('still pending'), ms))]);
const outcome = (w) => w.done.then((d) => `resolved ${d.status}`, (e) => `rejected ${e.code}`);
const projectState = async (hub, id) => (await fetch(`${hub.url}/api/v1/projects/${id}`)).json();

// Defect 1: Node 20's global WebSocket (undici) fires only `error` on a failed handshake.
test('global WebSocket: a refused or impossible handshake is reported or retried, never a hang', async (t) => {
  if (!globalThis.WebSocket) return t.skip('no global WebSocket');
  const auth = await startHub(['--auth-secret', 's']);
  const open = await startHub([]);
  for (const [name, base, id, expected] of [
    ['401 without a token', auth.url, 'x', 'rejected UNAUTHORIZED'],
    ['403 another project', auth.url + '', 'other', 'rejected FORBIDDEN'],
    ['400 invalid id', open.url, 'no spaces!', 'rejected INVALID_PROJECT_ID'],
  ]) {
    const token = name.startsWith('403') ? await mintToken('s', 'mine') : undefined;
    const w = watchProject(base, id, { backoff: BACKOFF, token });
    const got = await within(outcome(w), 5000);
    w.close();
    assert.equal(got, expected, name);
    assert.equal(w.connection.status, 'closed', name);
  }
  // A hub that is down: retried with backoff (several attempts), until close().
  const rec = recorder();
  const down = watchProject(`http://127.0.0.1:${await freePort()}`, 'x', { backoff: BACKOFF, ...rec });
  await until(rec.subscribe, () => rec.connections.filter((c) => c.status === 'reconnecting').length >= 3, 5000, 'three retries');
  down.close();
  assert.equal(await outcome(down), 'rejected CLOSED');
  await auth.stop();
  await open.stop();
});

// Defect 2: the backfill replays from `<epoch>:0`, which holds the first run's complete.
test("joining a project's second run: done is that run's, not the first run's", async () => {
  const hub = await startHub(['--mock-delay', '60ms', '--retry-backoff', '20ms']);
  const id = `second-${Date.now()}`;
  const rec0 = recorder();
  const first = watchProject(hub.url, id, { WebSocket, ...rec0 });
  await until(rec0.subscribe, () => first.connection.status === 'open', 10000, 'open');
  await generate(hub, id);
  assert.equal((await first.done).status, 'COMPLETED');
  await generate(hub, id);
  for (let i = 0; ; i++) {
    const s = await projectState(hub, id);
    if (s.status && s.status !== 'COMPLETED' && s.status !== 'FAILED') break;
    assert.ok(i < 100, 'run 2 started');
    await new Promise((r) => setTimeout(r, 50));
  }
  const w = watchProject(hub.url, id, { WebSocket });
  const result = await w.done;
  const hubState = await projectState(hub, id);
  assert.equal(result.status, 'COMPLETED');
  assert.equal(hubState.status, 'COMPLETED', 'done settles only when run 2 ended');
  assert.equal(w.state.lastEventId, hubState.last_event_id, "done from run 2's complete");
  assert.ok(w.state.lastEventId !== first.state.lastEventId);
  for (let n = 1; n <= 15; n++) assert.equal(w.state.logs.filter((l) => l.message.startsWith(`[${n}/15] `)).length, 1, `run 2 image ${n}`);
  await hub.stop();
});

// Defect 6: a recovered resume sends no snapshot; at the run's end nothing follows.
test('resuming from the id of the complete settles done (state read from the hub)', async () => {
  const hub = await startHub([]);
  const id = `resdone-${Date.now()}`;
  await publish(hub, id, 'stage_change', { previous_stage: null, current_stage: 'UPLOADING', progress: 90 });
  const last = (await publish(hub, id, 'complete', { status: 'COMPLETED', youtube_url: 'https://youtube.com/watch?v=x' })).id;
  assert.ok(last);
  const w = watchProject(hub.url, id, { WebSocket, lastEventId: last });
  const got = await within(w.done, 5000);
  w.close();
  assert.deepEqual(got, { status: 'COMPLETED', youtubeUrl: 'https://youtube.com/watch?v=x' });
  assert.equal(w.state.status, 'COMPLETED');
  assert.equal(w.state.progress, 100);
  await hub.stop();
});

// Defect 3: the refresh delay from the local clock: skewed, or past 2^31-1 ms.
test('token refresh: no getToken loop with a skewed client clock or a long-lived token', async () => {
  const secret = 's';
  const hub = await startHub(['--auth-secret', secret]);
  const realNow = Date.now;
  try {
    for (const [name, ttl, skew] of [['clock 2 h ahead', '1h', 2 * 3600e3], ['60-day token', '60d', 0]]) {
      const id = `ref-${ttl}`;
      const token = await mintToken(secret, id, ttl);
      let calls = 0;
      Date.now = () => realNow() + skew;
      const rec = recorder();
      const w = watchProject(hub.url, id, { WebSocket, token, stayOpen: true, getToken: async () => { calls++; return token; }, ...rec });
      await new Promise((r) => setTimeout(r, 2000));
      Date.now = realNow;
      const status = w.connection.status;
      w.close();
      assert.equal(status, 'open', name);
      assert.ok(calls <= 1, `${name}: getToken called ${calls} times in 2 s`);
    }
  } finally {
    Date.now = realNow;
  }
  await hub.stop();
});

// Defects 4 and 5: the async-iterator protocol allows several pending next() calls.
test('the iterator: concurrent next() calls all settle; return() ends a pending next()', async () => {
  const hub = await startHub([]);
  const id = `iter-${Date.now()}`;
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, stayOpen: true, ...rec });
  const it = w[Symbol.asyncIterator]();
  const a = it.next();
  const b = it.next();
  const c = it.next();
  await until(rec.subscribe, () => w.connection.status === 'open', 5000, 'open');
  await publish(hub, id, 'log', { level: 'INFO', message: 'one' });
  const [ra, rb] = [await within(a, 5000), await within(b, 5000)];
  w.close();
  assert.equal(ra.value?.event, 'connected');
  assert.equal(rb.value?.event, 'log');
  assert.deepEqual(await within(c, 2000), { value: undefined, done: true });

  const w2 = watchProject(hub.url, `iter2-${Date.now()}`, { WebSocket, stayOpen: true });
  const it2 = w2[Symbol.asyncIterator]();
  await it2.next(); // connected
  const pending = it2.next();
  assert.deepEqual(await it2.return(), { value: undefined, done: true });
  const got = await within(pending, 2000);
  w2.close();
  assert.deepEqual(got, { value: undefined, done: true });
  assert.deepEqual(await it2.next(), { value: undefined, done: true }, 'stays done');
  await hub.stop();
});

// Defect 10: the backfill dials twice; the watcher still joined once.
test('a late watcher (backfill) gets connected once, in onEvent and in the iterator', async () => {
  const hub = await startHub(['--mock-delay', '20ms', '--retry-backoff', '20ms']);
  const id = `once-${Date.now()}`;
  await generate(hub, id);
  const w0 = watchProject(hub.url, id, { WebSocket });
  await w0.done;
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, ...rec });
  const iterated = [];
  const iterating = (async () => { for await (const f of w) iterated.push(f); })();
  assert.equal((await w.done).status, 'COMPLETED');
  await iterating;
  assert.equal(rec.frames.filter((f) => f.event === 'connected').length, 1);
  assert.equal(iterated.filter((f) => f.event === 'connected').length, 1);
  assert.ok(w.state.logs.length > 15, 'backfilled');
  await hub.stop();
});

// Issue 23 §1: a project that completed once is generated again while the job waits (no
// worker yet); a watcher joining then got `done` at once with the old COMPLETED and link.
// The hub now says QUEUED; done must settle on this run's own complete.
test('joining a run that waits in the queue: QUEUED is not an end, done is the new run\'s', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const id = `queued-${Date.now()}`;
  await publish(hub, id, 'complete', { status: 'COMPLETED', youtube_url: 'https://youtube.com/watch?v=old' });
  const { job_id } = await generate(hub, id);
  const rec = recorder();
  const w = watchProject(hub.url, id, { WebSocket, ...rec });
  const settled = [];
  w.done.then((d) => settled.push(d), () => {});
  await until(rec.subscribe, () => w.state.status === 'QUEUED', 10000, 'QUEUED');
  // A settle would have come with the frame that made the state QUEUED (or before it).
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(settled, [], "the old run's end is not this run's");
  assert.equal(w.state.jobId, job_id);
  assert.equal(w.state.queuePosition, 1);
  assert.equal(w.state.youtubeUrl, null);
  const worker = await startWorker(redis.url, ['--mock-delay', '5ms']);
  const result = await within(w.done, 30000);
  assert.equal(result.status, 'COMPLETED');
  assert.notEqual(result.youtubeUrl, 'https://youtube.com/watch?v=old');
  assert.ok(w.state.logs.length > 15, 'the new run\'s log');
  await stop(worker);
  await hub.stop();
});
