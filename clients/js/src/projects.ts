// progress-hub-client/projects: `watchProjects` — many projects and tags on ONE
// connection (`GET /api/v1/progress`, or its SSE stream `/api/v1/progress/events`). The
// decisions are many.ts's pure `stepMany` (which reuses machine.ts for the connection);
// connection.ts runs the connection's effects (links, timers, getToken, the probe), as
// for one project; this file runs the rest (subscriptions' frames, retries, reopening
// an SSE stream, callbacks).
// A separate entry from the core (`progress-hub-client`), so a page that watches one
// project does not carry it.

import { connect, ProgressHubError, type Connection, type Transport } from './connection.js';
import { createFeed } from './feed.js';
import type { Frame, ProjectStateData } from './frames.js';
import { keyOf, matches, startMany, stepMany, streamPosition, streamQuery, type Many, type ManyEffect, type ManyInput, type Sub, type SubscriptionFailure, type TagFilter, type Target } from './many.js';
import type { ProgressState } from './state.js';

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
  /** `auto` (default): WebSocket, and the SSE stream (`GET /api/v1/progress/events`)
   * when the WebSocket is blocked or missing; or one of them only. On SSE a change of
   * the subscriptions reopens the stream (docs/CLIENTS.md). */
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
  const base = baseUrl.replace(/\/+$/, '') + '/api/v1/progress';
  const targets: Target[] = (o.projects ?? []).map((p) => (o.lastEventIds?.[p] ? { project: p, lastEventId: o.lastEventIds[p] } : { project: p }));
  if (o.tag) targets.push({ tag: o.tag, status: o.status, since: o.since });
  let m: Many = startMany(
    {
      mode: o.transport ?? 'auto', webSocket: !!(o.WebSocket ?? globalThis.WebSocket), renewable: !!o.getToken,
      initialMs: o.backoff?.initialMs ?? 500, maxMs: o.backoff?.maxMs ?? 30000, maxLogs: o.maxLogs ?? 500,
    },
    targets,
  );
  const later = new Map<string, ReturnType<typeof setTimeout>>();
  const feed = createFeed();
  let states: Map<string, ProgressState> = new Map();
  let errors: Map<string, SubscriptionFailure> = new Map();

  let resolveClosed!: () => void;
  let rejectClosed!: (e: Error) => void;
  const closed = new Promise<void>((res, rej) => { resolveClosed = res; rejectClosed = rej; });
  closed.catch(() => {});

  const shell = connect(
    {
      link: () => m.link,
      feed: feedIn,
      url(kind, token) {
        // SSE names the subscriptions in the query (many.ts's `stream`).
        const q = new URLSearchParams(kind === 'sse' ? streamQuery(m) : {});
        if (token) q.set('token', token);
        const qs = q.toString();
        return (kind === 'sse' ? `${base}/events` : base) + (qs ? `?${qs}` : '');
      },
      position: () => streamPosition(m),
    },
    o,
  );

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
      case 'emit':
        o.onEvent?.(e.frame);
        return feed.push(e.frame);
      case 'send':
        return shell.send(e.frame);
      case 'reopen':
        // Once for every change made in this turn (a page mounting many views).
        return queueMicrotask(() => feedIn({ on: 'reopen' }));
      case 'hang-up':
        return shell.hangUp();
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
        later.forEach((t) => clearTimeout(t));
        const err = shell.stop();
        if (err) rejectClosed(err);
        else resolveClosed();
        return feed.end(err);
      }
      default:
        return shell.run(e);
    }
  }

  const api: ProjectsWatch = {
    get connection() { return shell.connection; },
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
  shell.run({ do: 'attempt' });
  return api;
}

export { share } from './shared.js';
export type { Shared, SharedOptions } from './shared.js';
export type { ProjectStateData, SubscriptionErrorData } from './frames.js';
export type { ProgressState } from './state.js';
