// The job state a watcher holds, and the one pure function that folds a frame into it.
// No I/O here: the connection (watch.ts) feeds frames, this decides what they mean.

import { QUEUED, STAGES } from './contract.js';
import type { ErrorCode, Frame, LogLevel, ProgressUpdateData, SnapshotData, Stage, StallReason, Status, UnknownValue } from './frames.js';

export interface StageInfo {
  /** ISO time the stage began (null when only known from a snapshot). */
  startedAt: string | null;
  endedAt: string | null;
  /** endedAt - startedAt, when both are known. */
  durationMs: number | null;
  /** `cancelled`: the stage under way when the job was cancelled (`CANCELLED`). */
  outcome: 'pending' | 'running' | 'done' | 'failed' | 'cancelled';
}

export interface LogEntry {
  /** The event id (null for legacy events published without one). */
  id: string | null;
  level: LogLevel;
  message: string;
  timestamp: string | null;
}

/** The newest `error` frame, structured. */
export interface JobError {
  code: ErrorCode | UnknownValue;
  message: string;
  stage: Stage;
  retryCount: number | null;
  maxRetries: number | null;
  isRetryable: boolean | null;
  details: Record<string, unknown>;
  solutions: string[];
  traceId: string | null;
  timestamp: string | null;
}

export interface Units {
  done: number;
  total: number;
}

export interface ProgressState {
  projectId: string;
  /** QUEUED (a run accepted, waiting for a worker), the running stage, COMPLETED,
   * FAILED or CANCELLED (stopped on request); null before anything is known. A status a newer hub sends that this client
   * does not know is kept as sent, typed `UnknownValue`. */
  status: Status | UnknownValue | null;
  /** The job of the current run, when the hub says (from QUEUED on). */
  jobId: string | null;
  /** While QUEUED: the run's place in the queue (1: next); null otherwise. */
  queuePosition: number | null;
  /** While the stage runs parallel units (ASSETS 37/120): how many are done, of how
   * many (`units_done`/`units_total`); null otherwise (a change to another stage, the
   * run's end or a new run clears it). */
  units: Units | null;
  /** 0–100; never goes backwards within a run. */
  progress: number;
  /** Human description of the current step (from the newest progress_update or
   * snapshot); null right after a stage change, until the next update. */
  currentStage: string | null;
  /** Seconds left, as the job estimates; null when unknown or finished. */
  estimatedRemaining: number | null;
  stages: Record<Stage, StageInfo>;
  /** The newest `maxLogs` log lines, each once, in order. */
  logs: LogEntry[];
  error: JobError | null;
  youtubeUrl: string | null;
  /** The resume position: the newest event id seen. */
  lastEventId: string | null;
  /** False once the hub said it could not replay what was missed (history lost): the
   * state was rebuilt from a snapshot and earlier log lines are gone. */
  recovered: boolean;
  /** True once another worker took the run over (its worker died, stalled or stopped):
   * the hub says so with a `stage_change` whose `previous_stage` is its `current_stage`
   * (the run goes on in the stage it was in). For the rest of the run. */
  takenOver: boolean;
  updatedAt: string | null;
  /** The hub's broker (Redis): `down` from a `broker_status` saying it is unavailable
   * (live updates are paused; the hub still holds the connection) until one says it is
   * back. Not part of a run: a new run does not reset it. */
  broker: 'up' | 'down';
  /** The running job went silent for longer than the hub's bound (a `stalled` frame),
   * why and since when; `null` again once it publishes (or a snapshot starts over). */
  stalled: { reason: StallReason; since: string } | null;
}

const isStage = (s: unknown): s is Stage => STAGES.includes(s as Stage);
/** A run's end: a `complete` status. The contract's statuses are QUEUED, the stages and
 * the `complete` statuses (FINAL_STATUSES), so any other status is an end a newer hub
 * added (issue 25's CANCELLED): an older client must see the run end all the same. */
export const isFinal = (s: unknown): boolean => typeof s === 'string' && !!s && s !== QUEUED && !isStage(s);
/** A status from the wire: the contract's, or a newer hub's kept as sent. */
const status = (s: string | null | undefined): Status | UnknownValue | null => (s ?? null) as Status | UnknownValue | null;

function freshStages(): Record<Stage, StageInfo> {
  const stages = {} as Record<Stage, StageInfo>;
  for (const s of STAGES) stages[s] = { startedAt: null, endedAt: null, durationMs: null, outcome: 'pending' };
  return stages;
}

export function initialState(projectId: string, lastEventId: string | null = null): ProgressState {
  return {
    projectId, status: null, progress: 0, currentStage: null, estimatedRemaining: null,
    stages: freshStages(), logs: [], error: null, youtubeUrl: null, lastEventId,
    recovered: true, takenOver: false, updatedAt: null, jobId: null, queuePosition: null, units: null, broker: 'up',
    stalled: null,
  };
}

