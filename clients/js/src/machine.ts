// Every decision of a watcher, as one pure function: `step(machine, input)` returns the
// next machine and the effects to run. No timers, sockets or promises here (watch.ts
// runs the effects and feeds back what happened), so each reconnect decision is a unit
// test (test/machine.test.mjs), as the reducer's are.
//
// Phases:
//   connecting   a link is dialed; no `connected` yet
//   open         the hub said `connected`; frames flow live
//   backfilling  joined mid-run: the history is read from its start until the
//                snapshot's position (dialing, or open); `done` waits for it
//   waiting      no link: a delay, a token (getToken) or a probe (why a WebSocket was
//                refused) is awaited before the next attempt
//   stopped      for good: `done` settled or rejected, nothing more happens

import { reaction } from './close.js';
import type { ConnectedData, Frame, SnapshotData } from './frames.js';
import { isFinal, reduce, staleEnd, type ProgressState } from './state.js';

export type Transport = 'websocket' | 'sse';
export type PhaseName = 'connecting' | 'open' | 'backfilling' | 'waiting' | 'stopped';

export interface Config {
  /** `auto` (WebSocket, SSE when the upgrade is blocked) or one transport only. */
  mode: 'auto' | Transport;
  /** A WebSocket class is at hand. */
  webSocket: boolean;
  /** getToken was given: a 401 or 4401 renews the token instead of stopping. */
  renewable: boolean;
  stayOpen: boolean;
  /** Joining mid-run, read the whole history once. */
  backfill: boolean;
  initialMs: number;
  maxMs: number;
  maxLogs: number;
}

/** Why a watch stopped for good (watch.ts makes it a ProgressHubError). */
export interface Failure {
  code: string;
  message: string;
  status?: number;
}

/** What a renewed token is for: dial (it had expired before an attempt), reconnect at
 * once (4401), or after a backoff (HTTP 401). */
type Then = 'dial' | 'now' | 'backoff';

export interface Machine {
  readonly phase: PhaseName;
  readonly config: Config;
  /** The reduced job state (state.ts). */
  readonly state: ProgressState;
  readonly transport: Transport;
  /** Failed attempts since the last `connected`. */
  readonly attempt: number;
  /** The current link said `connected` (a refused handshake closes before it does). */
  readonly greeted: boolean;
  /** A token was fetched since the last `connected`: a 401 now is final. */
  readonly renewed: boolean;
  /** The last `connected` resumed from a position (a resume is never backfilled). */
  readonly resumed: boolean;
  /** The backfill was tried (or is off): never twice. */
  readonly backfilled: boolean;
  /** While backfilling: the snapshot's position, which the replay must reach. */
  readonly until: string | null;
  /** From the backfill decision to its first replayed event: its `connected` and a
   * trimmed start's snapshot do not make the state "not recovered" (nothing the watcher
   * had seen was lost). */
  readonly keepRecovered: boolean;
  /** The backfill's own `connected` is not news to the watcher. */
  readonly quiet: boolean;
  /** While waiting for a token: what it is for. */
  readonly then: Then | null;
  /** `done` resolved. */
  readonly finished: boolean;
  /** Set when stopped on an error. */
  readonly failure: Failure | null;
}

export type Input =
  /** Time for an attempt (start, or a wait ended); `expired`: the token is known to
   * have expired. */
  | { on: 'attempt'; expired: boolean }
  /** getToken settled. */
  | { on: 'token'; ok: boolean }
  /** A frame other than ping/pong. */
  | { on: 'frame'; frame: Frame }
  /** The link ended: its close code, or none. */
  | { on: 'ended'; code?: number }
  /** The hub refused over HTTP (SSE, or the probe after a refused WebSocket). */
  | { on: 'refused'; status: number; code?: string; message?: string }
  /** The probe got no answer. */
  | { on: 'unreachable' }
  /** The link was silent for 2.5 heartbeats: dead, though the OS has not noticed. */
  | { on: 'idle' }
  /** The project's state, read with GET after a resume that knew nothing. */
  | { on: 'looked-up'; snapshot: SnapshotData }
  /** close() */
  | { on: 'close' };

