// The multiplexed watcher's decisions alone (src/many.ts): a pure stepMany(machine,
// input) → [machine, effects], without a hub, as machine.test.mjs tests one project's.
// The connection's own decisions are machine.ts's (tested there); these are what is new:
// subscribing everything again after a reconnect (each project from its own last id),
// subscription errors per subscription, add/remove at any time, tag snapshots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { importSource } from './source.mjs';

const { startMany, stepMany, union, matches, streamQuery, streamPosition } = await importSource('src/many.ts');

const CONFIG = { mode: 'auto', webSocket: true, renewable: false, initialMs: 500, maxMs: 30000, maxLogs: 500 };

function feed(m, ...inputs) {
  let effects = [];
  for (const input of inputs) [m, effects] = stepMany(m, input);
  return [m, effects];
}
const kinds = (effects) => effects.map((e) => e.do);
const sent = (effects) => effects.filter((e) => e.do === 'send').map((e) => e.frame);
const attempt = { on: 'attempt', expired: false };
const connected = { on: 'frame', frame: { event: 'connected', data: { timestamp: '2026-12-06T10:00:00Z', heartbeat_interval: 30 } } };
const frame = (f) => ({ on: 'frame', frame: f });
const subscribed = (project_id, data = { resumed: false, recovered: true }) => frame({ event: 'subscribed', project_id, data });
const progress = (project_id, id, p, status = 'RENDERING') => frame({ event: 'progress_update', project_id, id, data: { status, progress: p, current_stage: 'r' } });
const open = (targets, config) => feed(startMany({ ...CONFIG, ...config }, targets), attempt, connected);

test('connected: every target is subscribed, on the one connection; the link opens as machine.ts decides', () => {
  const [m, effects] = open([{ project: 'a' }, { project: 'b', lastEventId: '1:7' }, { tag: 'user:7', status: ['active'] }]);
  assert.equal(m.link.phase, 'open');
  assert.deepEqual(kinds(effects).filter((k) => k !== 'send'), ['opened', 'emit', 'changed']);
  assert.deepEqual(sent(effects), [
    { event: 'subscribe', data: { project_id: 'a' } },
    { event: 'subscribe', data: { project_id: 'b', last_event_id: '1:7' } },
    { event: 'subscribe', data: { tag: 'user:7', status: ['active'] } },
  ]);
  assert.deepEqual([...m.subs.values()].map((s) => s.phase), ['subscribing', 'subscribing', 'subscribing']);
});

test('a reconnect subscribes each project again from its own last id, and a restart backs off as machine.ts says', () => {
  let [m] = open([{ project: 'a' }, { project: 'b' }]);
  [m] = feed(m, subscribed('a'), subscribed('b'), progress('a', '1:3', 10), progress('b', '1:9', 50), progress('a', '1:4', 20));
  assert.equal(m.subs.get('project:a').state.progress, 20);
  let effects;
  [m, effects] = feed(m, { on: 'ended', code: 1012 });
  assert.deepEqual(effects, [{ do: 'wait', minMs: 0, maxMs: 1000 }]);
  assert.deepEqual([...m.subs.values()].map((s) => s.phase), ['pending', 'pending']);
  [m, effects] = feed(m, attempt, connected);
  assert.deepEqual(sent(effects), [
    { event: 'subscribe', data: { project_id: 'a', last_event_id: '1:4' } },
    { event: 'subscribe', data: { project_id: 'b', last_event_id: '1:9' } },
  ]);
  // A resume the hub could not honour says so in the project's state only.
  [m] = feed(m, subscribed('a', { resumed: true, recovered: false }), subscribed('b', { resumed: true, recovered: true }));
  assert.equal(m.subs.get('project:a').state.recovered, false);
  assert.equal(m.subs.get('project:b').state.recovered, true);
  // 4401 without getToken stops the whole connection (machine.ts's table).
  [m, effects] = feed(m, { on: 'ended', code: 4401 });
  assert.equal(m.link.phase, 'stopped');
  assert.equal(m.link.failure.code, 'TOKEN_EXPIRED');
  assert.deepEqual(kinds(effects), ['stop']);
});

