// One connection shared by every part of a page that watches the same hub with the same
// token: `share(baseUrl, options)` gives the page's `watchProjects` connection for that
// pair (made on first use), whose subscriptions are reference-counted (`add` returns a
// release), and closes it when the last user releases it. The React hooks use it, and
// any other view layer can.

import { watchProjects, type ProjectsWatch, type WatchProjectsOptions } from './projects.js';
import type { Connection } from './connection.js';

export type SharedOptions = Omit<WatchProjectsOptions, 'projects' | 'tag' | 'status' | 'since' | 'lastEventIds' | 'onChange' | 'onConnection' | 'onEvent'>;

export interface Shared {
  readonly watch: ProjectsWatch;
  /** Called on every change of the connection's states, tags, errors or status. */
  listen(listener: () => void): () => void;
  /** This user is done: the connection closes when no user is left. */
  release(): void;
}

interface Entry {
  watch: ProjectsWatch;
  listeners: Set<() => void>;
  users: number;
  closing?: ReturnType<typeof setTimeout>;
}

const pool = new Map<string, Entry>();

/** The shared connection to `baseUrl` with `options.token` (options other than the token
 * are the first user's). */
export function share(baseUrl: string, options: SharedOptions = {}): Shared {
  const key = `${baseUrl.replace(/\/+$/, '')} ${options.token ?? ''}`;
  let entry = pool.get(key);
  if (!entry) {
    const listeners = new Set<() => void>();
    const tell = () => listeners.forEach((l) => l());
    const made: Entry = { listeners, users: 0, watch: watchProjects(baseUrl, { ...options, onChange: tell, onConnection: tell }) };
    // Stopped for good (e.g. refused): the next user gets a new one.
    made.watch.closed.catch(() => {}).finally(() => { if (pool.get(key) === made) pool.delete(key); tell(); });
    pool.set(key, made);
    entry = made;
  }
  const e = entry;
  clearTimeout(e.closing);
  e.users++;
  let released = false;
  return {
    watch: e.watch,
    listen(l) {
      e.listeners.add(l);
      return () => e.listeners.delete(l);
    },
    release() {
      if (released) return;
      released = true;
      if (--e.users > 0) return;
      // Not at once: a view that unmounts and mounts again (React's StrictMode, a route
      // change) keeps the connection.
      e.closing = setTimeout(() => {
        if (e.users > 0) return;
        if (pool.get(key) === e) pool.delete(key);
        e.watch.close();
      }, 0);
    },
  };
}

export type { Connection };
