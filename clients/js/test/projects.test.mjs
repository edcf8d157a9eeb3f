// watchProjects against a real hub and redis-server: many projects and a tag on one
// connection, through a hub SIGKILL and restart (each project resumes from its own
// last id: every log line once), add/remove at any time, a refused subscription that
// leaves the others alone, tokens (the refresh frame, 4401 renewed). No mocked server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { watchProjects, share } from '../dist/projects.js';
import { watchProject } from '../dist/index.js';
import { assertEveryLogOnce, watchingProjects, startHub, startRedis, startWorker, mintToken, generate, until, stop } from './support.mjs';

const BACKOFF = { initialMs: 100, maxMs: 1000 };

/** Resolves when `predicate(watch)` holds, checked on each change of the watch. */
function when(listeners, predicate, what, ms = 30000) {
  return until((l) => listeners.add(l), predicate, ms, what);
}
/** A watchProjects on the WebSocket (`ws`), its listeners for `when`. */
const watching = (url, options) => watchingProjects(url, { WebSocket, backoff: BACKOFF, ...options });

test('three projects on one connection survive a hub SIGKILL and restart: each resumes from its own id, every line once', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '60ms']);
  const ids = [0, 1, 2].map((n) => `many-${n}-${Date.now()}`);
  const { w, listeners, frames } = watching(hub.url, { projects: ids });
  await when(listeners, () => w.connection.status === 'open' && frames.filter((f) => f.event === 'subscribed').length === 3, 'three subscribed');
  for (const id of ids) await generate(hub, id);
  await when(listeners, () => ids.every((id) => w.states.get(id)?.logs.some((l) => l.message.startsWith('[3/15] '))), 'mid-run');
  await hub.restart('SIGKILL');
  await when(listeners, () => ids.every((id) => w.states.get(id)?.status === 'COMPLETED'), 'all three completed', 60000);
  assert.ok(frames.filter((f) => f.event === 'connected').length >= 2, 'one connection, reconnected');
  for (const id of ids) {
    const s = w.states.get(id);
    assert.equal(s.progress, 100);
    assert.match(s.youtubeUrl, /^https:\/\/youtube\.com\/watch\?v=/);
    assertEveryLogOnce(s, id);
    // The same as a single-project watcher that read the whole history.
    const single = watchProject(hub.url, id, { WebSocket });
    await single.done;
    assert.deepEqual(s.logs.map((l) => l.id), single.state.logs.map((l) => l.id).slice(-s.logs.length), `${id}: the same lines as the history`);
  }
  // Every frame of a subscription says its project.
  for (const f of frames) if (!['connected', 'ping'].includes(f.event)) assert.ok(ids.includes(f.project_id), JSON.stringify(f));
  w.close();
  await w.closed;
  await stop(worker);
  await hub.stop();
});

test('add and remove at any time; a refused project is an error of its own, the others go on', async () => {
  const hub = await startHub(['--mock-delay', '20ms']);
  const a = `add-a-${Date.now()}`;
  const b = `add-b-${Date.now()}`;
  const { w, listeners, frames } = watching(hub.url, {});
  await when(listeners, () => w.connection.status === 'open', 'open');
  const releaseA = w.add(a);
  const releaseBad = w.add('no spaces!');
  await when(listeners, () => w.errors.has('project:no spaces!'), 'the refusal');
  assert.deepEqual(w.errors.get('project:no spaces!'), { code: 'INVALID_PROJECT_ID', message: w.errors.get('project:no spaces!').message, retrying: false });
  await generate(hub, a);
  await when(listeners, () => w.states.get(a)?.status === 'COMPLETED', 'a completed');
  assert.equal(w.connection.status, 'open');
  releaseA();
  releaseBad();
  await when(listeners, () => frames.some((f) => f.event === 'unsubscribed' && f.project_id === a), 'unsubscribed');
  assert.equal(w.states.has(a), false);
  const releaseB = w.add(b);
  await generate(hub, b);
  await generate(hub, a).catch(() => {});
  await when(listeners, () => w.states.get(b)?.status === 'COMPLETED', 'b completed');
  const after = frames.findIndex((f) => f.event === 'unsubscribed' && f.project_id === a);
  assert.equal(frames.slice(after + 1).filter((f) => f.project_id === a).length, 0, 'nothing of a after its unsubscribed');
  releaseB();
  w.close();
  await hub.stop();
});