export type Effect =
  /** Make an attempt: feed back `attempt` with the token's expiry. */
  | { do: 'attempt' }
  /** Open a link (dropping any other) on `transport`, from `state.lastEventId`. */
  | { do: 'dial' }
  /** Drop the link; feed back `attempt` after a delay drawn from [minMs, maxMs]. */
  | { do: 'wait'; minMs: number; maxMs: number }
  /** Call getToken; feed back `token`. */
  | { do: 'renew' }
  /** Ask the same URL over plain HTTP why the WebSocket failed; feed back `refused` or
   * `unreachable`. */
  | { do: 'probe' }
  /** Read the project's state; feed back `looked-up` if it answers. */
  | { do: 'look-up' }
  /** The hub said `connected`: the link is open (heartbeat, clock, token refresh). */
  | { do: 'opened'; data: ConnectedData }
  /** Deliver a frame to onEvent and the iterators. */
  | { do: 'emit'; frame: Frame }
  /** The state is new (onState). */
  | { do: 'state' }
  /** Resolve `done` from the state. */
  | { do: 'settle' }
  /** Stop for good: drop everything; reject `done` unless it resolved. */
  | { do: 'stop' };

export function start(config: Config, state: ProgressState): Machine {
  const sse = config.mode === 'sse' || (config.mode === 'auto' && !config.webSocket);
  return {
    phase: 'waiting', config, state, transport: sse ? 'sse' : 'websocket', attempt: 0, greeted: false,
    renewed: false, resumed: false, backfilled: !config.backfill, until: null, keepRecovered: false,
    quiet: false, then: null, finished: false, failure: null,
  };
}

type Step = [Machine, Effect[]];

/** Reconnect delays: `initialMs * 2^attempt` (at least `min`), capped at `maxMs`,
 * jittered to 50–100%. */
function backoff(m: Machine, min = 0): [number, number] {
  const b = Math.max(min, Math.min(m.config.maxMs, m.config.initialMs * 2 ** m.attempt));
  return [b / 2, b];
}

function wait(m: Machine, [minMs, maxMs]: [number, number]): Step {
  return [{ ...m, phase: 'waiting', greeted: false, attempt: m.attempt + 1, then: null }, [{ do: 'wait', minMs, maxMs }]];
}

function stop(m: Machine, failure: Failure | null): Step {
  return [{ ...m, phase: 'stopped', failure }, [{ do: 'stop' }]];
}

function renew(m: Machine, then: Then): Step {
  return [{ ...m, phase: 'waiting', greeted: false, then }, [{ do: 'renew' }]];
}

function dial(m: Machine): Step {
  if (m.transport === 'websocket' && !m.config.webSocket) {
    return stop(m, { code: 'NO_TRANSPORT', message: 'no WebSocket: pass one as the WebSocket option' });
  }
  return [{ ...m, phase: m.until ? 'backfilling' : 'connecting', greeted: false }, [{ do: 'dial' }]];
}

/** Event ids are `<epoch>:<seq>`: `id` is at or past `target` in the same history. */
function reached(id: string | undefined, target: string): boolean {
  if (!id) return false;
  const [e, n] = id.split(':');
  const [te, tn] = target.split(':');
  return e === te && Number(n) >= Number(tn);
}

/** Settles `done` on an input that ends the run (and stops, unless stayOpen); never
 * twice, nor while a backfill still replays earlier runs. */
function settle(m: Machine, effects: Effect[], ends: boolean): Step {
  if (!ends || m.finished || m.until) return [m, effects];
  const done: Machine = { ...m, finished: true };
  effects.push({ do: 'settle' });
  if (m.config.stayOpen) return [done, effects];
  const [stopped, more] = stop(done, null);
  return [stopped, effects.concat(more)];
}

function ended(m: Machine, code?: number): Step {
  switch (reaction(code)) {
    case 'renew':
      if (!m.config.renewable) return stop(m, { code: 'TOKEN_EXPIRED', message: 'the access token expired and no getToken was given' });
      return renew(m, 'now');
    case 'restart':
      return wait(m, [0, Math.min(1000, m.config.maxMs)]);
    case 'overloaded':
      return wait(m, backoff(m, 5000));
    case 'lost':
      // A WebSocket that failed before it spoke (as a refused handshake looks): ask over
      // plain HTTP why. The hub answers 401/403/400 with a JSON error; 400
      // UPGRADE_REQUIRED means it is fine and the upgrade was blocked on the way.
      if (m.transport === 'websocket' && !m.greeted) return [{ ...m, phase: 'waiting' }, [{ do: 'probe' }]];
  }
  return wait(m, backoff(m));
}

function refused(m: Machine, status: number, code = `HTTP_${status}`, message = `HTTP ${status}`): Step {
  if (code === 'UPGRADE_REQUIRED') {
    // The WebSocket is blocked on the way (the hub is fine): every retry would be too.
    if (m.config.mode !== 'auto') {
      return stop(m, { code, status, message: "the WebSocket upgrade is blocked on the way to the hub: use transport 'auto' or 'sse'" });
    }
    // SSE carries the same frames.
    return wait({ ...m, transport: 'sse' }, [0, 0]);
  }
  // A fresh token refused too is an error, not a loop.
  if (status === 401 && m.config.renewable && !m.renewed) return renew(m, 'backoff');
  if (status === 400 || status === 401 || status === 403 || status === 404) return stop(m, { code, message, status });
  return wait(m, backoff(m));
}