test('frames are routed by project_id; another project, an unknown one, and the connection stay apart', () => {
  let [m] = open([{ project: 'a' }, { project: 'b' }]);
  let effects;
  [m] = feed(m, subscribed('a'), subscribed('b'), progress('a', '1:1', 30));
  assert.equal(m.subs.get('project:b').state.progress, 0);
  [m, effects] = feed(m, progress('zzz', '1:1', 99));
  assert.deepEqual(kinds(effects), ['emit'], 'delivered to onEvent, changes no state');
  [m] = feed(m, frame({ event: 'complete', project_id: 'b', id: '1:2', data: { status: 'COMPLETED', youtube_url: 'https://youtube.com/watch?v=x' } }));
  assert.equal(m.subs.get('project:b').state.status, 'COMPLETED');
  assert.equal(m.link.phase, 'open', 'a project\'s complete ends nothing');
});

test('subscription_error: per subscription; limits are retried after a backoff, the rest kept as errors', () => {
  let [m] = open([{ project: 'a' }, { project: 'b' }, { project: 'c' }, { project: 'x'.repeat(70) }]);
  let effects;
  [m, effects] = feed(m, frame({ event: 'subscription_error', project_id: 'a', data: { code: 'FORBIDDEN', message: 'no' } }));
  assert.equal(m.subs.get('project:a').phase, 'failed');
  assert.deepEqual(m.subs.get('project:a').error, { code: 'FORBIDDEN', message: 'no', retrying: false });
  assert.deepEqual(kinds(effects), ['emit', 'changed']);
  [m, effects] = feed(m, frame({ event: 'subscription_error', project_id: 'b', data: { code: 'TOO_MANY_SUBSCRIPTIONS', message: 'full' } }));
  assert.equal(m.subs.get('project:b').phase, 'retrying');
  assert.deepEqual(effects.at(-1), { do: 'later', key: 'project:b', minMs: 2500, maxMs: 5000 });
  [m, effects] = feed(m, { on: 'resubscribe', key: 'project:b' });
  assert.deepEqual(sent(effects), [{ event: 'subscribe', data: { project_id: 'b' } }]);
  [m, effects] = feed(m, frame({ event: 'subscription_error', project_id: 'b', data: { code: 'HUB_AT_CAPACITY', message: 'full' } }));
  assert.equal(effects.at(-1).maxMs, 5000, 'the 5 s base holds until the doubling passes it');
  // Already subscribed: the subscription goes on.
  [m, effects] = feed(m, frame({ event: 'subscription_error', project_id: 'c', data: { code: 'ALREADY_SUBSCRIBED', message: '' } }));
  assert.equal(m.subs.get('project:c').phase, 'subscribing');
  // The hub echoes 64 characters of a long id: still routed to it.
  [m] = feed(m, frame({ event: 'subscription_error', project_id: 'x'.repeat(64), data: { code: 'INVALID_PROJECT_ID', message: 'bad' } }));
  assert.equal(m.subs.get(`project:${'x'.repeat(70)}`).error.code, 'INVALID_PROJECT_ID');
  // A reconnect asks again for what was open or asked, not for what was refused.
  [m, effects] = feed(m, subscribed('c'), { on: 'ended', code: 1012 }, attempt, connected);
  assert.deepEqual(sent(effects), [{ event: 'subscribe', data: { project_id: 'c' } }]);
  assert.equal(m.link.phase, 'open');
});

