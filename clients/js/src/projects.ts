// progress-hub-client/projects: `watchProjects` — many projects and tags on ONE
// connection (`GET /api/v1/progress`). The decisions are many.ts's pure `stepMany`
// (which reuses machine.ts for the connection); this file runs its effects (the link,
// timers, getToken, the probe, callbacks), as watch.ts does for one project.
// A separate entry from the core (`progress-hub-client`), so a page that watches one
// project does not carry it.

import { createFeed } from './feed.js';
import type { Frame, ProjectStateData } from './frames.js';
import type { Link, LinkEvents } from './link.js';
import { keyOf, matches, startMany, stepMany, type Many, type ManyEffect, type ManyInput, type Sub, type SubscriptionFailure, type TagFilter, type Target } from './many.js';
import type { ProgressState } from './state.js';
import { claims, expired, refreshDelay } from './token.js';
import { ProgressHubError, type Connection, type Transport } from './watch.js';
import { openWebSocket } from './websocket.js';

export { ProgressHubError, matches };
export type { Connection, Transport, SubscriptionFailure, TagFilter, Target };

export interface WatchProjectsOptions {
  /** Projects to watch from the start (more with `add`). */
  projects?: string[];
  /** A tag to follow from the start (its projects' states, `project_state`), with the
   * hub's filter: `status` values or the groups `active` / `ended`, `since` RFC 3339. */
  tag?: string;
  status?: string[];
  since?: string;
  /** Resume positions by project id (e.g. `state.lastEventId` stored earlier). */
  lastEventIds?: Record<string, string>;
  /** Access token (hub with --auth-secret), sent as `?token=`. */
  token?: string;
  /** Gives a fresh token: before the current one expires (sent in-band as `refresh`),
   * on close 4401, and on HTTP 401. */
  getToken?: () => Promise<string>;
  /** `auto` (default) or `websocket`. The multiplexed SSE feed is not in this version:
   * a WebSocket blocked on the way is tried again with backoff; `sse` stops at once
   * with NO_TRANSPORT. */
  transport?: 'auto' | Transport;
  /** A WebSocket class, for runtimes without a global one (e.g. the `ws` package). */
  WebSocket?: typeof WebSocket;
  /** Every frame but ping/pong, in order, once (each names its `project_id` or `tag`). */
  onEvent?: (frame: Frame) => void;
  /** Anything changed: a project's state, a tag's projects, a subscription's error. */
  onChange?: (watch: ProjectsWatch) => void;
  onConnection?: (c: Connection) => void;
  /** Log lines kept per project. Default 500. */
  maxLogs?: number;
  backoff?: { initialMs?: number; maxMs?: number };
  /** Refresh the token in-band before it expires. Default true. */
  refreshInBand?: boolean;
}

export interface ProjectsWatch extends AsyncIterable<Frame> {
  readonly connection: Connection;
  /** Each watched project's state, by id (state.ts's ProgressState). */
  readonly states: ReadonlyMap<string, ProgressState>;
  /** A tag's projects (what `GET /api/v1/projects/{id}` says of each), by id, kept to
   * those passing `filter` (default: the tag's own subscription filter). */
  tagged(tag: string, filter?: TagFilter): ProjectStateData[];
  /** Subscriptions the hub refused, by target (`project:<id>` or `tag:<tag>`). */
  readonly errors: ReadonlyMap<string, SubscriptionFailure>;
  /** Watches one more project or tag; returns its release (reference-counted: the hub
   * is told to unsubscribe when the last add() of a target is released). */
  add(target: string | Target): () => void;
  /** Resolves when close() is called; rejects with ProgressHubError when the connection
   * stops for good (e.g. 401 without getToken). */
  readonly closed: Promise<void>;
  close(): void;
}

const toTarget = (t: string | Target): Target => (typeof t === 'string' ? { project: t } : t);

