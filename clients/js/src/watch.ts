// One watcher's connection life: dial (WebSocket, or SSE over fetch), answer pings,
// fold frames into the state, and when the link ends decide from its close code (or
// HTTP status) whether to reconnect — promptly, with backoff, with a new token, over
// SSE — or to stop with a typed error. Every reconnect resumes from the last event id.

import type { FinalStatus, Frame } from './frames.js';
import { initialState, isFinal, reduce, type ProgressState } from './state.js';

export type Transport = 'websocket' | 'sse';

export interface Connection {
  status: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** Failed attempts since the last successful `connected` (0 on the first dial). */
  attempt: number;
  /** While `reconnecting`: how long until the next attempt. */
  retryInMs?: number;
  transport: Transport;
}

export interface Done {
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

interface Link {
  send(o: object): void;
  close(): void;
}

/** What ended a link: a WebSocket close code, an HTTP answer, or neither (network). */
interface Ending {
  code?: number;
  status?: number;
  body?: any;
}

/** Seconds since the epoch at which a JWT expires, if it says. */
function expiry(token?: string): number | undefined {
  try {
    const p = token!.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(p)).exp;
  } catch {
    return undefined;
  }
}

export function watchProject(baseUrl: string, projectId: string, options: WatchOptions = {}): Watch {
  const o = options;
  const WS = o.WebSocket ?? (globalThis as any).WebSocket as typeof WebSocket | undefined;
  const mode = o.transport ?? 'auto';
  const initialMs = o.backoff?.initialMs ?? 500;
  const maxMs = o.backoff?.maxMs ?? 30000;
  const base = baseUrl.replace(/\/+$/, '') + `/api/v1/projects/${encodeURIComponent(projectId)}/progress`;

  let token = o.token;
  let state = initialState(projectId, o.lastEventId ?? null);
  let transport: Transport = mode === 'sse' || (mode === 'auto' && !WS) ? 'sse' : 'websocket';
  let connection: Connection = { status: 'connecting', attempt: 0, transport };
  let attempt = 0;
  let link: Link | null = null;
  let gen = 0;
  let closed = false;
  let finished = false;
  let failure: ProgressHubError | undefined;
  let greeted = false; // this link said `connected`
  let renewed = false; // a token was fetched since the last `connected`
  let resumed = false;
  let backfilling = false;
  let backfilled = !(o.backfill ?? true);
  let heartbeatMs = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  const sinks = new Set<{ push(f: Frame): void; wake(): void }>();

  let resolveDone!: (d: Done) => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<Done>((res, rej) => { resolveDone = res; rejectDone = rej; });
  done.catch(() => {}); // an unobserved rejection must not crash a Node process

  function setConnection(status: Connection['status'], retryInMs?: number) {
    connection = retryInMs === undefined ? { status, attempt, transport } : { status, attempt, retryInMs, transport };
    o.onConnection?.(connection);
  }

  function url(ws: boolean): string {
    const q = new URLSearchParams();
    if (ws && state.lastEventId) q.set('last_event_id', state.lastEventId);
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

  function drop() {
    const l = link;
    link = null;
    gen++;
    l?.close();
  }

  function stop(err?: ProgressHubError) {
    if (closed) return;
    closed = true;
    clearTimers();
    drop();
    failure = err;
    if (!finished) rejectDone(err ?? new ProgressHubError('CLOSED', 'closed before the job completed'));
    setConnection('closed');
    sinks.forEach((s) => s.wake());
  }

  async function connect() {
    if (closed) return;
    // A token known to be expired is renewed before dialing, not after a refusal.
    const exp = expiry(token);
    if (o.getToken && exp !== undefined && exp * 1000 <= Date.now()) {
      if (!(await renew())) return;
    }
    const g = ++gen;
    greeted = false;
    setConnection('connecting');
    if (transport === 'websocket') openWebSocket(g);
    else openSse(g);
  }

  function openWebSocket(g: number) {
    if (!WS) return stop(new ProgressHubError('NO_TRANSPORT', 'no WebSocket: pass one as the WebSocket option'));
    let ws: WebSocket;
    try {
      ws = new WS(url(true));
    } catch {
      return ended(g, {});
    }
    ws.onmessage = (m) => typeof m.data === 'string' && onText(g, m.data);
    ws.onclose = (e) => ended(g, { code: e.code });
    ws.onerror = () => {};
    link = {
      send: (f) => ws.readyState === 1 && ws.send(JSON.stringify(f)),
      close: () => {
        ws.onclose = ws.onmessage = null;
        try { ws.close(); } catch { /* already closing */ }
      },
    };
  }

  function openSse(g: number) {
    const ac = new AbortController();
    link = { send() {}, close: () => ac.abort() };
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (state.lastEventId) headers['last-event-id'] = state.lastEventId;
    fetch(url(false), { headers, signal: ac.signal, cache: 'no-store' })
      .then(async (res) => {
        if (!res.ok || !res.body) return ended(g, { status: res.status, body: await res.json().catch(() => null) });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let data: string[] = [];
        for (;;) {
          const { value, done: eof } = await reader.read();
          if (eof || g !== gen) break;
          buf += value;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, '');
            buf = buf.slice(nl + 1);
            if (line === '') {
              if (data.length) onText(g, data.join('\n'));
              data = [];
            } else if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
          }
        }
        ended(g, {});
      })
      .catch(() => ended(g, {}));
  }

  function onText(g: number, text: string) {
    if (g !== gen) return;
    let f: Frame;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (!f || typeof f.event !== 'string') return;
    // A link silent for 2.5 heartbeats is dead even if the OS has not noticed.
    clearTimeout(idleTimer);
    if (heartbeatMs) idleTimer = setTimeout(() => { if (g === gen) { drop(); retry(backoff()); } }, heartbeatMs * 2.5);
    const d = f.data as any;
    switch (f.event) {
      case 'ping':
        link?.send({ event: 'pong' });
        return;
      case 'pong':
        return;
      case 'connected':
        greeted = true;
        renewed = false;
        attempt = 0;
        resumed = d.resumed;
        heartbeatMs = (d.heartbeat_interval || 0) * 1000;
        setConnection('open');
        scheduleRefresh();
        break;
      case 'snapshot':
        // Joined mid-run: read the history from its start once instead, so the log and
        // the stage times are whole (the hub replays it in order, then goes on live).
        if (!backfilled && !resumed && d.last_event_id && d.recovered && !state.logs.length) {
          backfilled = backfilling = true;
          state = { ...state, lastEventId: `${String(d.last_event_id).split(':')[0]}:0` };
          drop();
          void connect();
          return;
        }
        break;
    }
    const recovered = state.recovered;
    state = reduce(state, f, o.maxLogs);
    // A backfill that finds the start trimmed falls back to the snapshot: nothing the
    // watcher had seen was lost, so that is not a failed recovery.
    if (backfilling && (f.event === 'connected' || f.event === 'snapshot')) state = { ...state, recovered };
    else if (f.event !== 'connected') backfilling = false;
    o.onEvent?.(f);
    sinks.forEach((s) => s.push(f));
    o.onState?.(state);
    if (!finished && isFinal(state.status) && f.event !== 'connected') {
      finished = true;
      resolveDone(state.youtubeUrl ? { status: state.status as FinalStatus, youtubeUrl: state.youtubeUrl } : { status: state.status as FinalStatus });
      if (!o.stayOpen) stop();
    }
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const exp = expiry(token);
    if (!o.getToken || exp === undefined || transport !== 'websocket' || o.refreshInBand === false) return;
    // At 80% of the remaining life, so a slow getToken still lands in time.
    const g = gen;
    refreshTimer = setTimeout(async () => {
      try {
        const t = await o.getToken!();
        if (g !== gen || closed) return;
        token = t;
        link?.send({ event: 'refresh', data: { token: t } });
        scheduleRefresh();
      } catch { /* the hub closes with 4401, and we try again then */ }
    }, Math.max(0, (exp * 1000 - Date.now()) * 0.8));
  }

  async function renew(): Promise<boolean> {
    try {
      token = await o.getToken!();
      renewed = true;
      return !closed;
    } catch {
      retry(backoff());
      return false;
    }
  }

  function backoff(min = 0): number {
    const b = Math.max(min, Math.min(maxMs, initialMs * 2 ** attempt));
    return b / 2 + (Math.random() * b) / 2;
  }

  function retry(delay: number) {
    if (closed) return;
    clearTimers();
    attempt++;
    setConnection('reconnecting', Math.round(delay));
    timer = setTimeout(connect, delay);
  }

  function ended(g: number, e: Ending) {
    if (g !== gen || closed) return;
    link = null;
    gen++;
    clearTimers();
    if (e.status !== undefined) return refused(e.status, e.body);
    if (e.code === 4401) {
      if (!o.getToken) return stop(new ProgressHubError('TOKEN_EXPIRED', 'the access token expired and no getToken was given'));
      return void renew().then((ok) => ok && retry(0));
    }
    if (e.code === 1012) return retry(Math.random() * Math.min(1000, maxMs)); // restart: prompt, spread out
    if (e.code === 4429 || e.code === 1013) return retry(backoff(5000)); // overloaded: give it room
    // A WebSocket that failed before it spoke (1006: no close frame, as a refused
    // handshake looks): ask over plain HTTP why. The hub answers 401/403/400 with a JSON
    // error; 400 UPGRADE_REQUIRED means it is fine and the upgrade was blocked on the way.
    if (transport === 'websocket' && !greeted && (e.code === undefined || e.code === 1006)) {
      fetch(url(false), { cache: 'no-store' })
        .then(async (r) => refused(r.status, await r.json().catch(() => null)))
        .catch(() => retry(backoff()));
      return;
    }
    retry(backoff());
  }

  function refused(status: number, body: any) {
    if (closed) return;
    const err = body && body.error;
    const code: string = (err && err.code) || `HTTP_${status}`;
    if (code === 'UPGRADE_REQUIRED') {
      if (mode !== 'auto') return retry(backoff());
      transport = 'sse'; // WebSocket is blocked on the way; SSE carries the same frames
      return retry(0);
    }
    // A fresh token refused too is an error, not a loop.
    if (status === 401 && o.getToken && !renewed) {
      return void renew().then((ok) => ok && retry(backoff()));
    }
    if (status === 400 || status === 401 || status === 403 || status === 404) {
      return stop(new ProgressHubError(code, (err && err.message) || `HTTP ${status}`, status));
    }
    retry(backoff());
  }

  function iterate(): AsyncIterableIterator<Frame> {
    const buf: Frame[] = [];
    let wakeUp: (() => void) | null = null;
    const sink = { push: (f: Frame) => { buf.push(f); sink.wake(); }, wake: () => { const w = wakeUp; wakeUp = null; w?.(); } };
    sinks.add(sink);
    return {
      async next(): Promise<IteratorResult<Frame>> {
        for (;;) {
          if (buf.length) return { value: buf.shift()!, done: false };
          if (closed) {
            sinks.delete(sink);
            if (failure) throw failure;
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => (wakeUp = r));
        }
      },
      async return(): Promise<IteratorResult<Frame>> {
        sinks.delete(sink);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  void connect();
  return {
    get state() { return state; },
    get connection() { return connection; },
    done,
    close: () => stop(),
    [Symbol.asyncIterator]: iterate,
  };
}
