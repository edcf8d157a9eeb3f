// progress-hub-client/react: `useProgress(projectId)` → { state, connection, error }.
// A thin binding over watchProject; react is a peer dependency, never bundled.

import { useEffect, useState } from 'react';
// From the package's entry, so the bundle imports the core instead of copying it.
import { initialState, watchProject } from './index.js';
import type { Connection, ProgressHubError, ProgressState, WatchOptions } from './index.js';

export interface UseProgressOptions extends Omit<WatchOptions, 'onState' | 'onConnection'> {
  /** The hub's base URL; default: the page's own origin. */
  baseUrl?: string;
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
  const { baseUrl, token, transport } = options;
  useEffect(() => {
    setState(initialState(projectId));
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
  }, [projectId, baseUrl, token, transport]);
  return { state, connection, error };
}