export function watchProjects(baseUrl: string, options: WatchProjectsOptions = {}): ProjectsWatch {
  const o = options;
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  const base = baseUrl.replace(/\/+$/, '') + '/api/v1/progress';
  const targets: Target[] = (o.projects ?? []).map((p) => (o.lastEventIds?.[p] ? { project: p, lastEventId: o.lastEventIds[p] } : { project: p }));
  if (o.tag) targets.push({ tag: o.tag, status: o.status, since: o.since });
  let m: Many = startMany(
    {
      mode: o.transport ?? 'auto', webSocket: !!WS, renewable: !!o.getToken,
      initialMs: o.backoff?.initialMs ?? 500, maxMs: o.backoff?.maxMs ?? 30000, maxLogs: o.maxLogs ?? 500,
    },
    targets,
  );
  let token = o.token;
  let connection: Connection = { status: 'connecting', attempt: 0, transport: m.link.transport };
  let link: Link | null = null;
  let gen = 0;
  const side = new Set<AbortController>();
  const later = new Map<string, ReturnType<typeof setTimeout>>();
  let heartbeatMs = 0;
  let skew = 0;
  const now = () => Date.now() + skew;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  const feed = createFeed();
  let states: Map<string, ProgressState> = new Map();
  let errors: Map<string, SubscriptionFailure> = new Map();

  let resolveClosed!: () => void;
  let rejectClosed!: (e: Error) => void;
  const closed = new Promise<void>((res, rej) => { resolveClosed = res; rejectClosed = rej; });
  closed.catch(() => {});

  function setConnection(status: Connection['status'], retryInMs?: number) {
    const { attempt, transport } = m.link;
    connection = retryInMs === undefined ? { status, attempt, transport } : { status, attempt, retryInMs, transport };
    o.onConnection?.(connection);
  }

  function url(ws: boolean): string {
    const u = token ? `${base}?token=${encodeURIComponent(token)}` : base;
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

  function feedIn(input: ManyInput) {
    const [next, effects] = stepMany(m, input);
    m = next;
    effects.forEach(run);
  }

  /** The views (new maps, so a React store sees a change). */
  function derive() {
    const s = new Map<string, ProgressState>();
    const e = new Map<string, SubscriptionFailure>();
    for (const sub of m.subs.values()) {
      if (sub.state) s.set(sub.name, sub.state);
      if (sub.error) e.set(sub.key, sub.error);
    }
    states = s;
    errors = e;
  }

  function run(e: ManyEffect) {
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
        // The transport seam: the multiplexed SSE feed (`/api/v1/progress/events`) plugs
        // in here as a second opener (re-dialed when the subscriptions change: SSE
        // cannot send `subscribe`); until then only `transport: 'sse'` or a runtime
        // without WebSocket gets here, and stops.
        if (m.link.transport !== 'websocket') {
          return feedIn({ on: 'refused', status: 400, code: 'NO_TRANSPORT', message: 'this client has no SSE feed for many projects yet: it needs a WebSocket' });
        }
        link = openWebSocket(WS!, url(true), on);
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
        return void Promise.resolve().then(o.getToken!).then(
          (t) => { token = t; feedIn({ on: 'token', ok: true }); },
          () => feedIn({ on: 'token', ok: false }),
        );
      case 'probe': {
        const ac = new AbortController();
        side.add(ac);
        fetch(url(false), { cache: 'no-store', signal: ac.signal })
          .then(async (r) => [r.status, await r.json().catch(() => null)] as const)
          .then(([status, body]) => m.link.phase !== 'stopped' && refusal(status, body), () => m.link.phase !== 'stopped' && feedIn({ on: 'unreachable' }))
          .finally(() => side.delete(ac));
        return;
      }
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
      case 'send':
        return link?.send(e.frame);
      case 'later': {
        clearTimeout(later.get(e.key));
        const delay = e.minMs + Math.random() * (e.maxMs - e.minMs);
        later.set(e.key, setTimeout(() => { later.delete(e.key); feedIn({ on: 'resubscribe', key: e.key }); }, delay));
        return;
      }
      case 'changed':
        derive();
        return o.onChange?.(api);
      case 'stop': {
        clearTimers();
        drop();
        side.forEach((ac) => ac.abort());
        later.forEach((t) => clearTimeout(t));
        const f = m.link.failure;
        const err = f ? new ProgressHubError(f.code, f.message, f.status) : undefined;
        if (err) rejectClosed(err);
        else resolveClosed();
        setConnection('closed');
        return feed.end(err);
      }
    }
  }

  function ending() {
    link = null;
    gen++;
    clearTimers();
  }

  function refusal(status: number, body: unknown) {
    const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
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
    clearTimeout(idleTimer);
    const g = gen;
    if (heartbeatMs) idleTimer = setTimeout(() => g === gen && feedIn({ on: 'idle' }), heartbeatMs * 2.5);
    if (f.event === 'ping') return link?.send({ event: 'pong' });
    if (f.event !== 'pong') feedIn({ on: 'frame', frame: f });
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const delay = refreshDelay(token, now());
    if (!o.getToken || delay === undefined || o.refreshInBand === false) return;
    const g = gen;
    const exp = claims(token).exp ?? 0;
    refreshTimer = setTimeout(async () => {
      try {
        const t = await o.getToken!();
        if (g !== gen || m.link.phase === 'stopped') return;
        token = t;
        link?.send({ event: 'refresh', data: { token: t } });
        if ((claims(t).exp ?? 0) > exp) scheduleRefresh();
      } catch { /* the hub closes with 4401, and we try again then */ }
    }, delay);
  }

  const api: ProjectsWatch = {
    get connection() { return connection; },
    get states() { return states; },
    get errors() { return errors; },
    tagged(tag, filter) {
      const sub: Sub | undefined = m.subs.get(`tag:${tag}`);
      if (!sub) return [];
      const f = filter ?? sub.asked;
      return [...sub.projects.values()].filter((p) => matches(p, f));
    },
    add(t) {
      const target = toTarget(t);
      feedIn({ on: 'add', target });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        feedIn({ on: 'remove', target });
        if (!m.subs.has(keyOf(target))) {
          clearTimeout(later.get(keyOf(target)));
          later.delete(keyOf(target));
        }
      };
    },
    closed,
    close: () => feedIn({ on: 'close' }),
    [Symbol.asyncIterator]: feed.iterate,
  };
  derive();
  run({ do: 'attempt' });
  return api;
}

export { share } from './shared.js';
export type { Shared, SharedOptions } from './shared.js';
export type { ProjectStateData, SubscriptionErrorData } from './frames.js';
export type { ProgressState } from './state.js';
