// One project's watcher: the decisions are machine.ts's pure `step`; the connection
// (links, timers, getToken, the probe) is run by connection.ts; this file runs the rest
// of the effects (the project's state look-up, callbacks, `done`) and feeds back what
// happened. Every reconnect resumes from the last event id.

import { connect, ProgressHubError, type Connection, type Transport } from './connection.js';
import { createFeed } from './feed.js';
import type { FinalStatus, Frame, SnapshotData } from './frames.js';
import { start, step, type Effect, type Input, type Machine } from './machine.js';
import { initialState, type ProgressState } from './state.js';

export { ProgressHubError };
export type { Connection, Transport };

export interface Done {
  /** How the run ended, as the `complete` said: an end status a newer hub added (a
   * status this version does not know) ends the run too and is passed as sent. */
  status: FinalStatus;
  youtubeUrl?: string;
}

export interface WatchOptions {
  /** Access token (hub with --auth-secret), sent as `?token=`. */
  token?: string;
  /** Gives a fresh token: called before the current one expires (sent in-band on a
   * WebSocket), on close 4401, and on HTTP 401. */
  getToken?: () => Promise<string>;
  /** Resume after this event id (e.g. `state.lastEventId` stored earlier). */
  lastEventId?: string;
  /** `auto` (default): WebSocket, and SSE when the WebSocket is blocked. */
  transport?: 'auto' | Transport;
  /** A WebSocket class, for runtimes without a global one (e.g. the `ws` package). */
  WebSocket?: typeof WebSocket;
  /** Every frame but ping/pong, in order, once. */
  onEvent?: (frame: Frame) => void;
  onState?: (state: ProgressState) => void;
  onConnection?: (c: Connection) => void;
  /** Keep watching after `complete` (a next run, for a monitor page). Default false. */
  stayOpen?: boolean;
  /** Log lines kept in `state.logs` (the newest). Default 500. */
  maxLogs?: number;
  /** Joining mid-run without a position, read the project's whole history (when the
   * hub still has it) so logs and stage times are complete. Default true. */
  backfill?: boolean;
  /** Reconnect delays: `initialMs * 2^attempt`, capped at `maxMs`, jittered to 50–100%.
   * Defaults 500 and 30000. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Refresh the token in-band before it expires (WebSocket). Default true. */
  refreshInBand?: boolean;
}

export interface Watch extends AsyncIterable<Frame> {
  readonly state: ProgressState;
  readonly connection: Connection;
  /** Resolves on `complete` (or a finished snapshot); rejects with ProgressHubError. */
  readonly done: Promise<Done>;
  close(): void;
}

export function watchProject(baseUrl: string, projectId: string, options: WatchOptions = {}): Watch {
  const o = options;
  const base = baseUrl.replace(/\/+$/, '') + `/api/v1/projects/${encodeURIComponent(projectId)}/progress`;

  let m: Machine = start(
    {
      mode: o.transport ?? 'auto', webSocket: !!(o.WebSocket ?? globalThis.WebSocket), renewable: !!o.getToken, stayOpen: !!o.stayOpen,
      backfill: o.backfill ?? true, initialMs: o.backoff?.initialMs ?? 500, maxMs: o.backoff?.maxMs ?? 30000,
      maxLogs: o.maxLogs ?? 500,
    },
    initialState(projectId, o.lastEventId ?? null),
  );
  const feed = createFeed();

  let resolveDone!: (d: Done) => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<Done>((res, rej) => { resolveDone = res; rejectDone = rej; });
  done.catch(() => {}); // an unobserved rejection must not crash a Node process

  const shell = connect(
    {
      link: () => m,
      feed: feedIn,
      url(kind, token) {
        const q = new URLSearchParams();
        if (kind === 'websocket' && m.state.lastEventId) q.set('last_event_id', m.state.lastEventId);
        if (token) q.set('token', token);
        const qs = q.toString();
        return qs ? `${base}?${qs}` : base;
      },
      position: () => m.state.lastEventId,
    },
    o,
  );

  /** Feeds the machine and runs what it decides. */
  function feedIn(input: Input) {
    const [next, effects] = step(m, input);
    m = next;
    effects.forEach(run);
  }

  function run(e: Effect) {
    switch (e.do) {
      case 'look-up':
        return shell.aside(
          async (signal, token) => {
            const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
            const res = await fetch(base.replace(/\/progress$/, ''), { headers, signal, cache: 'no-store' });
            return res.ok ? ((await res.json()) as SnapshotData) : null;
          },
          (snapshot) => snapshot && feedIn({ on: 'looked-up', snapshot }),
          () => { /* unknown: live events will tell */ },
        );
      case 'emit':
        o.onEvent?.(e.frame);
        return feed.push(e.frame);
      case 'state':
        return o.onState?.(m.state);
      case 'settle': {
        const status = m.state.status as FinalStatus;
        return resolveDone(m.state.youtubeUrl ? { status, youtubeUrl: m.state.youtubeUrl } : { status });
      }
      case 'stop': {
        const err = shell.stop();
        if (!m.finished) rejectDone(err ?? new ProgressHubError('CLOSED', 'closed before the job completed'));
        return feed.end(err);
      }
      default:
        return shell.run(e);
    }
  }

  run({ do: 'attempt' });
  return {
    get state() { return m.state; },
    get connection() { return shell.connection; },
    done,
    close: () => feedIn({ on: 'close' }),
    [Symbol.asyncIterator]: feed.iterate,
  };
}
