// The watcher's state machine alone (src/machine.ts): a pure step(machine, input) →
// [machine, effects]. Every reconnect decision — each close code, each HTTP refusal,
// tokens, the probe, backoff, the backfill, when `done` settles — without a hub, as the
// reducer is tested. watch.test.mjs and robust.test.mjs run the same decisions against
// a real hub.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initialState } from '../dist/index.js';
import { importSource } from './source.mjs';

const { start, step } = await importSource('src/machine.ts');
const { CLOSE_CODES } = await importSource('src/close.ts');

const CONFIG = { mode: 'auto', webSocket: true, renewable: false, stayOpen: false, backfill: true, initialMs: 500, maxMs: 30000, maxLogs: 500 };
const machine = (config = {}) => start({ ...CONFIG, ...config }, initialState('p'));

/** Feeds inputs in order; returns the machine and the effects of the last input. */
function feed(m, ...inputs) {
  let effects = [];
  for (const input of inputs) [m, effects] = step(m, input);
  return [m, effects];
}
const kinds = (effects) => effects.map((e) => e.do);
const attempt = (expired = false) => ({ on: 'attempt', expired });
const connected = (data = {}) => ({ on: 'frame', frame: { event: 'connected', data: { project_id: 'p', timestamp: '2025-10-19T10:00:00Z', heartbeat_interval: 30, resumed: false, recovered: true, ...data } } });
const snapshot = (data) => ({ on: 'frame', frame: { event: 'snapshot', data: { progress: 0, recovered: true, ...data } } });
const event = (event, data, id) => ({ on: 'frame', frame: id ? { event, id, data } : { event, data } });
const ended = (code) => (code === undefined ? { on: 'ended' } : { on: 'ended', code });
/** A watcher that dialed and heard `connected`. */
const open = (config) => feed(machine(config), attempt(), connected())[0];

test('start: auto dials a WebSocket, or SSE without one; websocket without one stops NO_TRANSPORT', () => {
  let [m, effects] = feed(machine(), attempt());
  assert.equal(m.phase, 'connecting');
  assert.equal(m.transport, 'websocket');
  assert.deepEqual(kinds(effects), ['dial']);
  [m] = feed(machine({ webSocket: false }), attempt());
  assert.equal(m.transport, 'sse');
  [m] = feed(machine({ mode: 'sse' }), attempt());
  assert.equal(m.transport, 'sse');
  [m, effects] = feed(machine({ mode: 'websocket', webSocket: false }), attempt());
  assert.equal(m.phase, 'stopped');
  assert.equal(m.failure.code, 'NO_TRANSPORT');
  assert.deepEqual(kinds(effects), ['stop']);
});

test('connected: open, attempts and the renewal reset; a resume that knows nothing looks the state up', () => {
  let [m, effects] = feed(machine(), attempt(), ended(1012), attempt(), connected());
  assert.equal(m.phase, 'open');
  assert.equal(m.attempt, 0);
  assert.deepEqual(kinds(effects), ['opened', 'emit', 'state']);
  [m, effects] = feed(machine(), attempt(), connected({ resumed: true, recovered: true }));
  assert.deepEqual(kinds(effects), ['opened', 'look-up', 'emit', 'state']);
  [m, effects] = feed(machine(), attempt(), connected({ resumed: true, recovered: false }));
  assert.ok(!kinds(effects).includes('look-up'), 'a failed resume gets a snapshot instead');
});

