// The reducer alone: a pure function from (state, frame) to state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reduce, initialState } from '../dist/index.js';

const fold = (frames, state = initialState('p'), maxLogs) => frames.reduce((s, f) => reduce(s, f, maxLogs), state);
const stage = (current_stage, progress, previous_stage = null, timestamp = '2025-10-19T10:00:00Z') =>
  ({ event: 'stage_change', data: { previous_stage, current_stage, progress, timestamp } });
const update = (status, progress) => ({ event: 'progress_update', data: { status, progress, current_stage: `${status} ${progress}`, estimated_remaining: 10 } });
const log = (id, message) => ({ event: 'log', id, data: { level: 'INFO', message } });

test('progress never goes backwards within a run; a run after complete starts over', () => {
  let s = fold([stage('SCRIPT_GENERATING', 5, 'INITIALIZED'), update('SCRIPT_GENERATING', 30), update('SCRIPT_GENERATING', 20)]);
  assert.equal(s.progress, 30);
  assert.equal(s.currentStage, 'SCRIPT_GENERATING 20', 'the text follows the newest update');
  s = fold([{ event: 'complete', id: 'e:9', data: { status: 'COMPLETED', youtube_url: 'https://y' } }], s);
  assert.equal(s.progress, 100);
  assert.equal(s.lastEventId, 'e:9');
  s = fold([log('e:10', 'next run'), stage('SCRIPT_GENERATING', 3)], s);
  assert.equal(s.progress, 3);
  assert.equal(s.youtubeUrl, null);
  assert.equal(s.status, 'SCRIPT_GENERATING');
});

test('stages: timeline with durations, skipped stages done, the running one failed on FAILED', () => {
  const s = fold([
    stage('SCRIPT_GENERATING', 5, null, '2025-10-19T10:00:00Z'),
    stage('RENDERING', 50, 'SCRIPT_GENERATING', '2025-10-19T10:00:03Z'),
    { event: 'complete', data: { status: 'FAILED', youtube_url: null, timestamp: '2025-10-19T10:00:04.5Z' } },
  ]);
  assert.equal(s.stages.SCRIPT_GENERATING.durationMs, 3000);
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'done');
  assert.equal(s.stages.ASSETS_GENERATING.outcome, 'done');
  assert.equal(s.stages.RENDERING.outcome, 'failed');
  assert.equal(s.stages.RENDERING.durationMs, 1500);
  assert.equal(s.stages.UPLOADING.outcome, 'pending');
  assert.equal(s.progress, 50);
});

test('a snapshot rebuilds the state; recovered false sticks', () => {
  let s = fold([stage('RENDERING', 60), log('a:1', 'old')]);
  s = fold([
    { event: 'connected', data: { resumed: true, recovered: false, heartbeat_interval: 30, project_id: 'p', timestamp: 't' } },
    { event: 'snapshot', data: { status: 'ASSETS_GENERATING', progress: 20, current_stage: 'assets', estimated_remaining: 9, last_event_id: 'b:4', updated_at: 't', recovered: false } },
  ], s);
  assert.deepEqual(s.logs, []);
  assert.equal(s.progress, 20);
  assert.equal(s.recovered, false);
  assert.equal(s.lastEventId, 'b:4');
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'done');
  assert.equal(s.stages.ASSETS_GENERATING.outcome, 'running');
  assert.equal(s.stages.RENDERING.outcome, 'pending');
  s = fold([{ event: 'connected', data: { resumed: true, recovered: true } }, log('b:5', 'new')], s);
  assert.equal(s.recovered, false);
});

test('logs are bounded, keep ids, and errors are structured with solutions', () => {
  const s = fold([log('a:1', 'one'), log('a:2', 'two'), log('a:3', 'three'), {
    event: 'error', id: 'a:4',
    data: { error_code: 'TTS_API_ERROR', message: 'm', stage: 'ASSETS_GENERATING', retry_count: 1, max_retries: 3, is_retryable: true, details: {}, solutions: ['wait'], trace_id: 'x' },
  }], initialState('p'), 2);
  assert.deepEqual(s.logs.map((l) => [l.id, l.message]), [['a:2', 'two'], ['a:3', 'three']]);
  assert.equal(s.error.code, 'TTS_API_ERROR');
  assert.deepEqual(s.error.solutions, ['wait']);
  assert.equal(s.error.retryCount, 1);
  const done = reduce(s, { event: 'complete', data: { status: 'COMPLETED', youtube_url: 'u' } });
  assert.equal(done.error, null, 'a completed run has no pending error');
});

