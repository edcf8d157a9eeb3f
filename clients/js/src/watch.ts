// One watcher's connection life, run: the decisions are machine.ts's pure `step`; this
// file runs its effects (links, timers, getToken, the probe, callbacks, `done`) and
// feeds back what happened. Every reconnect resumes from the last event id.

import { createFeed } from './feed.js';
import type { FinalStatus, Frame, SnapshotData } from './frames.js';
import type { Link, LinkEvents } from './link.js';
import { start, step, type Effect, type Input, type Machine, type Transport } from './machine.js';
import { openSse } from './sse.js';
import { initialState, type ProgressState } from './state.js';
import { claims, expired, refreshDelay } from './token.js';
import { openWebSocket } from './websocket.js';

export type { Transport };

export interface Connection {
  status: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** Failed attempts since the last successful `connected` (0 on the first dial). */
  attempt: number;
  /** While `reconnecting`: how long until the next attempt. */
  retryInMs?: number;
  transport: Transport;
}

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

/** Why a watch stopped for good: a typed error instead of an endless retry loop. */
export class ProgressHubError extends Error {
  /** The hub's error code (FORBIDDEN, INVALID_PROJECT_ID, UNAUTHORIZED, ...) or
   * CLOSED (closed before complete), NO_TRANSPORT. */
  readonly code: string;
  /** The HTTP status, when the hub refused the request. */
  readonly status?: number;
  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = 'ProgressHubError';
    this.code = code;
    this.status = status;
  }
}

export interface Watch extends AsyncIterable<Frame> {
  readonly state: ProgressState;
  readonly connection: Connection;
  /** Resolves on `complete` (or a finished snapshot); rejects with ProgressHubError. */
  readonly done: Promise<Done>;
  close(): void;
}

/** The hub's JSON error body: `{"error":{"code","message"}}`. */
interface ErrorBody {
  error?: { code?: string; message?: string };
}

