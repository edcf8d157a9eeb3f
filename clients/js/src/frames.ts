// The wire contract (v1), server → client, as TypeScript types. A test derives types
// from the live hub's /api/v1/schema/events.json and checks both ways that these
// follow it, so a contract change the client does not follow fails a test. The closed
// sets (stages, statuses, levels, error codes) come from the contract files through the
// generated contract.ts, so they cannot drift from the hub either.

import type { ErrorCode, SubscriptionErrorCode, FINAL_STATUSES, LOG_LEVELS, PreviousStage, QUEUED, STAGES } from './contract.js';

/** A value a newer hub may send that this version of the client does not know: a new
 * status (`ProgressState.status`) or error code (`error_code`, `JobError.code`), the
 * fields that were open strings before; fields that were closed types keep them. At run
 * time it is the hub's string, as sent; its type is apart from every literal, so that a
 * typo (`status === 'COMPLETE'`) fails to compile instead of being silently false. Read
 * it as a string on purpose: `String(value)` or `value as string`. Only a type: there is
 * no such value to import. */
export declare enum UnknownValue {
  FromANewerHub = '\u0000unknown',
}

/** The stages of a generation job (`STAGES` holds them in order). */
export type Stage = (typeof STAGES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];
/** How a run ends (`complete`). */
export type FinalStatus = (typeof FINAL_STATUSES)[number];
/** A run accepted, waiting for a worker. */
export type Queued = typeof QUEUED;
/** Every status a project's run can have. */
export type Status = Queued | Stage | FinalStatus;
export type { ErrorCode, PreviousStage, SubscriptionErrorCode };

/** `connected` on a project's endpoint. */
export interface ConnectedData {
  project_id: string;
  timestamp: string;
  /** Seconds between the hub's `ping` frames. */
  heartbeat_interval: number;
  /** A `last_event_id` was given. */
  resumed: boolean;
  /** Every event after the position follows; false when the hub cannot promise it. */
  recovered: boolean;
}

/** `connected` on the multiplexed endpoint (`/api/v1/progress`): no project; each
 * subscription then says `subscribed` (docs/PROTOCOL.md, "One connection, many
 * projects"). This client watches one project per link and never receives it. */
export interface MultiplexConnectedData {
  timestamp: string;
  heartbeat_interval: number;
}

/** A subscription on the multiplexed endpoint began (its project's `connected`). */
export interface SubscribedData {
  resumed: boolean;
  recovered: boolean;
}

/** A tag subscription's `subscribed`: how many `project_state` frames its snapshot holds. */
export interface TagSubscribedData {
  projects: number;
}

/** A tag subscription's view of one project (the frame also names `project_id` and
 * `tag` at its top level): what `GET /api/v1/projects/{id}` answers. */
export interface ProjectStateData extends Omit<SnapshotData, 'recovered'> {
  project_id: string;
  tags: string[];
}

/** A subscription the multiplexed endpoint refused; the connection goes on. */
export interface SubscriptionErrorData {
  code: SubscriptionErrorCode | UnknownValue;
  message: string;
}

export interface SnapshotData {
  /** QUEUED, a stage while running, COMPLETED, FAILED or CANCELLED at the end; null before any
   * event. The hub's schema types it as a string: the state (`ProgressState.status`)
   * holds it narrowed to `Status | UnknownValue`. */
  status?: string | null;
  progress: number;
  /** Human description of the current step. */
  current_stage?: string | null;
  estimated_remaining?: number | null;
  last_event_id?: string | null;
  updated_at?: string | null;
  youtube_url?: string | null;
  /** The job of the current run (from QUEUED on). */
  job_id?: string | null;
  /** While QUEUED: the run's place in the queue (1: next). */
  queue_position?: number | null;
  /** While the stage runs parallel units (ASSETS 37/120): how many are done, of how many. */
  units_done?: number | null;
  units_total?: number | null;
  recovered: boolean;
}