test('frames that change nothing keep the same object', () => {
  const s = initialState('p');
  assert.equal(reduce(s, { event: 'ping', data: { timestamp: 't' } }), s);
  assert.equal(reduce(s, { event: 'something_new', data: {} }), s);
});

// Defect 7: after a lost history the hub may know nothing (an empty snapshot); that
// must not throw away the run the watcher was following, nor move progress back.
test('a snapshot without state keeps the run and only marks recovered false; progress never lowered within a run', () => {
  let s = fold([stage('RENDERING', 60), update('RENDERING', 60), log('a:3', 'kept')]);
  s = fold([
    { event: 'connected', data: { resumed: true, recovered: false, heartbeat_interval: 30, project_id: 'p', timestamp: 't' } },
    { event: 'snapshot', data: { status: null, progress: 0, current_stage: null, estimated_remaining: null, last_event_id: null, updated_at: null, youtube_url: null, recovered: false } },
  ], s);
  assert.equal(s.progress, 60);
  assert.equal(s.status, 'RENDERING');
  assert.equal(s.stages.RENDERING.outcome, 'running');
  assert.deepEqual(s.logs.map((l) => l.message), ['kept']);
  assert.equal(s.recovered, false);
  s = fold([update('RENDERING', 65)], s);
  assert.equal(s.progress, 65);
  // A snapshot of the same stage with a lower progress does not move it back.
  s = fold([{ event: 'snapshot', data: { status: 'RENDERING', progress: 40, current_stage: 'r', last_event_id: 'c:2', recovered: false } }], s);
  assert.equal(s.progress, 65);
  assert.equal(s.lastEventId, 'c:2');
  // A final snapshot is taken as it is.
  s = fold([{ event: 'snapshot', data: { status: 'FAILED', progress: 50, last_event_id: 'c:3', recovered: true } }], s);
  assert.equal(s.status, 'FAILED');
  assert.equal(s.progress, 50);
});

// Issue 25 §6: a run that failed for good showed stages it never ran as "done". A
// FAILED (or CANCELLED) snapshot does not say which stages ran: none is shown done; a
// COMPLETED one ran them all.
test('a FAILED or CANCELLED snapshot leaves the stages it never ran pending, none shown done', () => {
  const snapshot = (status) => ({ event: 'snapshot', data: { status, progress: 45, current_stage: null, estimated_remaining: null, last_event_id: 'c:9', updated_at: '2025-10-19T10:00:09Z', youtube_url: null, recovered: true } });
  for (const status of ['FAILED', 'CANCELLED']) {
    const s = fold([snapshot(status)]);
    assert.equal(s.status, status);
    assert.equal(s.progress, 45);
    for (const [name, info] of Object.entries(s.stages)) {
      assert.equal(info.outcome, 'pending', `${status}: ${name}`);
      assert.equal(info.durationMs, null, `${status}: ${name}`);
    }
  }
  const done = fold([snapshot('COMPLETED')]);
  assert.ok(Object.values(done.stages).every((info) => info.outcome === 'done'));
});

// Defect 8: a legacy publisher (Redis PUBLISH, no validation) may omit `progress`.
test('a frame without a finite progress leaves progress as it was (never NaN)', () => {
  let s = fold([
    { event: 'stage_change', data: { previous_stage: null, current_stage: 'RENDERING' } },
    { event: 'progress_update', data: { status: 'RENDERING', progress: 'x', current_stage: 'r' } },
  ]);
  assert.equal(s.progress, 0);
  assert.equal(s.status, 'RENDERING');
  s = fold([update('RENDERING', 70)], s);
  assert.equal(s.progress, 70);
  s = fold([{ event: 'snapshot', data: { status: 'RENDERING', recovered: true } }], s);
  assert.equal(s.progress, 70, 'a snapshot without progress keeps it');
});

