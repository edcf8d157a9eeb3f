// The wire contract (v1), server → client, as TypeScript types. A test derives types
// from the live hub's /api/v1/schema/events.json and checks both ways that these
// follow it, so a contract change the client does not follow fails a test.

/** The five stages of a generation job, in order. */
export type Stage =
  | 'SCRIPT_GENERATING'
  | 'ASSETS_GENERATING'
  | 'RENDERING'
  | 'THUMBNAIL_GENERATING'
  | 'UPLOADING';
export type LogLevel = 'INFO' | 'WARNING' | 'ERROR';
export type FinalStatus = 'COMPLETED' | 'FAILED';

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

export interface SnapshotData {
  /** A stage while running, COMPLETED or FAILED at the end; null before any event. */
  status?: Stage | FinalStatus | (string & {}) | null;
  progress: number;
  /** Human description of the current step. */
  current_stage?: string | null;
  estimated_remaining?: number | null;
  last_event_id?: string | null;
  updated_at?: string | null;
  youtube_url?: string | null;
  recovered: boolean;
}

export interface ProgressUpdateData {
  status: Stage;
  progress: number;
  current_stage: string;
  estimated_remaining?: number | null;
  timestamp?: string | null;
}

export interface StageChangeData {
  /** The stage before; null, or "INITIALIZED" (the state before the first stage). */
  previous_stage?: Stage | 'INITIALIZED' | null;
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
  error_code: string;
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

/** `broker_status`: whether the hub reaches its broker (Redis); sent when that changes. */
export interface BrokerStatusData {
  available: boolean;
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
  | FrameOf<'connected', ConnectedData>
  | FrameOf<'snapshot', SnapshotData>
  | FrameOf<'progress_update', ProgressUpdateData>
  | FrameOf<'stage_change', StageChangeData>
  | FrameOf<'log', LogData>
  | FrameOf<'error', ErrorData>
  | FrameOf<'complete', CompleteData>
  | FrameOf<'ping', TimestampData>
  | FrameOf<'pong', TimestampData>
  | FrameOf<'broker_status', BrokerStatusData>;

export type EventName = Frame['event'];