test('the close-code table: one reaction per code, any other code backs off', () => {
  assert.deepEqual(CLOSE_CODES, { 1006: 'lost', 1012: 'restart', 1013: 'overloaded', 4429: 'overloaded', 4401: 'renew' });
  const after = (code, config) => feed(open(config), ended(code));
  // 1012 service restart: promptly, spread over 0–1 s (capped by maxMs).
  let [m, effects] = after(1012);
  assert.equal(m.phase, 'waiting');
  assert.deepEqual(effects, [{ do: 'wait', minMs: 0, maxMs: 1000 }]);
  assert.deepEqual(after(1012, { maxMs: 400 })[1], [{ do: 'wait', minMs: 0, maxMs: 400 }]);
  // 1013 overloaded and 4429 slow consumer: from a 5 s base (2.5–5 s with jitter).
  for (const code of [1013, 4429]) assert.deepEqual(after(code)[1], [{ do: 'wait', minMs: 2500, maxMs: 5000 }], String(code));
  // 1006 after `connected` (a dropped link), 4408, 1009, 1002, 1007, a code of a newer
  // hub, and an end without a code: backoff from initialMs.
  for (const code of [1006, 4408, 1009, 1002, 1007, 4999, undefined]) {
    [m, effects] = after(code);
    assert.deepEqual(effects, [{ do: 'wait', minMs: 250, maxMs: 500 }], String(code));
    assert.equal(m.attempt, 1);
  }
});

test('backoff doubles per failed attempt, is capped at maxMs, and resets on connected', () => {
  let m = machine({ initialMs: 100, maxMs: 1000 });
  const seen = [];
  for (let i = 0; i < 6; i++) {
    let effects;
    [m, effects] = feed(m, attempt(), connected(), ended(4408));
    [m, effects] = feed(m, attempt(), ended(4408));
    seen.push(effects[0].maxMs);
    m = feed(m, attempt(), connected())[0];
  }
  assert.deepEqual(seen, [200, 200, 200, 200, 200, 200], 'connected resets the attempt count');
  m = open({ initialMs: 100, maxMs: 1000 });
  const grow = [];
  for (let i = 0; i < 6; i++) {
    let effects;
    [m, effects] = feed(m, ended(4408));
    grow.push([effects[0].minMs, effects[0].maxMs, m.attempt]);
    m = feed(m, attempt())[0];
  }
  assert.deepEqual(grow, [[50, 100, 1], [100, 200, 2], [200, 400, 3], [400, 800, 4], [500, 1000, 5], [500, 1000, 6]]);
  // The overloaded base grows the same way once past 5 s.
  m = feed(open({ initialMs: 4000 }), ended(1013), attempt(), ended(1013))[0];
  assert.equal(m.attempt, 2);
  assert.deepEqual(feed(m, attempt(), ended(1013))[1], [{ do: 'wait', minMs: 8000, maxMs: 16000 }]);
});

test('4401: renew the token and reconnect at once; without getToken stop TOKEN_EXPIRED', () => {
  let [m, effects] = feed(open(), ended(4401));
  assert.equal(m.phase, 'stopped');
  assert.deepEqual(m.failure, { code: 'TOKEN_EXPIRED', message: 'the access token expired and no getToken was given' });
  assert.deepEqual(kinds(effects), ['stop']);
  [m, effects] = feed(open({ renewable: true }), ended(4401));
  assert.equal(m.phase, 'waiting');
  assert.deepEqual(kinds(effects), ['renew']);
  [m, effects] = feed(m, { on: 'token', ok: true });
  assert.deepEqual(effects, [{ do: 'wait', minMs: 0, maxMs: 0 }]);
  assert.equal(m.renewed, true);
  // getToken failed: back off and try again.
  [m, effects] = feed(open({ renewable: true }), ended(4401), { on: 'token', ok: false });
  assert.deepEqual(effects, [{ do: 'wait', minMs: 250, maxMs: 500 }]);
});

test('a token known to be expired is renewed before dialing', () => {
  let [m, effects] = feed(machine({ renewable: true }), attempt(true));
  assert.equal(m.phase, 'waiting');
  assert.deepEqual(kinds(effects), ['renew']);
  [m, effects] = feed(m, { on: 'token', ok: true });
  assert.equal(m.phase, 'connecting');
  assert.deepEqual(kinds(effects), ['dial']);
  assert.equal(m.attempt, 0, 'not a failed attempt');
  // Without getToken there is nothing to renew with: dial, the hub will say.
  assert.deepEqual(kinds(feed(machine(), attempt(true))[1]), ['dial']);
});

