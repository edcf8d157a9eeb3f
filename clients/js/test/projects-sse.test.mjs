// watchProjects over the multiplexed SSE stream (`GET /api/v1/progress/events`), against
// a real hub and redis-server: the fallback when the WebSocket is blocked on the way or
// missing, a hub SIGKILL and restart in the middle (every project resumes from its place
// in the one Last-Event-ID: every line once), add/remove reopening the stream with the
// new list and every position, a tag, tokens. No mocked server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { watchProjects } from '../dist/projects.js';
import { assertEveryLogOnce, watchingProjects, startHub, startRedis, startWorker, startProxy, mintToken, generate, until, stop } from './support.mjs';

const BACKOFF = { initialMs: 100, maxMs: 1000 };

/** A watchProjects over SSE, with `when` (support.mjs). */
const watching = (url, options) => watchingProjects(url, { transport: 'sse', backoff: BACKOFF, ...options });

test('SSE: three projects and a tag on one stream survive a hub SIGKILL and restart: each resumes from its own position, every line once', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '60ms']);
  const stamp = Date.now();
  const ids = [0, 1, 2].map((n) => `sse-many-${n}-${stamp}`);
  const tag = `team:sse-${stamp}`;
  const { w, frames, when } = watching(hub.url, { projects: ids, tag });
  await when(() => w.connection.status === 'open' && frames.filter((f) => f.event === 'subscribed').length === 4, 'four subscribed');
  assert.equal(w.connection.transport, 'sse');
  for (const id of ids) await generate(hub, id, { tags: [tag] });
  await when(() => ids.every((id) => w.states.get(id)?.logs.some((l) => l.message.startsWith('[3/15] '))), 'mid-run');
  await hub.restart('SIGKILL');
  await when(() => ids.every((id) => w.states.get(id)?.status === 'COMPLETED'), 'all three completed', 60000);
  await when(() => ids.every((id) => w.tagged(tag).find((p) => p.project_id === id)?.status === 'COMPLETED'), 'the tag says so too');
  const connected = frames.filter((f) => f.event === 'connected');
  assert.ok(connected.length >= 2, 'one stream, reconnected');
  // After the restart each project resumed from its own position, and the hub could
  // honour it.
  const after = frames.slice(frames.indexOf(connected[1]));
  for (const id of ids) {
    const sub = after.find((f) => f.event === 'subscribed' && f.project_id === id);
    assert.deepEqual(sub?.data, { resumed: true, recovered: true }, id);
    const s = w.states.get(id);
    assert.equal(s.progress, 100);
    assert.equal(s.recovered, true);
    assertEveryLogOnce(s, id);
    // The same lines as a WebSocket-free reader of the whole history.
    const single = await fetch(`${hub.url}/api/v1/projects/${id}`).then((r) => r.json());
    assert.equal(s.lastEventId, single.last_event_id, `${id}: at the hub's last event`);
  }
  for (const f of frames) if (!['connected', 'ping'].includes(f.event)) assert.ok(ids.includes(f.project_id) || f.tag === tag, JSON.stringify(f));
  w.close();
  await w.closed;
  assert.equal(w.connection.status, 'closed');
  await stop(worker);
  await hub.stop();
});