/** `GET /api/v1/projects/{id}`: the snapshot's fields (without `recovered`), the
 * project, and how many connections watch it now over every hub (a WebSocket or SSE
 * stream, or one subscription of a multiplexed connection, counts one). */
export interface ProjectStateBody extends Omit<SnapshotData, 'recovered'> {
  project_id: string;
  watchers: number;
  /** A run under way that has published nothing for longer than its stage's bound (the
   * hub's `--stall-after` until measured from past runs), or whose worker is lost. */
  stalled: boolean;
  /** Why, when `stalled` is true. */
  stall_reason?: StallReason;
}

export interface ProgressUpdateData {
  status: Stage | Queued;
  progress: number;
  current_stage: string;
  estimated_remaining?: number | null;
  /** With QUEUED: the job accepted, and its place in the queue (1: next). */
  job_id?: string | null;
  queue_position?: number | null;
  /** While the stage runs parallel units (ASSETS 37/120): how many are done, of how
   * many; both or neither. A stage_change to another stage ends them. */
  units_done?: number | null;
  units_total?: number | null;
  timestamp?: string | null;
}

export interface StageChangeData {
  /** The stage before; null, or "INITIALIZED" (the state before the first stage). */
  previous_stage?: PreviousStage | null;
  current_stage: Stage;
  progress: number;
  timestamp?: string | null;
}

export interface LogData {
  level: LogLevel;
  message: string;
  timestamp?: string | null;
}

export interface ErrorData {
  /** A code of the hub's error catalog, e.g. GEMINI_API_ERROR. */
  error_code: ErrorCode | UnknownValue;
  message: string;
  stage: Stage;
  retry_count?: number;
  max_retries?: number;
  is_retryable?: boolean | null;
  details?: Record<string, unknown> | null;
  solutions?: string[] | null;
  trace_id?: string | null;
  timestamp?: string | null;
}

export interface CompleteData {
  status: FinalStatus;
  youtube_url?: string | null;
  timestamp?: string | null;
}

export interface TimestampData {
  timestamp: string;
}

/** The hub's broker (Redis) went away (`available: false`: live updates pause, the
 * connection stays) or came back. */
export interface BrokerStatusData {
  available: boolean;
  timestamp: string;
}

/** Why a run is stalled: `silent` (nothing published for longer than its stage's
 * bound) or `worker_lost` (the hub's own job queue saw its worker's lease run
 * out). */
export type StallReason = 'silent' | 'worker_lost';

/** The project's running job went silent (`stalled: true`) or published again
 * (`false`). The hub's own frame: no `id`, not in the history. */
export interface StalledData {
  stalled: boolean;
  reason: StallReason;
  /** When the run last published (its `updated_at`). */
  since: string;
  timestamp: string;
}

interface FrameOf<E extends string, D> {
  event: E;
  data: D;
  /** `<epoch>:<seq>`, on events of the hub's publish path: the resume position. */
  id?: string;
}

/** Every frame the hub sends. Unknown top-level fields are ignored. */
export type Frame =
  | FrameOf<'connected', ConnectedData | MultiplexConnectedData>
  | FrameOf<'snapshot', SnapshotData>
  | FrameOf<'progress_update', ProgressUpdateData>
  | FrameOf<'stage_change', StageChangeData>
  | FrameOf<'log', LogData>
  | FrameOf<'error', ErrorData>
  | FrameOf<'complete', CompleteData>
  | FrameOf<'broker_status', BrokerStatusData>
  | FrameOf<'stalled', StalledData>
  | FrameOf<'ping', TimestampData>
  | FrameOf<'pong', TimestampData>
  | FrameOf<'subscribed', SubscribedData | TagSubscribedData>
  | FrameOf<'unsubscribed', Record<string, unknown>>
  | FrameOf<'subscription_error', SubscriptionErrorData>
  | FrameOf<'project_state', ProjectStateData>;

export type EventName = Frame['event'];