function end(info: StageInfo, at: string | null, outcome: StageInfo['outcome']): StageInfo {
  const endedAt = info.endedAt ?? at;
  const ms = info.startedAt && endedAt ? Date.parse(endedAt) - Date.parse(info.startedAt) : NaN;
  return { ...info, endedAt, durationMs: ms >= 0 ? ms : null, outcome };
}

/** Marks `stage` running from `at`; the stage that was running, and any skipped before
 * `stage`, are done. A stage entered again after a later one began (a task that ran
 * again: the job went back) starts anew, and the later stages are pending again: no
 * stage shows "in progress" next to a later one "done", nor a duration counted from
 * its first start. */
function enter(stages: Record<Stage, StageInfo>, stage: Stage, at: string | null) {
  const next = { ...stages };
  const idx = STAGES.indexOf(stage);
  const wentBack = STAGES.some((s, i) => i > idx && next[s].outcome !== 'pending');
  STAGES.forEach((s, i) => {
    const info = next[s];
    if (s === stage) {
      if (info.outcome !== 'running' || wentBack) {
        const startedAt = info.outcome === 'done' || wentBack ? at : info.startedAt ?? at;
        next[s] = { ...info, startedAt, endedAt: null, durationMs: null, outcome: 'running' };
      }
    } else if (i > idx && wentBack) {
      next[s] = { startedAt: null, endedAt: null, durationMs: null, outcome: 'pending' };
    } else if (info.outcome === 'running' || (i < idx && info.outcome === 'pending')) {
      next[s] = end(info, info.outcome === 'running' ? at : null, 'done');
    }
  });
  return next;
}

const finite = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n);
/** Progress never lowered, and only moved by a finite number. */
const raise = (p: number, n: unknown): number => (finite(n) ? Math.max(p, n) : p);
/** Only http(s) links: a legacy publisher can send any string, and pages put it in an href. */
function link(u: unknown): string | null {
  try {
    return typeof u === 'string' && /^https?:$/.test(new URL(u).protocol) ? u : null;
  } catch {
    return null;
  }
}
/** `units_done` of `units_total` when the frame gives both (whole, 0 <= done <= total). */
function units(d: { units_done?: unknown; units_total?: unknown }): Units | null {
  const { units_done: done, units_total: total } = d;
  return Number.isInteger(done) && Number.isInteger(total) && (done as number) >= 0 && (done as number) <= (total as number) && (total as number) > 0
    ? { done: done as number, total: total as number }
    : null;
}
/** `next` is a stage before the running one: the job started over. */
const earlier = (s: ProgressState, next: unknown): boolean =>
  isStage(next) && isStage(s.status) && STAGES.indexOf(next) < STAGES.indexOf(s.status);

/** A finished snapshot of another job than the unfinished run the state follows: an
 * older run's end (e.g. a broker restored from an older save), not this run's. */
export function staleEnd(s: ProgressState, d: SnapshotData): boolean {
  return !!s.jobId && !!d.job_id && d.job_id !== s.jobId && !isFinal(s.status) && isFinal(d.status);
}

