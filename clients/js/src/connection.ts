// One watcher's connection, run: the effects its machine decides for the link (dial a
// WebSocket or SSE, wait, renew the token, probe a refused WebSocket, open, stop), the
// frames' text (a `ping` answered, the idle timer), and the in-band token refresh. Both
// watchers use it: watch.ts (one project) and projects.ts (many on one connection); each
// gives its machine (machine.ts's connection) and its URLs, and handles its own effects.
// The decisions stay the machines' (pure); test/connection.test.mjs tests this file's
// with a fake WebSocket, a fake fetch and mocked timers.

import type { Frame } from './frames.js';
import type { Link, LinkEvents } from './link.js';
import type { Effect, Input, Machine, Transport } from './machine.js';
import { openSse } from './sse.js';
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

/** What the connection needs of its watcher. */
export interface Host {
  /** The connection as the watcher's machine has it now. */
  link(): Machine;
  /** Feeds the watcher's machine (which runs the effects it decides). */
  feed(input: Exclude<Input, { on: 'looked-up' } | { on: 'close' }>): void;
  /** The URL to dial on `transport` (http(s); a WebSocket's is made ws(s)), or to probe
   * a refused WebSocket with ('probe'), with `token` in it. */
  url(kind: Transport | 'probe', token?: string): string;
  /** SSE's `Last-Event-ID`, if any. */
  position(): string | null | undefined;
}

export interface ConnectionOptions {
  token?: string;
  getToken?: () => Promise<string>;
  WebSocket?: typeof WebSocket;
  onConnection?: (c: Connection) => void;
  refreshInBand?: boolean;
}

/** The effects run here; the others are the watcher's. */
export type ConnectionEffect = Extract<Effect, { do: 'attempt' | 'dial' | 'wait' | 'renew' | 'probe' | 'opened' }>;

export interface Shell {
  readonly connection: Connection;
  readonly token: string | undefined;
  run(e: ConnectionEffect): void;
  /** A request beside the link (aborted on stop); `then` or `fail` runs unless stopped. */
  aside<T>(request: (signal: AbortSignal, token?: string) => Promise<T>, then: (v: T) => void, fail: () => void): void;
  /** Sends a client frame on the link (WebSocket). */
  send(frame: object): void;
  /** No link is wanted for now (SSE with nothing to name): lets go of it; a dial follows. */
  hangUp(): void;
  /** Stops for good: drops the link, timers and requests; the machine's failure, if any. */
  stop(): ProgressHubError | undefined;
}

/** The hub's JSON error body: `{"error":{"code","message"}}`. */
interface ErrorBody {
  error?: { code?: string; message?: string };
}

export function connect(host: Host, o: ConnectionOptions): Shell {
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  let token = o.token;
  let connection: Connection = { status: 'connecting', attempt: 0, transport: host.link().transport };
  let link: Link | null = null;
  /** The current link's number: news from a link let go of is ignored. */
  let gen = 0;
  /** Side requests (the refusal probe, a project's state): aborted on stop. */
  const side = new Set<AbortController>();
  let heartbeatMs = 0;
  /** The hub's clock minus ours (from `connected`): token expiry is the hub's time. */
  let skew = 0;
  const now = () => Date.now() + skew;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  const stopped = () => host.link().phase === 'stopped';

  function setConnection(status: Connection['status'], retryInMs?: number) {
    const { attempt, transport } = host.link();
    connection = retryInMs === undefined ? { status, attempt, transport } : { status, attempt, retryInMs, transport };
    o.onConnection?.(connection);
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

  /** The current link ended on its own: it and its timers are gone. */
  function ending() {
    link = null;
    gen++;
    clearTimers();
  }

  function refusal(status: number, body: unknown) {
    const err = (body as ErrorBody | null)?.error;
    host.feed({ on: 'refused', status, code: err?.code || undefined, message: err?.message || undefined });
  }

  function aside<T>(request: (signal: AbortSignal, token?: string) => Promise<T>, then: (v: T) => void, fail: () => void) {
    const ac = new AbortController();
    side.add(ac);
    request(ac.signal, token)
      .then((v) => stopped() || then(v), () => stopped() || fail())
      .finally(() => side.delete(ac));
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
    if (heartbeatMs) idleTimer = setTimeout(() => g === gen && host.feed({ on: 'idle' }), heartbeatMs * 2.5);
    if (f.event === 'ping') return link?.send({ event: 'pong' });
    if (f.event !== 'pong') host.feed({ on: 'frame', frame: f });
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const delay = refreshDelay(token, now());
    // SSE has no way back: an expired token ends the stream, and the reconnect renews it.
    if (!o.getToken || delay === undefined || host.link().transport !== 'websocket' || o.refreshInBand === false) return;
    const g = gen;
    const exp = claims(token).exp ?? 0;
    refreshTimer = setTimeout(async () => {
      try {
        const t = await o.getToken!();
        if (g !== gen || stopped()) return;
        token = t;
        link?.send({ event: 'refresh', data: { token: t } });
        // The same (or an older) token again: no point asking on a timer; 4401 will.
        if ((claims(t).exp ?? 0) > exp) scheduleRefresh();
      } catch { /* the hub closes with 4401, and we try again then */ }
    }, delay);
  }

  function run(e: ConnectionEffect) {
    switch (e.do) {
      case 'attempt':
        return host.feed({ on: 'attempt', expired: !!o.getToken && expired(token, now()) });
      case 'dial': {
        drop();
        const g = gen;
        const on: LinkEvents = {
          text: (t) => g === gen && onText(t),
          ended: (code) => g === gen && (ending(), host.feed({ on: 'ended', code })),
          refused: (status, body) => g === gen && (ending(), refusal(status, body)),
        };
        setConnection('connecting');
        link = host.link().transport === 'websocket'
          ? openWebSocket(WS!, host.url('websocket', token).replace(/^http/, 'ws'), on)
          : openSse(host.url('sse', token), host.position(), on);
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
          (t) => { token = t; host.feed({ on: 'token', ok: true }); },
          () => host.feed({ on: 'token', ok: false }),
        );
      case 'probe':
        return aside(
          async (signal, t) => { const r = await fetch(host.url('probe', t), { cache: 'no-store', signal }); return [r.status, await r.json().catch(() => null)] as const; },
          ([status, body]) => refusal(status, body),
          () => host.feed({ on: 'unreachable' }),
        );
      case 'opened': {
        heartbeatMs = (e.data.heartbeat_interval || 0) * 1000;
        const hubNow = Date.parse(e.data.timestamp);
        if (Number.isFinite(hubNow)) skew = hubNow - Date.now();
        setConnection('open');
        return scheduleRefresh();
      }
    }
  }

  return {
    get connection() { return connection; },
    get token() { return token; },
    run,
    aside,
    send: (f) => link?.send(f),
    hangUp() {
      drop();
      setConnection('connecting');
    },
    stop() {
      clearTimers();
      drop();
      side.forEach((ac) => ac.abort());
      const f = host.link().failure;
      setConnection('closed');
      return f ? new ProgressHubError(f.code, f.message, f.status) : undefined;
    },
  };
}
