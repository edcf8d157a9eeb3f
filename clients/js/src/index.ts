// progress-hub-client: watch a progress-hub project from a browser or Node ≥ 20.
export { watchProject, ProgressHubError } from './watch.js';
export type { Watch, WatchOptions, Connection, Done, Transport } from './watch.js';
export { reduce, initialState } from './state.js';
export { STAGES, FINAL_STATUSES, QUEUED, LOG_LEVELS } from './contract.js';
export type { ProgressState, StageInfo, LogEntry, JobError, Units } from './state.js';
export type * from './frames.js';
