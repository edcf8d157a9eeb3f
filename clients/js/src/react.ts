// progress-hub-client/react: `useProgress(projectId)` → { state, connection, error },
// and `useProjects({ projects | tag })` for many. A thin binding over watchProject and
// watchProjects; react is a peer dependency, never bundled. With `shared: true`
// (useProjects always), every hook of a page on the same hub and token shares ONE
// connection (shared.ts), each adding and releasing its own subscriptions.

import { useEffect, useReducer, useState } from 'react';
// From the package's entry, so the bundle imports the core instead of copying it.
import { initialState, watchProject } from './index.js';
import type { Connection, ProgressHubError, ProgressState, WatchOptions } from './index.js';
// The multiplexed connection is its own entry (so is it in dist: react.js imports it).
import { share, type SharedOptions } from './projects.js';
import type { ProjectStateData, SubscriptionFailure, TagFilter } from './projects.js';

export interface UseProgressOptions extends Omit<WatchOptions, 'onState' | 'onConnection'> {
  /** The hub's base URL; default: the page's own origin. */
  baseUrl?: string;
  /** Watch through the page's one shared connection (`GET /api/v1/progress`) instead
   * of a socket of its own; read once per component (do not switch it). There, a
   * refused project is `error` (its subscription_error code), and the connection stays
   * open for the others. */
  shared?: boolean;
}

export interface UseProgress {
  state: ProgressState;
  connection: Connection;
  /** Why watching stopped for good (forbidden, invalid project, ...); null otherwise.
   * Errors of the job itself are in `state.error`. */
  error: ProgressHubError | null;
}

/** Watches `projectId` while the component is mounted (and re-watches when it changes).
 * Stays open after `complete` unless `stayOpen: false` is given. */
export function useProgress(projectId: string, options: UseProgressOptions = {}): UseProgress {
  const [state, setState] = useState(() => initialState(projectId));
  const [connection, setConnection] = useState<Connection>({ status: 'connecting', attempt: 0, transport: 'websocket' });
  const [error, setError] = useState<ProgressHubError | null>(null);
  const { baseUrl, token, transport, shared } = options;
  useEffect(() => {
    setState(initialState(projectId));
    if (shared) {
      const s = share(baseUrl ?? globalThis.location.origin, sharedOptions(options));
      const release = s.watch.add({ project: projectId, ...(options.lastEventId ? { lastEventId: options.lastEventId } : {}) });
      const read = () => {
        const st = s.watch.states.get(projectId);
        if (st) setState(st);
        setConnection(s.watch.connection);
        const e = s.watch.errors.get(`project:${projectId}`);
        setError(e && !e.retrying ? errorOf(e) : null);
      };
      const unlisten = s.listen(read);
      s.watch.closed.catch((e: ProgressHubError) => setError(e));
      read();
      return () => { unlisten(); release(); s.release(); };
    }
    setError(null);
    const w = watchProject(baseUrl ?? globalThis.location.origin, projectId, {
      stayOpen: true,
      ...options,
      onState: setState,
      onConnection: setConnection,
    });
    w.done.catch((e: ProgressHubError) => e.code !== 'CLOSED' && setError(e));
    return () => w.close();
    // Options other than these are read once per project (callbacks need not be stable).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [projectId, baseUrl, token, transport, shared]);
  return { state, connection, error };
}

/** What a shared connection takes from a hook's options (the first user's count). */
function sharedOptions(o: SharedOptions): SharedOptions {
  const { token, getToken, WebSocket, backoff, maxLogs, refreshInBand, transport } = o;
  return { token, getToken, WebSocket, backoff, maxLogs, refreshInBand, transport };
}

/** A refused subscription as the error a hook returns (the hub's code). */
function errorOf(e: SubscriptionFailure): ProgressHubError {
  return Object.assign(new Error(e.message), { name: 'ProgressHubError', code: String(e.code) }) as ProgressHubError;
}

export interface UseProjectsOptions extends SharedOptions, TagFilter {
  /** The hub's base URL; default: the page's own origin. */
  baseUrl?: string;
  /** Projects to watch (their full states, as useProgress gives). */
  projects?: string[];
  /** A tag to follow: its projects' states (`project_state`), filtered by `status` /
   * `since` (the hub's filter: status values or the groups `active` / `ended`). */
  tag?: string;
}

export interface UseProjects {
  /** Each project of `projects`, by id, once the hub said something of it. */
  states: ReadonlyMap<string, ProgressState>;
  /** The tag's projects passing the filter, newest first. */
  tagged: ProjectStateData[];
  /** Subscriptions the hub refused, by `project:<id>` / `tag:<tag>` (`retrying`: a
   * limit, asked again later). */
  errors: ReadonlyMap<string, SubscriptionFailure>;
  connection: Connection;
  /** Why the connection stopped for good (e.g. 401 and no getToken); null otherwise. */
  error: ProgressHubError | null;
}

/** Watches many projects and/or a tag on the page's one shared connection, while the
 * component is mounted; its subscriptions follow `projects` and `tag` as they change. */
export function useProjects(options: UseProjectsOptions): UseProjects {
  const { baseUrl, token, transport, projects = [], tag, status, since } = options;
  const [, tick] = useReducer((n: number) => n + 1, 0);
  const [s, setShared] = useState<ReturnType<typeof share> | null>(null);
  const [error, setError] = useState<ProgressHubError | null>(null);
  useEffect(() => {
    const sh = share(baseUrl ?? globalThis.location.origin, sharedOptions(options));
    setShared(sh);
    setError(null);
    const unlisten = sh.listen(tick);
    sh.watch.closed.catch((e: ProgressHubError) => setError(e));
    return () => { unlisten(); sh.release(); };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [baseUrl, token, transport]);
  const ids = projects.join(',');
  const filter = JSON.stringify([status ?? null, since ?? null]);
  useEffect(() => {
    if (!s) return;
    const releases = ids ? ids.split(',').map((p) => s.watch.add(p)) : [];
    if (tag) releases.push(s.watch.add({ tag, ...(status ? { status } : {}), ...(since ? { since } : {}) }));
    return () => releases.forEach((r) => r());
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [s, ids, tag, filter]);
  const w = s?.watch;
  const states = new Map<string, ProgressState>();
  const errors = new Map<string, SubscriptionFailure>();
  for (const p of projects) {
    const st = w?.states.get(p);
    if (st) states.set(p, st);
    const e = w?.errors.get(`project:${p}`);
    if (e) errors.set(`project:${p}`, e);
  }
  const te = tag ? w?.errors.get(`tag:${tag}`) : undefined;
  if (te) errors.set(`tag:${tag}`, te);
  const f: TagFilter = {};
  if (status) f.status = status;
  return {
    states, errors, error,
    tagged: tag && w ? w.tagged(tag, f) : [],
    connection: w?.connection ?? { status: 'connecting', attempt: 0, transport: 'websocket' },
  };
}