test('a WebSocket that fails before connected is probed over HTTP; SSE is not', () => {
  let [m, effects] = feed(machine(), attempt(), ended(1006));
  assert.equal(m.phase, 'waiting');
  assert.deepEqual(kinds(effects), ['probe']);
  assert.deepEqual(kinds(feed(machine(), attempt(), ended())[1]), ['probe'], 'an error without a close event');
  assert.deepEqual(kinds(feed(machine(), attempt(), ended(1012))[1]), ['wait'], 'a close code is an answer already');
  assert.deepEqual(kinds(feed(machine({ mode: 'sse' }), attempt(), ended())[1]), ['wait']);
  // No answer (hub down): back off.
  [m, effects] = feed(m, { on: 'unreachable' });
  assert.deepEqual(effects, [{ do: 'wait', minMs: 250, maxMs: 500 }]);
});

test('HTTP refusals: UPGRADE_REQUIRED switches auto to SSE; 401 renews once; 400/401/403/404 stop; others back off', () => {
  const refused = (status, code, config, m = feed(machine(config), attempt(), ended(1006))[0]) =>
    feed(m, { on: 'refused', status, ...(code ? { code, message: `${code} says why` } : {}) });
  let [m, effects] = refused(400, 'UPGRADE_REQUIRED');
  assert.equal(m.transport, 'sse');
  assert.deepEqual(effects, [{ do: 'wait', minMs: 0, maxMs: 0 }]);
  assert.deepEqual(kinds(feed(m, attempt())[1]), ['dial']);
  // A fixed transport never switches; retrying would be blocked the same way for ever
  // (review nit): it stops with a typed error saying what to do.
  [m, effects] = refused(400, 'UPGRADE_REQUIRED', { mode: 'websocket' });
  assert.equal(m.transport, 'websocket');
  assert.equal(m.phase, 'stopped');
  assert.deepEqual(kinds(effects), ['stop']);
  assert.equal(m.failure.code, 'UPGRADE_REQUIRED');
  assert.equal(m.failure.status, 400);
  assert.match(m.failure.message, /blocked.*'auto'/);
  for (const [status, code] of [[403, 'FORBIDDEN'], [403, 'ORIGIN_NOT_ALLOWED'], [400, 'INVALID_PROJECT_ID'], [400, 'INVALID_EVENT_ID'], [401, 'UNAUTHORIZED']]) {
    [m, effects] = refused(status, code);
    assert.equal(m.phase, 'stopped', code);
    assert.deepEqual(m.failure, { code, message: `${code} says why`, status });
  }
  [m] = refused(404);
  assert.deepEqual(m.failure, { code: 'HTTP_404', message: 'HTTP 404', status: 404 }, 'no JSON body');
  for (const status of [500, 502, 503, 429]) assert.deepEqual(kinds(refused(status)[1]), ['wait'], String(status));
  // 401 with getToken: renew, then retry after a backoff; refused again, it is final.
  [m, effects] = refused(401, 'UNAUTHORIZED', { renewable: true });
  assert.deepEqual(kinds(effects), ['renew']);
  [m, effects] = feed(m, { on: 'token', ok: true });
  assert.deepEqual(effects, [{ do: 'wait', minMs: 250, maxMs: 500 }]);
  [m] = refused(401, 'UNAUTHORIZED', {}, feed(m, attempt(), ended(1006))[0]);
  assert.equal(m.phase, 'stopped');
  assert.equal(m.failure.code, 'UNAUTHORIZED');
});

test('a link silent for 2.5 heartbeats backs off and reconnects', () => {
  const [m, effects] = feed(open(), { on: 'idle' });
  assert.equal(m.phase, 'waiting');
  assert.deepEqual(effects, [{ do: 'wait', minMs: 250, maxMs: 500 }]);
});

