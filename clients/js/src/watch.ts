// One watcher's connection life: dial (WebSocket, or SSE over fetch), answer pings,
// fold frames into the state, and when the link ends decide from its close code (or
// HTTP status) whether to reconnect — promptly, with backoff, with a new token, over
// SSE — or to stop with a typed error. Every reconnect resumes from the last event id.

import type { FinalStatus, Frame, SnapshotData } from './frames.js';
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
  body?: unknown;
}

/** The hub's JSON error body: `{"error":{"code","message"}}`. */
interface ErrorBody {
  error?: { code?: string; message?: string };
}

/** A JWT's `exp` and `iat` (seconds since the epoch), when it says. */
function claims(token?: string): { exp?: number; iat?: number } {
  try {
    const p = token!.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const c = JSON.parse(atob(p));
    return { exp: typeof c.exp === 'number' ? c.exp : undefined, iat: typeof c.iat === 'number' ? c.iat : undefined };
  } catch {
    return {};
  }
}
const expiry = (token?: string) => claims(token).exp;

/** Event ids are `<epoch>:<seq>`: `id` is at or past `target` in the same history. */
function reached(id: string | undefined, target: string): boolean {
  if (!id) return false;
  const [e, n] = id.split(':');
  const [te, tn] = target.split(':');
  return e === te && Number(n) >= Number(tn);
}

/** setTimeout's limit (a longer delay fires at once). */
const MAX_DELAY = 2 ** 31 - 1;