test('add and remove at any time: reference-counted; frames of a removed subscription are dropped until unsubscribed', () => {
  let [m] = open([]);
  let effects;
  [m, effects] = feed(m, { on: 'add', target: { project: 'a' } });
  assert.deepEqual(sent(effects), [{ event: 'subscribe', data: { project_id: 'a' } }]);
  [m, effects] = feed(m, { on: 'add', target: { project: 'a' } });
  assert.deepEqual(sent(effects), [], 'a second add shares the subscription');
  [m] = feed(m, subscribed('a'), progress('a', '1:1', 10));
  [m, effects] = feed(m, { on: 'remove', target: { project: 'a' } });
  assert.deepEqual(sent(effects), []);
  assert.equal(m.subs.get('project:a').refs, 1);
  [m, effects] = feed(m, { on: 'remove', target: { project: 'a' } });
  assert.deepEqual(sent(effects), [{ event: 'unsubscribe', data: { project_id: 'a' } }]);
  assert.equal(m.subs.has('project:a'), false);
  // Added again before the hub's answer: the old subscription's frames do not count.
  [m, effects] = feed(m, { on: 'add', target: { project: 'a' } });
  assert.deepEqual(sent(effects), [{ event: 'subscribe', data: { project_id: 'a' } }]);
  [m] = feed(m, progress('a', '1:2', 40));
  assert.equal(m.subs.get('project:a').state.progress, 0);
  [m] = feed(m, frame({ event: 'unsubscribed', project_id: 'a', data: {} }), subscribed('a'), progress('a', '1:3', 50));
  assert.equal(m.subs.get('project:a').state.progress, 50);
  // While the link is down, an add waits for it and a remove sends nothing.
  [m] = feed(m, { on: 'ended' });
  [m, effects] = feed(m, { on: 'add', target: { project: 'b' } }, { on: 'remove', target: { project: 'a' } });
  assert.deepEqual(sent(effects), []);
  assert.equal(m.subs.get('project:b').phase, 'pending');
});

test('a tag: its snapshot replaces what was known when whole; live project_state frames update it', () => {
  let [m] = open([{ tag: 'team:7' }]);
  const state = (project_id, status, progress) => frame({ event: 'project_state', project_id, tag: 'team:7', data: { project_id, status, progress, tags: ['team:7'] } });
  [m] = feed(m, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 2 } }), state('p1', 'RENDERING', 40));
  assert.equal(m.subs.get('tag:team:7').projects.size, 0, 'the snapshot is not shown half');
  [m] = feed(m, state('p2', 'COMPLETED', 100));
  assert.deepEqual([...m.subs.get('tag:team:7').projects.keys()], ['p1', 'p2']);
  [m] = feed(m, state('p3', 'QUEUED', 0), state('p1', 'UPLOADING', 90));
  assert.equal(m.subs.get('tag:team:7').projects.get('p1').progress, 90);
  assert.equal(m.subs.get('tag:team:7').projects.size, 3);
  // After a reconnect, the new snapshot is the truth: p2 gone while away is dropped.
  [m] = feed(m, { on: 'ended', code: 1012 }, attempt, connected, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 1 } }));
  assert.equal(m.subs.get('tag:team:7').projects.size, 3, 'the old view stands until the snapshot is whole');
  [m] = feed(m, state('p1', 'COMPLETED', 100));
  assert.deepEqual([...m.subs.get('tag:team:7').projects.keys()], ['p1']);
  [m] = feed(m, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 0 } }));
  assert.equal(m.subs.get('tag:team:7').projects.size, 0);
});