test('close(): stopped without a failure; a stopped machine ignores everything', () => {
  let [m, effects] = feed(open(), { on: 'close' });
  assert.equal(m.phase, 'stopped');
  assert.equal(m.failure, null);
  assert.deepEqual(kinds(effects), ['stop']);
  for (const input of [attempt(), ended(1012), { on: 'token', ok: true }, { on: 'idle' }, { on: 'close' }, event('complete', { status: 'COMPLETED' })]) {
    const [same, none] = step(m, input);
    assert.equal(same, m);
    assert.deepEqual(none, []);
  }
});

test('joining mid-run: backfill from position 0 up to the snapshot; earlier runs do not settle done', () => {
  let [m, effects] = feed(open(), snapshot({ status: 'RENDERING', progress: 50, last_event_id: 'e:7' }));
  assert.equal(m.phase, 'backfilling');
  assert.equal(m.state.lastEventId, 'e:0');
  assert.equal(m.until, 'e:7');
  assert.deepEqual(kinds(effects), ['attempt'], 'the snapshot is neither folded nor delivered');
  [m, effects] = feed(m, attempt());
  assert.equal(m.phase, 'backfilling');
  assert.deepEqual(kinds(effects), ['dial']);
  // The backfill's own `connected` is quiet.
  [m, effects] = feed(m, connected({ resumed: true, recovered: true }));
  assert.equal(m.phase, 'backfilling');
  assert.deepEqual(kinds(effects), ['opened', 'state'], 'not emitted: the watcher joined once');
  // An earlier run's complete is replayed: done waits.
  [m, effects] = feed(m, event('complete', { status: 'COMPLETED', youtube_url: 'https://y/old' }, 'e:3'));
  assert.equal(m.state.status, 'COMPLETED');
  assert.deepEqual(kinds(effects), ['emit', 'state']);
  // A dropped link during the backfill resumes it.
  [m, effects] = feed(m, ended(1006), attempt());
  assert.equal(m.phase, 'backfilling');
  [m] = feed(m, connected({ resumed: true, recovered: true }));
  [m, effects] = feed(m, event('stage_change', { current_stage: 'RENDERING', progress: 50 }, 'e:7'));
  assert.equal(m.phase, 'open', 'the snapshot position reached');
  assert.equal(m.until, null);
  [m, effects] = feed(m, event('complete', { status: 'FAILED' }, 'e:8'));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle', 'stop']);
  assert.equal(m.state.status, 'FAILED');
});

test('backfill: once, never on a resume or with it off; a trimmed start keeps recovered', () => {
  const mid = snapshot({ status: 'RENDERING', progress: 50, last_event_id: 'e:7' });
  assert.equal(feed(open({ backfill: false }), mid)[0].phase, 'open');
  assert.equal(feed(machine(), attempt(), connected({ resumed: true, recovered: false }), mid)[0].phase, 'open');
  // The history's start was trimmed: the hub answers the backfill with the snapshot again.
  let [m] = feed(open(), mid, attempt(), connected({ resumed: true, recovered: false }));
  assert.equal(m.state.recovered, true, 'nothing the watcher had seen was lost');
  let effects;
  [m, effects] = feed(m, snapshot({ status: 'RENDERING', progress: 50, last_event_id: 'e:7', recovered: false }));
  assert.equal(m.phase, 'open');
  assert.equal(m.state.recovered, true);
  assert.equal(m.state.progress, 50);
  assert.deepEqual(kinds(effects), ['emit', 'state']);
  assert.equal(feed(m, mid)[0].phase, 'open', 'never twice');
});