test('a tag: the snapshot of its projects, then projects that start and finish while watching, again after a restart', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '30ms']);
  const tag = `team:${Date.now()}`;
  const first = `tag-1-${Date.now()}`;
  await generate(hub, first, { tags: [tag] });
  const { w, listeners } = watching(hub.url, { tag });
  await when(listeners, () => w.tagged(tag).some((p) => p.project_id === first), 'the snapshot');
  const second = `tag-2-${Date.now()}`;
  await generate(hub, second, { tags: [tag] });
  await when(listeners, () => w.tagged(tag).some((p) => p.project_id === second), 'a project tagged while watching');
  await hub.restart('SIGKILL');
  const third = `tag-3-${Date.now()}`;
  await when(listeners, () => w.connection.status === 'open', 'reconnected');
  await generate(hub, third, { tags: [tag] });
  const seen = () => JSON.stringify({ connection: w.connection, tagged: w.tagged(tag).map((p) => [p.project_id, p.status, p.progress]) });
  await when(listeners, () => [first, second, third].every((id) => w.tagged(tag).find((p) => p.project_id === id)?.status === 'COMPLETED'), 'all three completed', 60000)
    .catch((e) => { throw new Error(`${e.message}: ${seen()}`); });
  assert.equal(w.tagged(tag, { status: ['active'] }).length, 0, 'none active');
  assert.equal(w.tagged(tag, { status: ['ended'] }).length, 3);
  w.close();
  await stop(worker);
  await hub.stop();
});

test('tokens: a project outside the token is FORBIDDEN alone; an expiring token is refreshed in-band; share() gives one connection', async () => {
  const secret = 'test-secret';
  const hub = await startHub(['--mock-delay', '20ms', '--auth-secret', secret, '--heartbeat-interval', '1s']);
  const mine = `tok-${Date.now()}`;
  let renewals = 0;
  const first = await mintToken(secret, mine, '3s');
  const told = new Set();
  const { w, listeners, frames } = watching(hub.url, {
    token: first, projects: [mine, 'not-mine'],
    getToken: async () => { renewals++; told.forEach((l) => l()); return mintToken(secret, mine, '1h'); },
  });
  await when(listeners, () => w.errors.get('project:not-mine')?.code === 'FORBIDDEN', 'FORBIDDEN for the other');
  await until((l) => told.add(l), () => renewals >= 1, 10000, 'getToken asked before expiry');
  // Past the short token's life (what is awaited is time itself): refreshed in-band,
  // the hub did not close with 4401, the connection never dropped.
  const exp = JSON.parse(Buffer.from(first.split('.')[1], 'base64url')).exp * 1000;
  await new Promise((r) => setTimeout(r, Math.max(0, exp + 1500 - Date.now())));
  assert.equal(w.connection.status, 'open');
  assert.equal(frames.filter((f) => f.event === 'connected').length, 1, 'one session, never closed');
  const publisher = await mintToken(secret, mine, '1h', true);
  await generate(hub, mine, {}, publisher);
  await when(listeners, () => w.states.get(mine)?.status === 'COMPLETED', 'completed');
  w.close();
  // share(): one connection per hub and token, however many users.
  const t = await mintToken(secret, '*', '1h');
  const s1 = share(hub.url, { token: t, WebSocket });
  const s2 = share(hub.url, { token: t, WebSocket });
  assert.equal(s1.watch, s2.watch);
  const r1 = s1.watch.add(mine);
  const r2 = s2.watch.add(mine);
  await until((l) => s1.listen(l), () => s1.watch.states.get(mine)?.status === 'COMPLETED', 30000, 'shared state');
  r1();
  r2();
  s1.release();
  s2.release();
  await s1.watch.closed;
  assert.equal(s1.watch.connection.status, 'closed', 'the last release closes it');
  // Without getToken, a refused token stops for good with the hub's code.
  const bad = watchProjects(hub.url, { WebSocket, token: 'nope', projects: [mine] });
  await assert.rejects(bad.closed, (e) => e.code === 'UNAUTHORIZED' && e.status === 401);
  await hub.stop();
});