test('SSE: add and remove reopen the stream with the new list and every position: nothing twice, nothing of a project let go of', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '60ms', '--concurrency', '4']);
  const stamp = Date.now();
  const [a, b, c] = ['a', 'b', 'c'].map((x) => `sse-add-${x}-${stamp}`);
  const { w, frames, when } = watching(hub.url, {});
  // Nothing to name: no stream yet (the hub refuses an empty one), and no error.
  const releaseA = w.add(a);
  const releaseBad = w.add('no spaces!');
  await when(() => w.errors.has('project:no spaces!'), 'the refusal');
  assert.equal(w.errors.get('project:no spaces!').code, 'INVALID_PROJECT_ID');
  await when(() => w.states.get(a) && frames.some((f) => f.event === 'subscribed' && f.project_id === a), 'a subscribed');
  await generate(hub, a);
  await generate(hub, b);
  await when(() => w.states.get(a)?.logs.some((l) => l.message.startsWith('[4/15] ')), 'a mid-run');
  // b mid-run of its own: added now, it opens with its snapshot; c added in the same
  // turn: one reopen for both.
  const dials = frames.filter((f) => f.event === 'connected').length;
  const releaseB = w.add(b);
  const releaseC = w.add(c);
  await when(() => frames.filter((f) => f.event === 'connected').length === dials + 1 && frames.some((f) => f.event === 'subscribed' && f.project_id === c), 'reopened with b and c');
  await when(() => w.states.get(a)?.status === 'COMPLETED' && w.states.get(b)?.status === 'COMPLETED', 'a and b completed', 60000);
  assert.equal(frames.filter((f) => f.event === 'connected').length, dials + 1, 'one reopen for two adds');
  assertEveryLogOnce(w.states.get(a), 'a, across the reopen');
  // a let go of: the stream reopens without it.
  releaseA();
  releaseBad();
  const reopened = frames.filter((f) => f.event === 'connected').length + 1;
  await when(() => frames.filter((f) => f.event === 'connected').length === reopened, 'reopened without a');
  assert.equal(w.states.has(a), false);
  const since = frames.length;
  await generate(hub, a);
  await generate(hub, c);
  await when(() => w.states.get(c)?.status === 'COMPLETED', 'c completed', 60000);
  assert.equal(frames.slice(since).filter((f) => f.project_id === a).length, 0, 'nothing of a after it was let go of');
  assertEveryLogOnce(w.states.get(c), 'c');
  releaseB();
  releaseC();
  w.close();
  await stop(worker);
  await hub.stop();
});

test('auto: a WebSocket refused on the way (proxy) or missing (no WebSocket class) falls back to the SSE stream', async () => {
  const hub = await startHub(['--mock-delay', '20ms']);
  const proxy = await startProxy(hub.url, { blockUpgrades: true });
  for (const [name, url, options] of [
    ['behind a proxy that refuses upgrades', proxy.url, { WebSocket: (await import('ws')).default }],
    ['no WebSocket at all', hub.url, {}],
  ]) {
    const id = `sse-auto-${Date.now()}`;
    // A runtime without a global WebSocket (it is read when the watch is made).
    const global = globalThis.WebSocket;
    if (!options.WebSocket) delete globalThis.WebSocket;
    const { w, when } = watching(url, { transport: 'auto', projects: [id], ...options });
    if (global) globalThis.WebSocket = global;
    await when(() => w.connection.status === 'open', `${name}: open`);
    assert.equal(w.connection.transport, 'sse', name);
    await generate(hub, id);
    await when(() => w.states.get(id)?.status === 'COMPLETED', `${name}: completed`);
    assertEveryLogOnce(w.states.get(id), name);
    w.close();
  }
  await hub.stop();
});

test('SSE tokens: a project outside the token is FORBIDDEN alone; an expired token is renewed and the stream resumes; 401 without getToken stops', async () => {
  const secret = 'test-secret';
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker', '--auth-secret', secret, '--heartbeat-interval', '1s']);
  const worker = await startWorker(redis.url, ['--mock-delay', '150ms']);
  const mine = `sse-tok-${Date.now()}`;
  let renewals = 0;
  const { w, frames, when } = watching(hub.url, {
    token: await mintToken(secret, mine, '2s'), projects: [mine, 'not-mine'],
    getToken: async () => { renewals++; return mintToken(secret, mine, '1h'); },
  });
  await when(() => w.errors.get('project:not-mine')?.code === 'FORBIDDEN', 'FORBIDDEN for the other');
  await generate(hub, mine, {}, await mintToken(secret, mine, '1h', true));
  await when(() => w.states.get(mine)?.status === 'COMPLETED', 'completed', 60000);
  assert.ok(renewals >= 1, 'the short token was renewed');
  const connected = frames.filter((f) => f.event === 'connected');
  assert.ok(connected.length >= 2, 'the stream ended with its token and was dialed again');
  assertEveryLogOnce(w.states.get(mine), mine);
  w.close();
  const bad = watchProjects(hub.url, { transport: 'sse', token: 'nope', projects: [mine] });
  await assert.rejects(bad.closed, (e) => e.code === 'UNAUTHORIZED' && e.status === 401);
  await stop(worker);
  await hub.stop();
});