test('done: on complete (closing unless stayOpen), on a finished snapshot at join, never on QUEUED or a stage', () => {
  let [m, effects] = feed(open(), event('complete', { status: 'COMPLETED', youtube_url: 'https://y/1' }, 'e:9'));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle', 'stop']);
  assert.equal(m.finished, true);
  assert.equal(m.failure, null);
  [m, effects] = feed(open({ stayOpen: true }), event('complete', { status: 'COMPLETED' }));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle']);
  assert.equal(m.phase, 'open');
  [, effects] = feed(m, event('progress_update', { status: 'SCRIPT_GENERATING', progress: 3, current_stage: 's' }), event('complete', { status: 'FAILED' }));
  assert.ok(!kinds(effects).includes('settle'), 'done settles once');
  // A finished snapshot at join, with no later run: the end, as before (with the
  // backfill, once the replay reaches it).
  [m, effects] = feed(open({ backfill: false }), snapshot({ status: 'COMPLETED', progress: 100, last_event_id: 'e:9' }));
  assert.ok(kinds(effects).includes('settle'));
  [m, effects] = feed(open(), snapshot({ status: 'COMPLETED', progress: 100, last_event_id: 'e:9' }), attempt(), connected({ resumed: true }));
  [m, effects] = feed(m, event('complete', { status: 'COMPLETED' }, 'e:9'));
  assert.ok(kinds(effects).includes('settle'));
  // ... also when the snapshot's position is a log after the complete.
  [m] = feed(open(), snapshot({ status: 'COMPLETED', progress: 100, last_event_id: 'e:9' }), attempt(), connected({ resumed: true }));
  [m, effects] = feed(m, event('complete', { status: 'COMPLETED' }, 'e:8'));
  assert.ok(!kinds(effects).includes('settle'), 'not yet caught up');
  [m, effects] = feed(m, event('log', { level: 'INFO', message: 'after' }, 'e:9'));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle', 'stop']);
  // QUEUED (a new run accepted, waiting for a worker) and a stage are not ends.
  for (const status of ['QUEUED', 'RENDERING']) {
    [m, effects] = feed(open({ backfill: false }), snapshot({ status, progress: 0, last_event_id: 'e:10', job_id: 'j2', queue_position: 1 }));
    assert.ok(!kinds(effects).includes('settle'), status);
    assert.equal(m.phase, 'open', status);
  }
  assert.equal(m.state.jobId, 'j2');
  // The joined run's own complete is.
  [m, effects] = feed(m, event('stage_change', { current_stage: 'UPLOADING', progress: 90 }, 'e:11'), event('complete', { status: 'COMPLETED' }, 'e:12'));
  assert.ok(kinds(effects).includes('settle'));
});

// Review T3: a status this client does not know yet (CANCELLED was one before issue 25) still ends
// the run, or an older client would wait for ever.
test('done: any complete ends the run, with its status as sent; so does a snapshot of such an end', () => {
  let [m, effects] = feed(open(), event('stage_change', { current_stage: 'RENDERING', progress: 40 }, 'e:1'), event('complete', { status: 'CANCELLED' }, 'e:2'));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle', 'stop']);
  assert.equal(m.state.status, 'CANCELLED', 'done resolves with the state\'s status');
  [m, effects] = feed(open({ backfill: false }), snapshot({ status: 'CANCELLED', progress: 40, last_event_id: 'e:2' }));
  assert.ok(kinds(effects).includes('settle'));
  assert.equal(m.state.status, 'CANCELLED');
});