// Unchecked links: a legacy PUBLISH can carry any string, and pages put it in an href.
test('youtubeUrl only holds http(s) URLs', () => {
  const complete = (youtube_url) => reduce(initialState('p'), { event: 'complete', data: { status: 'COMPLETED', youtube_url } });
  assert.equal(complete('javascript:alert(1)').youtubeUrl, null);
  assert.equal(complete(' JavaScript:alert(1)').youtubeUrl, null);
  assert.equal(complete('data:text/html,x').youtubeUrl, null);
  assert.equal(complete('/relative').youtubeUrl, null);
  assert.equal(complete('https://youtube.com/watch?v=x').youtubeUrl, 'https://youtube.com/watch?v=x');
  assert.equal(complete('http://example.com/v').youtubeUrl, 'http://example.com/v');
  const snap = reduce(initialState('p'), { event: 'snapshot', data: { status: 'COMPLETED', progress: 100, youtube_url: 'javascript:x', recovered: true } });
  assert.equal(snap.youtubeUrl, null);
});

test('a run taken over by another worker is marked: its stage_change goes on from the stage the run was in', () => {
  let s = fold([stage('SCRIPT_GENERATING', 0), stage('ASSETS_GENERATING', 8, 'SCRIPT_GENERATING'), update('ASSETS_GENERATING', 30)]);
  assert.equal(s.takenOver, false);
  s = fold([stage('ASSETS_GENERATING', 30, 'ASSETS_GENERATING'), update('ASSETS_GENERATING', 33)], s);
  assert.equal(s.takenOver, true);
  assert.equal(s.progress, 33);
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'done');
  assert.equal(s.stages.ASSETS_GENERATING.outcome, 'running');
  s = fold([stage('RENDERING', 55, 'ASSETS_GENERATING')], s);
  assert.equal(s.takenOver, true, 'it stays marked for the rest of the run');
  s = fold([{ event: 'complete', data: { status: 'COMPLETED', youtube_url: 'https://y' } }, stage('SCRIPT_GENERATING', 0)], s);
  assert.equal(s.takenOver, false, 'a new run starts unmarked');
});

// Issue 23 (runs): accepting a job starts a new run: QUEUED with its job and place.
test('QUEUED starts a new run with its job id and queue position; its first stage goes on from there', () => {
  let s = fold([stage('RENDERING', 60), log('a:1', 'old run'), { event: 'complete', id: 'a:2', data: { status: 'COMPLETED', youtube_url: 'https://y/old' } }]);
  const queued = (job_id, queue_position, id) => ({ event: 'progress_update', id, data: { status: 'QUEUED', progress: 0, current_stage: 'queued', job_id, queue_position } });
  s = fold([queued('j2', 2, 'a:3')], s);
  assert.equal(s.status, 'QUEUED');
  assert.equal(s.jobId, 'j2');
  assert.equal(s.queuePosition, 2);
  assert.equal(s.progress, 0);
  assert.equal(s.youtubeUrl, null, 'not the last run\'s link');
  assert.deepEqual(s.logs, []);
  s = fold([log('a:4', 'waiting'), queued('j2', 1, 'a:5')], s);
  assert.equal(s.queuePosition, 1, 'the same run moves up the queue');
  assert.deepEqual(s.logs.map((l) => l.message), ['waiting'], 'and keeps its log');
  s = fold([stage('SCRIPT_GENERATING', 2, 'INITIALIZED')], s);
  assert.equal(s.status, 'SCRIPT_GENERATING');
  assert.equal(s.queuePosition, null);
  assert.equal(s.jobId, 'j2');
  // A QUEUED of another job while a run goes on: a new run was accepted.
  s = fold([queued('j3', 1)], s);
  assert.equal(s.jobId, 'j3');
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'pending');
  const snap = reduce(initialState('p'), { event: 'snapshot', data: { status: 'QUEUED', progress: 0, job_id: 'j4', queue_position: 3, last_event_id: 'b:1', recovered: true } });
  assert.deepEqual([snap.status, snap.jobId, snap.queuePosition], ['QUEUED', 'j4', 3]);
});