test('a tag asked for with other filters: the hub is asked for their union once, again only when it widens', () => {
  let [m] = open([{ tag: 't', status: ['active'] }]);
  let effects;
  [m, effects] = feed(m, subscribed('x'), { on: 'add', target: { tag: 't', status: ['active'] } });
  assert.deepEqual(sent(effects), []);
  [m, effects] = feed(m, { on: 'add', target: { tag: 't', status: ['FAILED'] } });
  assert.deepEqual(sent(effects), [
    { event: 'unsubscribe', data: { tag: 't' } },
    { event: 'subscribe', data: { tag: 't', status: ['FAILED', 'active'] } },
  ]);
  [m, effects] = feed(m, { on: 'remove', target: { tag: 't', status: ['FAILED'] } });
  assert.deepEqual(sent(effects), [], 'the wider union stays');
  assert.deepEqual(union([{ status: ['a'] }, {}]), {}, 'one without a filter: all');
  assert.deepEqual(union([{ since: '2026-12-06T10:00:00Z' }, { since: '2026-12-06T09:00:00+00:00' }]), { since: '2026-12-06T09:00:00+00:00' });
  assert.equal(matches({ status: 'RENDERING' }, { status: ['active'] }), true);
  assert.equal(matches({ status: 'QUEUED' }, { status: ['active'] }), true);
  assert.equal(matches({ status: 'CANCELLED' }, { status: ['active'] }), false);
  assert.equal(matches({ status: 'CANCELLED' }, { status: ['ended'] }), true);
  assert.equal(matches({ status: 'FAILED' }, { status: ['FAILED'] }), true);
  assert.equal(matches({ status: null }, {}), true);
});

test('close stops for good; nothing after it changes anything', () => {
  let [m, effects] = feed(open([{ project: 'a' }])[0], { on: 'close' });
  assert.deepEqual(kinds(effects), ['stop']);
  [m, effects] = feed(m, { on: 'add', target: { project: 'b' } }, progress('a', '1:1', 10));
  assert.deepEqual(effects, []);
});

test('a blocked upgrade (UPGRADE_REQUIRED) switches to SSE: the stream names every subscription, and every position in one Last-Event-ID', () => {
  let [m, effects] = feed(startMany(CONFIG, [{ project: 'a', lastEventId: '1:3' }, { project: 'b' }, { project: 'c', lastEventId: '1:9' }, { tag: 'user:7', status: ['active'] }]), attempt, { on: 'ended', code: 1006 });
  assert.deepEqual(kinds(effects), ['probe'], 'a WebSocket that never spoke is probed, as machine.ts does');
  [m, effects] = feed(m, { on: 'refused', status: 400, code: 'UPGRADE_REQUIRED', message: 'x' });
  assert.equal(m.link.transport, 'sse');
  assert.deepEqual(effects, [{ do: 'wait', minMs: 0, maxMs: 0 }], 'at once, as for one project');
  [m, effects] = feed(m, attempt);
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.deepEqual(m.stream, ['project:a', 'project:b', 'project:c', 'tag:user:7']);
  assert.deepEqual(streamQuery(m), { projects: 'a,b,c', tags: 'user:7' });
  // FNV-1a of "a,b,c" is 7a8f5e87 (crates/hub/src/wire/positions.rs); b has no position.
  assert.equal(streamPosition(m), 'm1.7a8f5e87.1:3,,1:9');
  // The stream subscribes them: nothing is sent (SSE cannot), each is asked for.
  [m, effects] = feed(m, connected);
  assert.deepEqual(sent(effects), []);
  assert.deepEqual([...m.subs.values()].map((s) => s.phase), ['subscribing', 'subscribing', 'subscribing', 'subscribing']);
  [m] = feed(m, subscribed('a', { resumed: true, recovered: true }), progress('a', '1:4', 40), subscribed('b'), progress('b', '2:1', 5));
  assert.equal(m.subs.get('project:b').state.progress, 5);
  assert.equal(streamPosition(m), 'm1.7a8f5e87.1:4,2:1,1:9');
  // A restart: the stream is dialed again from where each project stands.
  [m, effects] = feed(m, { on: 'ended' });
  assert.deepEqual(kinds(effects), ['wait'], 'an SSE stream that ended is not probed');
  [m, effects] = feed(m, attempt);
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.equal(streamPosition(m), 'm1.7a8f5e87.1:4,2:1,1:9');
  // Other refusals are machine.ts's: 401 without getToken stops.
  [m, effects] = feed(m, { on: 'refused', status: 401, code: 'UNAUTHORIZED', message: 'no' });
  assert.equal(m.link.phase, 'stopped');
  assert.equal(m.link.failure.code, 'UNAUTHORIZED');
});