test("done: a finished snapshot of an older job is not the end of the run the watcher joined", () => {
  let [m, effects] = feed(open({ backfill: false }), snapshot({ status: 'QUEUED', progress: 0, last_event_id: 'e:10', job_id: 'j2', queue_position: 1 }));
  assert.equal(m.state.status, 'QUEUED');
  // The broker came back from an older save: its state is the last run's end.
  [m, effects] = feed(m, ended(1006), attempt(), connected({ resumed: true, recovered: false }), snapshot({ status: 'COMPLETED', progress: 100, last_event_id: 'f:9', job_id: 'j1', youtube_url: 'https://y/OLD', recovered: false }));
  assert.ok(!kinds(effects).includes('settle'));
  assert.equal(m.phase, 'open');
  // The state still follows j2 (T1: the stale end was folded in as the state, and the
  // next frame of the run found it final and resolved with the old run's link).
  assert.deepEqual([m.state.status, m.state.jobId, m.state.youtubeUrl, m.state.lastEventId], ['QUEUED', 'j2', null, 'f:9']);
  [m, effects] = feed(m, event('log', { level: 'INFO', message: 'still queued' }, 'f:10'));
  assert.deepEqual(kinds(effects), ['emit', 'state'], 'a log of the run is not its end');
  [m, effects] = feed(m, event('error', { error_code: 'RENDER_ERROR', message: 'm', stage: 'RENDERING' }, 'f:11'));
  assert.deepEqual(kinds(effects), ['emit', 'state']);
  assert.equal(m.phase, 'open');
  // The same job's end is.
  [m, effects] = feed(m, snapshot({ status: 'COMPLETED', progress: 100, last_event_id: 'f:12', job_id: 'j2', recovered: false }));
  assert.ok(kinds(effects).includes('settle'));
});

test('a resume that finds the run finished (looked up) settles done, keeping the position', () => {
  const resuming = () => start(CONFIG, initialState('p', 'e:9'));
  let [m, effects] = feed(resuming(), attempt(), connected({ resumed: true, recovered: true }));
  assert.ok(kinds(effects).includes('look-up'));
  [m, effects] = feed(m, { on: 'looked-up', snapshot: { status: 'RENDERING', progress: 40, last_event_id: 'e:4', recovered: true } });
  assert.deepEqual(effects, [], 'not finished: live events will tell');
  [m, effects] = feed(m, { on: 'looked-up', snapshot: { status: 'COMPLETED', progress: 100, last_event_id: 'e:9', youtube_url: 'https://y/1', recovered: true } });
  assert.deepEqual(kinds(effects), ['state', 'settle', 'stop']);
  assert.equal(m.state.youtubeUrl, 'https://y/1');
  assert.equal(m.state.lastEventId, 'e:9');
  // Review T4: the run ended after the position resumed from: the replay brings its
  // events and its complete, which onEvent and the iterators must see; done waits.
  [m, effects] = feed(start(CONFIG, initialState('p', 'e:5')), attempt(), connected({ resumed: true, recovered: true }));
  assert.ok(kinds(effects).includes('look-up'));
  [m, effects] = feed(m, { on: 'looked-up', snapshot: { status: 'COMPLETED', progress: 100, last_event_id: 'e:9', youtube_url: 'https://y/1', recovered: true } });
  assert.deepEqual(effects, [], 'something is left to replay');
  assert.equal(m.phase, 'open');
  [m, effects] = feed(m, event('log', { level: 'INFO', message: 'm' }, 'e:8'), event('complete', { status: 'COMPLETED', youtube_url: 'https://y/1' }, 'e:9'));
  assert.deepEqual(kinds(effects), ['emit', 'state', 'settle', 'stop']);
});

test('broker_status: state.broker down and up again, delivered, never an end; unknown events are delivered only', () => {
  let [m, effects] = feed(open(), event('broker_status', { available: false, timestamp: 't' }));
  assert.equal(m.state.broker, 'down');
  assert.deepEqual(kinds(effects), ['emit', 'state']);
  [m] = feed(m, event('broker_status', { available: true, timestamp: 't' }));
  assert.equal(m.state.broker, 'up');
  // Review TA2: every frame but ping/pong reaches onEvent and the iterators, as before;
  // a newer hub's event changes neither the machine nor the state, and ends nothing.
  const before = m;
  const news = event('room_changed', { anything: 1, status: 'COMPLETED' }, 'e:99');
  [m, effects] = feed(m, news);
  assert.equal(m, before, 'a newer hub\'s event changes nothing');
  assert.deepEqual(effects, [{ do: 'emit', frame: news.frame }]);
});