test('broker_status: down and back up, whatever the run does; no position, no update time', () => {
  let s = fold([stage('RENDERING', 60, null, '2025-10-19T10:00:00Z')]);
  assert.equal(s.broker, 'up');
  s = fold([{ event: 'broker_status', data: { available: false, timestamp: '2025-10-19T11:00:00Z' } }], s);
  assert.equal(s.broker, 'down');
  assert.equal(s.updatedAt, '2025-10-19T10:00:00Z');
  s = fold([{ event: 'complete', data: { status: 'COMPLETED' } }, stage('SCRIPT_GENERATING', 1)], s);
  assert.equal(s.broker, 'down', 'a new run does not say the broker is back');
  const same = s;
  s = fold([{ event: 'broker_status', data: { available: false, timestamp: 't' } }], s);
  assert.equal(s, same, 'nothing changed');
  s = fold([{ event: 'broker_status', data: { available: true, timestamp: 't' } }], s);
  assert.equal(s.broker, 'up');
});

test('stalled: set by the hub, cleared by stalled:false, by any event, and by a snapshot; no position, no update time', () => {
  const stalled = (on, reason = 'silent') => ({ event: 'stalled', data: { stalled: on, reason, since: '2025-10-19T10:00:00Z', timestamp: '2025-10-19T10:05:00Z' } });
  let s = fold([stage('RENDERING', 60, null, '2025-10-19T10:00:00Z')]);
  assert.equal(s.stalled, null);
  s = fold([stalled(true, 'worker_lost')], s);
  assert.deepEqual(s.stalled, { reason: 'worker_lost', since: '2025-10-19T10:00:00Z' });
  assert.equal(s.updatedAt, '2025-10-19T10:00:00Z', 'not an event of the run');
  assert.equal(s.status, 'RENDERING');
  s = fold([stalled(false)], s);
  assert.equal(s.stalled, null);
  const same = s;
  assert.equal(fold([stalled(false)], s), same, 'nothing changed');
  s = fold([stalled(true), log('e:5', 'alive')], s);
  assert.equal(s.stalled, null, 'an event ends the silence');
  s = fold([stalled(true), { event: 'snapshot', data: { status: 'RENDERING', progress: 61, last_event_id: 'e:6', recovered: true } }], s);
  assert.equal(s.stalled, null, 'a snapshot starts over');
});

// Review T3: a run that ended with a status this client does not know (CANCELLED was one
// before issue 25 made it known; EXPIRED stands for the next) has ended all the same:
// the next run starts over.
test('a complete with a status of a newer hub ends the run: the next one starts over', () => {
  let s = fold([stage('RENDERING', 60), { event: 'complete', data: { status: 'EXPIRED', youtube_url: null } }]);
  assert.equal(s.status, 'EXPIRED', 'kept as sent');
  assert.equal(s.stages.RENDERING.outcome, 'failed');
  s = fold([stage('SCRIPT_GENERATING', 3)], s);
  assert.equal(s.progress, 3);
  assert.equal(s.stages.RENDERING.outcome, 'pending');
});

// Review nit: a QUEUED update without a job id (a legacy publisher, or a hub that does not
// name it) moves the same queued run up, as one with the same job id does.
test('QUEUED updates without a job id are the same queued run: the second keeps the log', () => {
  const queued = (queue_position) => ({ event: 'progress_update', data: { status: 'QUEUED', progress: 0, current_stage: 'queued', queue_position } });
  const s = fold([queued(2), log('a:1', 'waiting'), queued(1)]);
  assert.equal(s.queuePosition, 1);
  assert.deepEqual(s.logs.map((l) => l.message), ['waiting']);
});

test('a CANCELLED complete ends the run: the running stage is cancelled, not failed, and no error stays', () => {
  const s = fold([
    stage('SCRIPT_GENERATING', 5, 'INITIALIZED'),
    stage('ASSETS_GENERATING', 20, 'SCRIPT_GENERATING'),
    { event: 'error', data: { error_code: 'IMAGE_GENERATION_FAILED', message: 'x', stage: 'ASSETS_GENERATING', retry_count: 0, max_retries: 3, is_retryable: true } },
    { event: 'complete', data: { status: 'CANCELLED', youtube_url: null, timestamp: '2025-10-19T10:00:09Z' } },
  ]);
  assert.equal(s.status, 'CANCELLED');
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'done');
  assert.equal(s.stages.ASSETS_GENERATING.outcome, 'cancelled');
  assert.equal(s.stages.RENDERING.outcome, 'pending');
  assert.equal(s.progress, 20, 'a cancelled run keeps the progress it made');
  assert.equal(s.error, null);
  assert.equal(s.youtubeUrl, null);
});