export function watchProject(baseUrl: string, projectId: string, options: WatchOptions = {}): Watch {
  const o = options;
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
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
  /** While backfilling: the snapshot's position; done is not settled before it. */
  let backfillTo: string | null = null;
  /** The backfill's own dial: its `connected` is not news to the watcher. */
  let quiet = false;
  /** Side requests (the refusal probe, the project's state): aborted by close(). */
  const side = new Set<AbortController>();
  let heartbeatMs = 0;
  /** The hub's clock minus ours (from `connected`): token expiry is the hub's time. */
  let skew = 0;
  const now = () => Date.now() + skew;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  const sinks = new Set<{ push(f: Frame): void; end(): void }>();

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
    side.forEach((ac) => ac.abort());
    if (!finished) rejectDone(err ?? new ProgressHubError('CLOSED', 'closed before the job completed'));
    setConnection('closed');
    sinks.forEach((s) => s.end());
  }

  async function connect() {
    if (closed) return;
    // A token known to be expired is renewed before dialing, not after a refusal.
    const exp = expiry(token);
    if (o.getToken && exp !== undefined && exp * 1000 <= now()) {
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
    // Some WebSockets (Node 20's undici) fire only `error` on a failed handshake, never
    // `close`: that is a close without a close frame (1006). ended() runs once per link.
    ws.onerror = () => { if (ws.readyState !== 1) ended(g, { code: 1006 }); };
    link = {
      send: (f) => ws.readyState === 1 && ws.send(JSON.stringify(f)),
      close: () => {
        ws.onclose = ws.onmessage = ws.onerror = null;
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
    let silent = false;
    switch (f.event) {
      case 'ping':
        link?.send({ event: 'pong' });
        return;
      case 'pong':
        return;
      case 'connected': {
        const d = f.data;
        greeted = true;
        renewed = false;
        attempt = 0;
        resumed = d.resumed;
        heartbeatMs = (d.heartbeat_interval || 0) * 1000;
        const hubNow = Date.parse(d.timestamp);
        if (Number.isFinite(hubNow)) skew = hubNow - Date.now();
        silent = quiet;
        quiet = false;
        setConnection('open');
        scheduleRefresh();
        // A recovered resume sends no snapshot: when nothing is known yet (a stored
        // position, e.g. after a page reload), ask the hub whether the run has finished.
        if (d.resumed && d.recovered && state.status === null && !backfillTo) void lookUp();
        break;
      }
      case 'snapshot': {
        const d = f.data;
        // Joined mid-run: read the history from its start once instead, so the log and
        // the stage times are whole (the hub replays it in order, then goes on live).
        if (!backfilled && !resumed && d.last_event_id && d.recovered && !state.logs.length) {
          backfilled = backfilling = quiet = true;
          backfillTo = d.last_event_id;
          state = { ...state, lastEventId: `${d.last_event_id.split(':')[0]}:0` };
          drop();
          void connect();
          return;
        }
        backfillTo = null; // the start was trimmed: the snapshot is the state
        break;
      }
    }
    // The replay holds earlier runs (with their `complete`): done waits for its end.
    if (backfillTo && reached(f.id, backfillTo)) backfillTo = null;
    const recovered = state.recovered;
    state = reduce(state, f, o.maxLogs);
    // A backfill that finds the start trimmed falls back to the snapshot: nothing the
    // watcher had seen was lost, so that is not a failed recovery.
    if (backfilling && (f.event === 'connected' || f.event === 'snapshot')) state = { ...state, recovered };
    else if (f.event !== 'connected') backfilling = false;
    if (!silent) {
      o.onEvent?.(f);
      sinks.forEach((s) => s.push(f));
    }
    o.onState?.(state);
    settle(f.event !== 'connected');
  }

  /** Resolves done (and stops, unless stayOpen) once the state is final. */
  function settle(ok: boolean) {
    if (!finished && !backfillTo && ok && isFinal(state.status)) {
      finished = true;
      resolveDone(state.youtubeUrl ? { status: state.status as FinalStatus, youtubeUrl: state.youtubeUrl } : { status: state.status as FinalStatus });
      if (!o.stayOpen) stop();
    }
  }

  /** Reads the project's state (GET /api/v1/projects/{id}); settles done if finished. */
  async function lookUp() {
    const ac = new AbortController();
    side.add(ac);
    try {
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
      const res = await fetch(base.replace(/\/progress$/, ''), { headers, signal: ac.signal, cache: 'no-store' });
      const d = res.ok ? ((await res.json()) as SnapshotData) : null;
      if (!d || closed || backfillTo || state.status !== null || !isFinal(d.status)) return;
      const last = state.lastEventId;
      state = reduce(state, { event: 'snapshot', data: { ...d, recovered: true } }, o.maxLogs);
      state = { ...state, lastEventId: last ?? state.lastEventId };
      o.onState?.(state);
      settle(true);
    } catch { /* unknown: live events will tell */ } finally {
      side.delete(ac);
    }
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const { exp, iat } = claims(token);
    if (!o.getToken || exp === undefined || transport !== 'websocket' || o.refreshInBand === false) return;
    // At 80% of the remaining life, so a slow getToken still lands in time. The local
    // clock may be off: time is the hub's (from `connected`), and when that disagrees
    // with the token's own life (exp - iat), the latter wins. Never sooner than 5 s
    // (half the life for a shorter token; 1 s at least: no hot loop), never past
    // setTimeout's limit.
    const left = exp * 1000 - now();
    const life = iat !== undefined && exp > iat ? (exp - iat) * 1000 : left;
    const floor = Math.min(5000, Math.max(1000, life / 2));
    const delay = Math.min(MAX_DELAY, Math.max(floor, 0.8 * (left > 0 && left <= life ? left : life)));
    const g = gen;
    refreshTimer = setTimeout(async () => {
      try {
        const t = await o.getToken!();
        if (g !== gen || closed) return;
        const later = (expiry(t) ?? 0) > exp;
        token = t;
        link?.send({ event: 'refresh', data: { token: t } });
        // The same (or an older) token again: no point asking on a timer; 4401 will.
        if (later) scheduleRefresh();
      } catch { /* the hub closes with 4401, and we try again then */ }
    }, delay);
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
      const ac = new AbortController();
      side.add(ac);
      fetch(url(false), { cache: 'no-store', signal: ac.signal })
        .then(async (r) => refused(r.status, await r.json().catch(() => null)))
        .catch(() => retry(backoff()))
        .finally(() => side.delete(ac));
      return;
    }
    retry(backoff());
  }

  function refused(status: number, body: unknown) {
    if (closed) return;
    const err = (body as ErrorBody | null)?.error;
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
    // Every pending next(), in order: the protocol allows several at once.
    const waiting: Array<{ ok(r: IteratorResult<Frame>): void; fail(e: Error): void }> = [];
    let returned = false;
    const finish = () => sinks.delete(sink);
    const sink = {
      push: (f: Frame) => {
        const w = waiting.shift();
        if (w) w.ok({ value: f, done: false });
        else buf.push(f);
      },
      // The watch stopped: pending next() calls end (or throw its error).
      end: () => {
        finish();
        for (const w of waiting.splice(0)) failure ? w.fail(failure) : w.ok({ value: undefined, done: true });
      },
    };
    sinks.add(sink);
    return {
      next(): Promise<IteratorResult<Frame>> {
        if (buf.length) return Promise.resolve({ value: buf.shift()!, done: false });
        if (returned || closed) {
          finish();
          return failure && !returned ? Promise.reject(failure) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((ok, fail) => waiting.push({ ok, fail }));
      },
      async return(): Promise<IteratorResult<Frame>> {
        finish();
        returned = true;
        buf.length = 0;
        for (const w of waiting.splice(0)) w.ok({ value: undefined, done: true });
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