/** Folds one frame into the state; returns the same object when nothing changed. */
export function reduce(state: ProgressState, frame: Frame, maxLogs = 500): ProgressState {
  let s = state;
  const t = (frame.data as { timestamp?: unknown } | null | undefined)?.timestamp;
  const at: string | null = typeof t === 'string' && t ? t : null;
  // The first stage event after a finished run starts a new run, from its own progress;
  // so does one for an earlier stage once the history was lost (the job started over),
  // and QUEUED for another job than the one queued (a new run was accepted).
  if (frame.event === 'progress_update' || frame.event === 'stage_change') {
    const next = frame.event === 'progress_update' ? frame.data.status : frame.data.current_stage;
    // (A missing job id is null, as the state holds it.)
    const queued = next === QUEUED && !(s.status === QUEUED && s.jobId === ((frame.data as ProgressUpdateData).job_id ?? null));
    if (isFinal(s.status) || queued || (!s.recovered && earlier(s, next))) {
      s = { ...initialState(s.projectId, s.lastEventId), recovered: s.recovered, broker: s.broker };
    }
  }
  switch (frame.event) {
    case 'connected':
      if ('recovered' in frame.data && !frame.data.recovered) s = { ...s, recovered: false };
      break;
    case 'snapshot': {
      const d = frame.data;
      const recovered = s.recovered && d.recovered !== false;
      // Nothing known (history lost and nothing since), or an older job's end: keep the
      // run being followed (from the snapshot's position on, if it has one).
      if ((d.status == null && !d.last_event_id) || staleEnd(s, d)) {
        s = { ...s, recovered, lastEventId: d.last_event_id ?? s.lastEventId };
        break;
      }
      // Otherwise the whole state, anew: after a lost history this is all that is known.
      // Within the same run (not final, not an earlier stage) progress is not lowered.
      const sameRun = !isFinal(d.status) && !isFinal(s.status) && !earlier(s, d.status) && isStage(s.status);
      const n = initialState(s.projectId, d.last_event_id ?? null);
      let stages = n.stages;
      if (isStage(d.status)) stages = enter(stages, d.status, null);
      else if (d.status === 'COMPLETED') for (const st of STAGES) stages[st] = { ...stages[st], outcome: 'done' };
      const p = finite(d.progress) ? d.progress : 0;
      s = {
        ...n, stages, status: status(d.status), progress: sameRun ? raise(s.progress, p) : p,
        jobId: d.job_id ?? null, queuePosition: d.status === QUEUED ? d.queue_position ?? null : null, broker: s.broker,
        units: isStage(d.status) ? units(d) : null,
        currentStage: d.current_stage ?? null,
        estimatedRemaining: isFinal(d.status) ? null : d.estimated_remaining ?? null,
        youtubeUrl: link(d.youtube_url), recovered, takenOver: sameRun && s.takenOver,
        updatedAt: d.updated_at ?? null,
      };
      break;
    }
    case 'progress_update': {
      const d = frame.data;
      s = {
        ...s, status: d.status, progress: raise(s.progress, d.progress), currentStage: d.current_stage,
        estimatedRemaining: d.estimated_remaining ?? null, jobId: d.job_id ?? s.jobId,
        queuePosition: d.status === QUEUED ? d.queue_position ?? null : null,
        // A count given stands; an update of the same stage without one keeps it.
        units: !isStage(d.status) ? null : units(d) ?? (d.status === s.status ? s.units : null),
        stages: isStage(d.status) && s.stages[d.status].outcome !== 'running' ? enter(s.stages, d.status, at) : s.stages,
      };
      break;
    }
    case 'stage_change': {
      const d = frame.data;
      const takenOver = s.takenOver || (isStage(d.current_stage) && d.previous_stage === d.current_stage);
      // A stage's units end with it; a run taking it over goes on in the same stage.
      const sameStage = d.previous_stage === d.current_stage && d.current_stage === s.status;
      s = { ...s, status: d.current_stage, progress: raise(s.progress, d.progress), currentStage: null, takenOver, queuePosition: null, units: sameStage ? s.units : null, stages: isStage(d.current_stage) ? enter(s.stages, d.current_stage, at) : s.stages };
      break;
    }
    case 'log': {
      const d = frame.data;
      const logs = s.logs.concat({ id: frame.id ?? null, level: d.level, message: d.message, timestamp: at });
      s = { ...s, logs: logs.length > maxLogs ? logs.slice(logs.length - maxLogs) : logs };
      break;
    }
    case 'error': {
      const d = frame.data;
      s = {
        ...s,
        error: {
          code: d.error_code, message: d.message, stage: d.stage, retryCount: d.retry_count ?? null,
          maxRetries: d.max_retries ?? null, isRetryable: d.is_retryable ?? null, details: d.details ?? {},
          solutions: d.solutions ?? [], traceId: d.trace_id ?? null, timestamp: at,
        },
      };
      break;
    }
    case 'complete': {
      const d = frame.data;
      const ok = d.status === 'COMPLETED';
      // Stopped on request: the stage under way did not fail, and no error stands.
      const cancelled = d.status === 'CANCELLED';
      const stages = { ...s.stages };
      for (const st of STAGES) {
        if (stages[st].outcome === 'running') stages[st] = end(stages[st], at, ok ? 'done' : cancelled ? 'cancelled' : 'failed');
        else if (ok) stages[st] = { ...stages[st], outcome: 'done' };
      }
      s = {
        ...s, stages, status: d.status, progress: ok ? 100 : s.progress, estimatedRemaining: null, units: null,
        youtubeUrl: link(d.youtube_url), error: ok || cancelled ? null : s.error,
      };
      break;
    }
    case 'broker_status': {
      // About the hub, not the run: no position, no update time.
      const broker = frame.data.available === false ? 'down' : 'up';
      return broker === s.broker ? s : { ...s, broker };
    }
    case 'stalled': {
      // About the run's silence, not an event of it: no position, no update time.
      const d = frame.data;
      if (!d.stalled) return s.stalled ? { ...s, stalled: null } : s;
      return { ...s, stalled: { reason: d.reason, since: d.since } };
    }
    default:
      return s;
  }
  // Any event of the run (or a snapshot, which starts over) ends a silence.
  if (s.stalled && frame.event !== 'connected') s = { ...s, stalled: null };
  if (frame.id) s = { ...s, lastEventId: frame.id };
  if (at && frame.event !== 'connected') s = { ...s, updatedAt: at };
  return s;
}