export function watchProject(baseUrl: string, projectId: string, options: WatchOptions = {}): Watch {
  const o = options;
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  const base = baseUrl.replace(/\/+$/, '') + `/api/v1/projects/${encodeURIComponent(projectId)}/progress`;

  let m: Machine = start(
    {
      mode: o.transport ?? 'auto', webSocket: !!WS, renewable: !!o.getToken, stayOpen: !!o.stayOpen,
      backfill: o.backfill ?? true, initialMs: o.backoff?.initialMs ?? 500, maxMs: o.backoff?.maxMs ?? 30000,
      maxLogs: o.maxLogs ?? 500,
    },
    initialState(projectId, o.lastEventId ?? null),
  );
  let token = o.token;
  let connection: Connection = { status: 'connecting', attempt: 0, transport: m.transport };
  let link: Link | null = null;
  /** The current link's number: news from a link let go of is ignored. */
  let gen = 0;
  /** Side requests (the refusal probe, the project's state): aborted on stop. */
  const side = new Set<AbortController>();
  let heartbeatMs = 0;
  /** The hub's clock minus ours (from `connected`): token expiry is the hub's time. */
  let skew = 0;
  const now = () => Date.now() + skew;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  const feed = createFeed();

  let resolveDone!: (d: Done) => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<Done>((res, rej) => { resolveDone = res; rejectDone = rej; });
  done.catch(() => {}); // an unobserved rejection must not crash a Node process

  function setConnection(status: Connection['status'], retryInMs?: number) {
    const { attempt, transport } = m;
    connection = retryInMs === undefined ? { status, attempt, transport } : { status, attempt, retryInMs, transport };
    o.onConnection?.(connection);
  }

  function url(ws: boolean): string {
    const q = new URLSearchParams();
    if (ws && m.state.lastEventId) q.set('last_event_id', m.state.lastEventId);
    if (token) q.set('token', token);
    const qs = q.toString();
    const u = qs ? `${base}?${qs}` : base;
    return ws ? u.replace(/^http/, 'ws') : u;
  }

  function clearTimers() {
    clearTimeout(timer);
    clearTimeout(idleTimer);
    clearTimeout(refreshTimer);
  }

  /** Lets go of the link: nothing it says later counts. */
  function drop() {
    const l = link;
    link = null;
    gen++;
    l?.close();
  }

  /** Feeds the machine and runs what it decides. */
  function feedIn(input: Input) {
    const [next, effects] = step(m, input);
    m = next;
    effects.forEach(run);
  }

  /** A request on the side of the link (aborted on stop); `then` runs unless stopped. */
  function aside<T>(request: (signal: AbortSignal) => Promise<T>, then: (v: T) => void, fail: () => void) {
    const ac = new AbortController();
    side.add(ac);
    request(ac.signal)
      .then((v) => m.phase !== 'stopped' && then(v), () => m.phase !== 'stopped' && fail())
      .finally(() => side.delete(ac));
  }

  function run(e: Effect) {
    switch (e.do) {
      case 'attempt':
        return feedIn({ on: 'attempt', expired: !!o.getToken && expired(token, now()) });
      case 'dial': {
        drop();
        const g = gen;
        const on: LinkEvents = {
          text: (t) => g === gen && onText(t),
          ended: (code) => g === gen && (ending(), feedIn({ on: 'ended', code })),
          refused: (status, body) => g === gen && (ending(), refusal(status, body)),
        };
        setConnection('connecting');
        link = m.transport === 'websocket' ? openWebSocket(WS!, url(true), on) : openSse(url(false), m.state.lastEventId, on);
        return;
      }
      case 'wait': {
        drop();
        clearTimers();
        const delay = e.minMs + Math.random() * (e.maxMs - e.minMs);
        setConnection('reconnecting', Math.round(delay));
        timer = setTimeout(() => run({ do: 'attempt' }), delay);
        return;
      }
      case 'renew':
        // A getToken that throws (rather than rejects) is a failed renewal too.
        return void Promise.resolve().then(o.getToken!).then(
          (t) => { token = t; feedIn({ on: 'token', ok: true }); },
          () => feedIn({ on: 'token', ok: false }),
        );
      case 'probe':
        return aside(
          async (signal) => { const r = await fetch(url(false), { cache: 'no-store', signal }); return [r.status, await r.json().catch(() => null)] as const; },
          ([status, body]) => refusal(status, body),
          () => feedIn({ on: 'unreachable' }),
        );
      case 'look-up':
        return aside(
          async (signal) => {
            const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
            const res = await fetch(base.replace(/\/progress$/, ''), { headers, signal, cache: 'no-store' });
            return res.ok ? ((await res.json()) as SnapshotData) : null;
          },
          (snapshot) => snapshot && feedIn({ on: 'looked-up', snapshot }),
          () => { /* unknown: live events will tell */ },
        );
      case 'opened': {
        heartbeatMs = (e.data.heartbeat_interval || 0) * 1000;
        const hubNow = Date.parse(e.data.timestamp);
        if (Number.isFinite(hubNow)) skew = hubNow - Date.now();
        setConnection('open');
        return scheduleRefresh();
      }
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
        clearTimers();
        drop();
        side.forEach((ac) => ac.abort());
        const f = m.failure;
        const err = f ? new ProgressHubError(f.code, f.message, f.status) : undefined;
        if (!m.finished) rejectDone(err ?? new ProgressHubError('CLOSED', 'closed before the job completed'));
        setConnection('closed');
        return feed.end(err);
      }
    }
  }

  /** The current link ended on its own: it and its timers are gone. */
  function ending() {
    link = null;
    gen++;
    clearTimers();
  }

  function refusal(status: number, body: unknown) {
    const err = (body as ErrorBody | null)?.error;
    feedIn({ on: 'refused', status, code: err?.code || undefined, message: err?.message || undefined });
  }

  function onText(text: string) {
    let f: Frame;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (!f || typeof f.event !== 'string') return;
    // A link silent for 2.5 heartbeats is dead even if the OS has not noticed.
    clearTimeout(idleTimer);
    const g = gen;
    if (heartbeatMs) idleTimer = setTimeout(() => g === gen && feedIn({ on: 'idle' }), heartbeatMs * 2.5);
    if (f.event === 'ping') return link?.send({ event: 'pong' });
    if (f.event !== 'pong') feedIn({ on: 'frame', frame: f });
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const delay = refreshDelay(token, now());
    if (!o.getToken || delay === undefined || m.transport !== 'websocket' || o.refreshInBand === false) return;
    const g = gen;
    const exp = claims(token).exp ?? 0;
    refreshTimer = setTimeout(async () => {
      try {
        const t = await o.getToken!();
        if (g !== gen || m.phase === 'stopped') return;
        token = t;
        link?.send({ event: 'refresh', data: { token: t } });
        // The same (or an older) token again: no point asking on a timer; 4401 will.
        if ((claims(t).exp ?? 0) > exp) scheduleRefresh();
      } catch { /* the hub closes with 4401, and we try again then */ }
    }, delay);
  }

  run({ do: 'attempt' });
  return {
    get state() { return m.state; },
    get connection() { return connection; },
    done,
    close: () => feedIn({ on: 'close' }),
    [Symbol.asyncIterator]: feed.iterate,
  };
}