/** The events this client knows; a newer hub's other events are delivered (onEvent,
 * the iterators: every frame but ping/pong is) but change nothing and end nothing. */
const EVENTS = new Set(['connected', 'snapshot', 'progress_update', 'stage_change', 'log', 'error', 'complete', 'broker_status', 'stalled']);

function frame(m: Machine, f: Frame): Step {
  if (!EVENTS.has(f.event)) return [m, [{ do: 'emit', frame: f }]];
  const effects: Effect[] = [];
  let silent = false;
  let next = m;
  if (f.event === 'connected' && 'project_id' in f.data) {
    const d = f.data;
    silent = m.quiet;
    next = { ...m, phase: m.until ? 'backfilling' : 'open', greeted: true, renewed: false, attempt: 0, resumed: d.resumed, quiet: false };
    effects.push({ do: 'opened', data: d });
    // A recovered resume sends no snapshot: when nothing is known yet (a stored
    // position, e.g. after a page reload), ask the hub whether the run has finished.
    if (d.resumed && d.recovered && m.state.status === null && !m.until) effects.push({ do: 'look-up' });
  } else if (f.event === 'snapshot') {
    const d = f.data;
    // Joined mid-run: read the history from its start once instead, so the log and the
    // stage times are whole (the hub replays it in order, then goes on live).
    if (!m.backfilled && !m.resumed && d.last_event_id && d.recovered && !m.state.logs.length) {
      const state = { ...m.state, lastEventId: `${d.last_event_id.split(':')[0]}:0` };
      return [
        { ...m, phase: 'backfilling', state, backfilled: true, until: d.last_event_id, keepRecovered: true, quiet: true },
        [{ do: 'attempt' }],
      ];
    }
    next = { ...m, phase: 'open', until: null }; // the start was trimmed: the snapshot is the state
  }
  // The replay holds earlier runs (with their `complete`): done waits for its end.
  const caughtUp = !!next.until && reached(f.id, next.until);
  if (caughtUp) next = { ...next, phase: 'open', until: null };
  let state = reduce(m.state, f, m.config.maxLogs);
  const replay = f.event === 'connected' || f.event === 'snapshot';
  if (m.keepRecovered && replay) state = { ...state, recovered: m.state.recovered };
  else if (f.event !== 'connected') next = { ...next, keepRecovered: false };
  next = { ...next, state };
  if (!silent) effects.push({ do: 'emit', frame: f });
  effects.push({ do: 'state' });
  // What ends the run is this frame, not the state: a `complete`; a finished snapshot
  // (not an older job's end, see staleEnd); or the backfill caught up with a finished
  // snapshot's position. Any other frame of a run never ends it, whatever the state says.
  const ends = f.event === 'complete' || (f.event === 'snapshot' && isFinal(f.data.status) && !staleEnd(m.state, f.data)) || (caughtUp && isFinal(state.status));
  return settle(next, effects, ends);
}

export function step(m: Machine, input: Input): Step {
  if (m.phase === 'stopped') return [m, []];
  switch (input.on) {
    case 'close':
      return stop(m, null);
    case 'attempt':
      // A token known to be expired is renewed before dialing, not after a refusal.
      return input.expired && m.config.renewable ? renew(m, 'dial') : dial(m);
    case 'token': {
      if (!input.ok) return wait(m, backoff(m));
      const renewed = { ...m, renewed: true };
      if (m.then === 'dial') return dial(renewed);
      return wait(renewed, m.then === 'now' ? [0, 0] : backoff(m));
    }
    case 'frame':
      return frame(m, input.frame);
    case 'ended':
      return ended(m, input.code);
    case 'refused':
      return refused(m, input.status, input.code, input.message);
    case 'unreachable':
    case 'idle':
      return wait(m, backoff(m));
    case 'looked-up': {
      const d = input.snapshot;
      // It settles only when nothing is left to replay: a run that ended after the
      // position resumed from has its events (and its `complete`) still on their way,
      // which onEvent and the iterators must see; that `complete` settles then.
      if (m.until || m.state.status !== null || !isFinal(d.status) || d.last_event_id !== m.state.lastEventId) return [m, []];
      const state = reduce(m.state, { event: 'snapshot', data: { ...d, recovered: true } }, m.config.maxLogs);
      return settle({ ...m, state }, [{ do: 'state' }], true);
    }
  }
}