/** A watcher on SSE (`transport: 'sse'`), dialed and open, each project subscribed. */
function openSse(targets) {
  let [m] = feed(startMany({ ...CONFIG, mode: 'sse' }, targets), attempt, connected);
  for (const t of targets) if (t.project) [m] = feed(m, subscribed(t.project));
  return m;
}

test('SSE: add and remove reopen the stream once per turn, with the new list and every position', () => {
  let m = openSse([{ project: 'a' }, { project: 'b' }]);
  let effects;
  [m] = feed(m, progress('a', '1:3', 30), progress('b', '1:5', 50));
  // Two changes in one turn: one reopen, fed back once they are made.
  let e1, e2;
  [m, e1] = stepMany(m, { on: 'add', target: { project: 'c' } });
  [m, e2] = stepMany(m, { on: 'remove', target: { project: 'b' } });
  assert.deepEqual(kinds(e1), ['changed', 'reopen']);
  assert.deepEqual(kinds(e2), ['changed'], 'one reopen for the turn');
  assert.equal(m.subs.get('project:c').phase, 'pending');
  // Until the stream reopens, the old one's frames of b change nothing.
  [m, effects] = feed(m, progress('b', '1:6', 60));
  assert.deepEqual(kinds(effects), ['emit']);
  assert.equal(m.subs.has('project:b'), false);
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.equal(m.link.phase, 'connecting');
  assert.deepEqual(streamQuery(m), { projects: 'a,c' });
  assert.equal(streamPosition(m), 'm1.09876cd9.1:3', 'a resumes where it stood; c has no position');
  assert.equal(m.subs.get('project:a').phase, 'pending');
  [m] = feed(m, connected, subscribed('a', { resumed: true, recovered: true }), subscribed('c'));
  assert.deepEqual([...m.subs.values()].map((s) => [s.key, s.phase]), [['project:a', 'open'], ['project:c', 'open']]);
  // A change undone in the same turn reopens nothing; let go of and added again, it does
  // (a new subscription, from its own position).
  [m] = feed(m, { on: 'add', target: { project: 'd' } }, { on: 'remove', target: { project: 'd' } });
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(effects, []);
  assert.equal(m.link.phase, 'open');
  [m] = feed(m, { on: 'remove', target: { project: 'c' } }, { on: 'add', target: { project: 'c', lastEventId: '1:2' } });
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.equal(streamPosition(m), 'm1.09876cd9.1:3,1:2');
});

test('SSE: nothing to name hangs up until there is; at most 100 projects, the rest wait for room', () => {
  let [m, effects] = feed(startMany({ ...CONFIG, webSocket: false }), attempt);
  assert.equal(m.link.transport, 'sse', 'no WebSocket: SSE');
  assert.deepEqual(kinds(effects), ['hang-up', 'changed'], 'the hub refuses a stream that names nothing');
  [m, effects] = feed(m, { on: 'add', target: { project: 'p' } });
  assert.deepEqual(kinds(effects), ['changed', 'reopen']);
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.deepEqual(streamQuery(m), { projects: 'p' });
  assert.equal(streamPosition(m), undefined, 'no position: no Last-Event-ID');
  [m] = feed(m, connected, subscribed('p'));
  const ids = Array.from({ length: 100 }, (_, i) => `q${i}`);
  for (const id of ids) [m] = feed(m, { on: 'add', target: { project: id } });
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.equal(streamQuery(m).projects.split(',').length, 100);
  assert.equal(m.subs.get('project:q98').error, null);
  assert.deepEqual(m.subs.get('project:q99').error, { code: 'TOO_MANY_SUBSCRIPTIONS', message: m.subs.get('project:q99').error.message, retrying: true });
  assert.equal(m.subs.get('project:q99').phase, 'pending');
  // Room again: the next stream names it.
  [m] = feed(m, connected, { on: 'remove', target: { project: 'p' } });
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  assert.ok(m.stream.includes('project:q99'));
  // Everything let go of: no stream at all.
  for (const id of ids) [m] = feed(m, { on: 'remove', target: { project: id } });
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['hang-up', 'changed']);
});