test('units: k/N of a parallel stage, in any order of finishing; a change to another stage, the end and a new run clear it', () => {
  const units = (done, total, progress) => ({ event: 'progress_update', data: { status: 'ASSETS_GENERATING', progress, current_stage: 'images', estimated_remaining: null, units_done: done, units_total: total } });
  let s = fold([stage('SCRIPT_GENERATING', 0, 'INITIALIZED'), stage('ASSETS_GENERATING', 8, 'SCRIPT_GENERATING')]);
  assert.equal(s.units, null);
  s = fold([units(1, 17, 13), units(2, 17, 16)], s);
  assert.deepEqual(s.units, { done: 2, total: 17 });
  // An update of the same stage without a count keeps it; a taken-over run re-enters the stage and keeps it.
  s = fold([update('ASSETS_GENERATING', 17), stage('ASSETS_GENERATING', 17, 'ASSETS_GENERATING')], s);
  assert.deepEqual(s.units, { done: 2, total: 17 });
  assert.equal(s.takenOver, true);
  // Malformed counts are no count.
  for (const [done, total] of [[3, 2], [-1, 5], [1, 0], [1.5, 3], ['1', 3], [null, 3]]) {
    assert.equal(fold([units(done, total, 20)], initialState('p')).units, null, `${done}/${total}`);
  }
  s = fold([stage('RENDERING', 60, 'ASSETS_GENERATING')], s);
  assert.equal(s.units, null, 'another stage clears it');
  s = fold([stage('ASSETS_GENERATING', 8, 'SCRIPT_GENERATING'), units(5, 17, 30)], initialState('p'));
  assert.deepEqual(fold([{ event: 'complete', data: { status: 'CANCELLED', youtube_url: null } }], s).units, null, 'the end clears it');
  // A snapshot carries it while a stage runs, and nothing else.
  s = fold([{ event: 'snapshot', data: { status: 'ASSETS_GENERATING', progress: 40, current_stage: 'images', units_done: 9, units_total: 17, last_event_id: 'e:4', recovered: true } }], initialState('p'));
  assert.deepEqual(s.units, { done: 9, total: 17 });
  s = fold([{ event: 'snapshot', data: { status: 'QUEUED', progress: 0, current_stage: 'q', units_done: 9, units_total: 17, last_event_id: 'e:5', recovered: true } }], s);
  assert.equal(s.units, null);
});

test('a stage entered again after a later one began: the later ones are pending again, its duration anew', () => {
  const s = fold([
    stage('SCRIPT_GENERATING', 5, 'INITIALIZED', '2025-10-19T10:00:00Z'),
    stage('ASSETS_GENERATING', 30, 'SCRIPT_GENERATING', '2025-10-19T10:00:03Z'),
    // A script task ran again (redelivered after its worker died).
    stage('SCRIPT_GENERATING', 5, 'INITIALIZED', '2025-10-19T10:00:10Z'),
  ]);
  assert.equal(s.stages.SCRIPT_GENERATING.outcome, 'running');
  assert.equal(s.stages.SCRIPT_GENERATING.startedAt, '2025-10-19T10:00:10Z');
  assert.equal(s.stages.ASSETS_GENERATING.outcome, 'pending', 'not "done" next to the stage before it running');
  assert.equal(s.stages.ASSETS_GENERATING.durationMs, null);
  assert.equal(s.progress, 30, 'progress never goes back');
  const t = fold([stage('ASSETS_GENERATING', 30, 'SCRIPT_GENERATING', '2025-10-19T10:00:12Z')], s);
  assert.equal(t.stages.SCRIPT_GENERATING.durationMs, 2000, 'timed from its new start');
  assert.equal(t.stages.ASSETS_GENERATING.startedAt, '2025-10-19T10:00:12Z');
});