test('SSE: a refused subscription is an error of its own; one refused for now is named again after its delay', () => {
  let m = openSse([{ project: 'a' }]);
  let effects;
  [m] = feed(m, { on: 'add', target: { project: 'b' } }, { on: 'reopen' }, connected, subscribed('a'));
  [m, effects] = feed(m, frame({ event: 'subscription_error', project_id: 'b', data: { code: 'TOO_MANY_SUBSCRIPTIONS', message: 'later' } }));
  assert.equal(m.subs.get('project:b').phase, 'retrying');
  assert.equal(effects.at(-1).do, 'later');
  [m, effects] = feed(m, { on: 'resubscribe', key: 'project:b' });
  assert.deepEqual(kinds(effects), ['reopen']);
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed'], 'reopened, naming it again');
  assert.deepEqual(m.stream, ['project:a', 'project:b']);
});

test('SSE: a tag asked for with a wider filter is subscribed anew (its snapshot again); its filter is not sent, tagged() applies it', () => {
  let m = openSse([{ tag: 'team:7', status: ['active'] }]);
  let effects;
  [m] = feed(m, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 0 } }));
  assert.equal(m.subs.get('tag:team:7').phase, 'open');
  assert.deepEqual(streamQuery(m), { tags: 'team:7' });
  [m, effects] = feed(m, { on: 'add', target: { tag: 'team:7', status: ['ended'] } });
  assert.ok(kinds(effects).includes('reopen'));
  // Until then, the old subscription's frames change nothing.
  [m] = feed(m, frame({ event: 'project_state', tag: 'team:7', project_id: 'p', data: { project_id: 'p', status: 'COMPLETED' } }));
  assert.equal(m.subs.get('tag:team:7').projects.size, 0);
  [m, effects] = feed(m, { on: 'reopen' });
  assert.deepEqual(kinds(effects), ['dial', 'changed']);
  [m] = feed(m, connected, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 1 } }), frame({ event: 'project_state', tag: 'team:7', project_id: 'p', data: { project_id: 'p', status: 'COMPLETED' } }));
  assert.deepEqual(m.subs.get('tag:team:7').asked, { status: ['active', 'ended'] });
  assert.equal(m.subs.get('tag:team:7').projects.get('p').status, 'COMPLETED');
});

test("SSE: a tag's status filter, which the stream does not take, is applied as the hub would: the snapshot's and unknown projects' states pass it, a known project's end is kept", () => {
  let m = openSse([{ tag: 'team:7', status: ['active'] }]);
  const state = (project_id, status) => frame({ event: 'project_state', tag: 'team:7', project_id, data: { project_id, status } });
  [m] = feed(m, frame({ event: 'subscribed', tag: 'team:7', data: { projects: 2 } }), state('old', 'COMPLETED'), state('run', 'RENDERING'));
  assert.deepEqual([...m.subs.get('tag:team:7').projects.keys()], ['run'], 'the snapshot without the ended one');
  let effects;
  [m, effects] = feed(m, state('other', 'FAILED'));
  assert.deepEqual(kinds(effects), ['emit'], 'delivered, not listed');
  [m] = feed(m, state('run', 'COMPLETED'), state('new', 'QUEUED'));
  assert.deepEqual([...m.subs.get('tag:team:7').projects].map(([id, p]) => [id, p.status]), [['run', 'COMPLETED'], ['new', 'QUEUED']]);
});
