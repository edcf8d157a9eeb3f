// The decisions of a multiplexed watcher (`watchProjects`, projects.ts: one connection to
// `GET /api/v1/progress`, many subscriptions), as one pure function like machine.ts:
// `stepMany(machine, input)` returns the next machine and the effects to run.
//
// The connection's life (dial, backoff, close codes, token renewal, the probe, the
// switch to SSE) is machine.ts's `step`, reused as it is: this file feeds it the
// connection's inputs (its `connected` as a project-less one) and keeps its effects.
// What is new here is per subscription: a project's state (state.ts's `reduce`) and its
// own resume position, a tag's project states, a `subscription_error` for one
// subscription only (retried when it says "later", kept otherwise), add and remove at
// any time (reference-counted), and subscribing everything again after a reconnect.
//
// Over SSE (`GET /api/v1/progress/events`: a WebSocket blocked on the way, `transport:
// 'sse'`, or a runtime without WebSocket) the client cannot send: the request names the
// subscriptions (`stream`), and a change of them reopens the stream with the new list
// and every project's position in one `Last-Event-ID` (`streamPosition`), once for all
// the changes of a turn (`reopen`).

import type { Frame, ProjectStateData, SubscriptionErrorData } from './frames.js';
import { start, step, type Config, type Effect, type Input, type Machine } from './machine.js';
import { initialState, isFinal, reduce, type ProgressState } from './state.js';

/** A tag subscription's filter, as the hub takes it: `status` values (QUEUED, a stage,
 * COMPLETED, FAILED, CANCELLED) or the groups `active` / `ended`; `since` RFC 3339. */
export interface TagFilter {
  status?: string[];
  since?: string;
}

export type Target = { project: string; lastEventId?: string } | ({ tag: string } & TagFilter);

/** Why the hub refused a subscription; `retrying`: it said "later" (a limit), and the
 * subscription is asked for again after a backoff. */
export interface SubscriptionFailure extends SubscriptionErrorData {
  retrying: boolean;
}

export interface Sub {
  readonly key: string;
  readonly kind: 'project' | 'tag';
  /** The project id or the tag. */
  readonly name: string;
  /** add() calls not yet removed. */
  readonly refs: number;
  /** pending: to be subscribed once the connection is open; subscribing: asked, no
   * answer yet; open: `subscribed` heard; failed: refused for good (see `error`);
   * retrying: refused for now, asked again after a delay. */
  readonly phase: 'pending' | 'subscribing' | 'open' | 'failed' | 'retrying';
  /** A project's reduced state (its `lastEventId` is the resume position). */
  readonly state: ProgressState | null;
  /** A tag's filters, one per add() (the hub is asked for their union). */
  readonly filters: readonly TagFilter[];
  /** The union asked for now. */
  readonly asked: TagFilter;
  /** A tag's projects, by id, as the newest `project_state` said. */
  readonly projects: ReadonlyMap<string, ProjectStateData>;
  /** While a tag's snapshot arrives: how many `project_state` frames are still due, and
   * what came (it replaces `projects` when whole, so a view does not flicker). */
  readonly snapshot: { left: number; projects: Map<string, ProjectStateData> } | null;
  readonly error: SubscriptionFailure | null;
  /** Refusals in a row (the retry backoff). */
  readonly tries: number;
}

export interface Many {
  /** The connection, as machine.ts decides it (its state is unused). */
  readonly link: Machine;
  readonly subs: ReadonlyMap<string, Sub>;
  /** Unsubscribes sent whose `unsubscribed` has not come: the key's frames until then
   * belong to the old subscription and are dropped. */
  readonly leaving: ReadonlyMap<string, number>;
  /** SSE: the subscriptions (keys) the stream dialed last names, in its order. */
  readonly stream: readonly string[];
  /** SSE: a `reopen` is on its way back (asked once per turn). */
  readonly reopening: boolean;
}

export type ManyInput =
  | Exclude<Input, { on: 'frame' } | { on: 'looked-up' }>
  | { on: 'frame'; frame: Frame & { project_id?: string; tag?: string } }
  | { on: 'add'; target: Target }
  | { on: 'remove'; target: Target }
  /** A refused subscription's delay ended. */
  | { on: 'resubscribe'; key: string }
  /** SSE: the subscriptions changed this turn (fed back for `reopen`). */
  | { on: 'reopen' };

export type ManyEffect =
  | LinkEffect
  /** Send a client frame on the open link. */
  | { do: 'send'; frame: object }
  /** Feed back `resubscribe` for `key` after a delay drawn from [minMs, maxMs]. */
  | { do: 'later'; key: string; minMs: number; maxMs: number }
  /** Subscriptions, states or errors changed. */
  | { do: 'changed' }
  /** SSE: feed back `reopen` once this turn's changes are made. */
  | { do: 'reopen' }
  /** SSE with nothing to name: let go of the link (a `dial` follows when there is). */
  | { do: 'hang-up' };

type Step = [Many, ManyEffect[]];

/** machine.ts's effects that concern the connection (its state, `done` and the
 * single project's look-up are not this watcher's). */
type LinkEffect = Exclude<Effect, { do: 'look-up' } | { do: 'state' } | { do: 'settle' }>;
const linkEffects = (effects: Effect[]): ManyEffect[] =>
  effects.filter((e): e is LinkEffect => e.do !== 'state' && e.do !== 'look-up' && e.do !== 'settle');

const LATER = new Set(['TOO_MANY_SUBSCRIPTIONS', 'TAG_AT_CAPACITY', 'HUB_AT_CAPACITY']);

export const keyOf = (t: Target): string => ('project' in t ? `project:${t.project}` : `tag:${t.tag}`);

/** The multiplexed connection: never settles (no `complete` ends it), never backfills. */
export function startMany(config: Omit<Config, 'stayOpen' | 'backfill'>, targets: Target[] = []): Many {
  let m: Many = { link: start({ ...config, stayOpen: true, backfill: false }, initialState('')), subs: new Map(), leaving: new Map(), stream: [], reopening: false };
  for (const target of targets) m = stepMany(m, { on: 'add', target })[0];
  // Nothing is dialed yet: the first dial names them all.
  return { ...m, reopening: false };
}

/** The union of tag filters: every status any asks for (none: all), the earliest since. */
export function union(filters: readonly TagFilter[]): TagFilter {
  const out: TagFilter = {};
  if (filters.length && filters.every((f) => f.status)) out.status = [...new Set(filters.flatMap((f) => f.status!))].sort();
  if (filters.length && filters.every((f) => f.since)) {
    out.since = filters.map((f) => f.since!).reduce((a, b) => (Date.parse(b) < Date.parse(a) ? b : a));
  }
  return out;
}

const sameFilter = (a: TagFilter, b: TagFilter) => JSON.stringify(a.status ?? null) === JSON.stringify(b.status ?? null) && a.since === b.since;

/** Whether a tag's project state passes a filter's `status` (what the hub applies; its
 * `since` is by when the run was tagged, which the state does not carry: the hub's). */
export function matches(state: { status?: string | null }, filter: TagFilter): boolean {
  if (!filter.status) return true;
  const s = state.status ?? '';
  const group = isFinal(s) ? 'ended' : s ? 'active' : '';
  return filter.status.includes(s) || filter.status.includes(group);
}

function subscribeFrame(sub: Sub): object {
  if (sub.kind === 'project') {
    const id = sub.state?.lastEventId;
    return { event: 'subscribe', data: id ? { project_id: sub.name, last_event_id: id } : { project_id: sub.name } };
  }
  return { event: 'subscribe', data: { tag: sub.name, ...sub.asked } };
}

const target = (sub: Sub) => (sub.kind === 'project' ? { project_id: sub.name } : { tag: sub.name });
const isOpen = (m: Many) => m.link.phase === 'open';

function put(m: Many, sub: Sub): Many {
  const subs = new Map(m.subs);
  subs.set(sub.key, sub);
  return { ...m, subs };
}

/** SSE names its subscriptions in the request: a change reopens the stream, once for
 * all the changes of a turn (projects.ts feeds `reopen` back in a microtask). */
function reopen(m: Many, effects: ManyEffect[]): Many {
  if (m.link.transport !== 'sse' || m.reopening) return m;
  effects.push({ do: 'reopen' });
  return { ...m, reopening: true };
}

/** Most projects an SSE stream names (the hub's bound; more: a tag, or the WebSocket). */
const SSE_PROJECTS = 100;

/** SSE: the subscriptions a stream dialed now names (`stream`): every one not refused,
 * but at most 100 projects: the others wait, with TOO_MANY_SUBSCRIPTIONS, for room. (A
 * name the hub would refuse is named, and refused by the hub as on the WebSocket.) */
function named(m: Many): Many {
  const subs = new Map(m.subs);
  const stream: string[] = [];
  let projects = 0;
  for (const sub of m.subs.values()) {
    if (sub.phase === 'failed' || sub.phase === 'retrying') continue;
    if (sub.kind === 'project' && ++projects > SSE_PROJECTS) {
      subs.set(sub.key, { ...sub, error: { code: 'TOO_MANY_SUBSCRIPTIONS', message: 'an SSE stream names at most 100 projects', retrying: true } });
    } else stream.push(sub.key);
  }
  return { ...m, subs, stream };
}

/** What the hub held (subscribing or open) is asked for again on the next link. */
function unasked(m: Many): Many {
  const subs = new Map(m.subs);
  for (const sub of subs.values()) if (sub.phase === 'subscribing' || sub.phase === 'open') subs.set(sub.key, { ...sub, phase: 'pending' });
  return { ...m, subs };
}

/** SSE: dial a stream naming what is wanted now (or hang up: nothing is). */
function dialStream(m: Many): Step {
  const n = named(m);
  return [n, [{ do: n.stream.length ? 'dial' : 'hang-up' }, { do: 'changed' }]];
}

const projectsOf = (m: Many) => m.stream.filter((k) => m.subs.get(k)?.kind === 'project');
const nameOf = (key: string) => key.slice(key.indexOf(':') + 1);

/** SSE: the query of the stream `stream` names (`projects=a,b&tags=t`). */
export function streamQuery(m: Many): Record<string, string> {
  const q: Record<string, string> = {};
  const projects = projectsOf(m).map(nameOf);
  const tags = m.stream.filter((k) => m.subs.get(k)?.kind === 'tag').map(nameOf);
  if (projects.length) q.projects = projects.join(',');
  if (tags.length) q.tags = tags.join(',');
  return q;
}

/** SSE: every named project's position, as the one `Last-Event-ID` the hub reads
 * (`m1.<FNV-1a of the projects value, 8 hex>.<pos>,<pos>,...`, docs/PROTOCOL.md; the
 * hub's side is crates/hub/src/wire/positions.rs); none when no project has one. */
export function streamPosition(m: Many): string | undefined {
  const keys = projectsOf(m);
  const at = keys.map((k) => m.subs.get(k)?.state?.lastEventId ?? '');
  while (at.length && !at[at.length - 1]) at.pop();
  if (!at.length) return undefined;
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(keys.map(nameOf).join(','))) h = Math.imul(h ^ b, 0x01000193);
  return `m1.${(h >>> 0).toString(16).padStart(8, '0')}.${at.join(',')}`;
}

/** Asks the hub for `sub` now (the link is open) or once it is. */
function ask(m: Many, sub: Sub, effects: ManyEffect[]): Many {
  if (m.link.transport === 'sse') {
    // Subscribed by the open stream that names it (asked anew: by the next one).
    if (isOpen(m) && m.stream.includes(sub.key) && sub.phase !== 'retrying' && !m.leaving.has(sub.key)) return put(m, { ...sub, phase: 'subscribing' });
    return reopen(put(m, { ...sub, phase: 'pending' }), effects);
  }
  if (!isOpen(m)) return put(m, { ...sub, phase: 'pending' });
  effects.push({ do: 'send', frame: subscribeFrame(sub) });
  return put(m, { ...sub, phase: 'subscribing' });
}

/** Sends `unsubscribe` for a subscription the hub holds (or is about to); over SSE,
 * its frames are dropped until the stream reopens without it. */
function leave(m: Many, sub: Sub, effects: ManyEffect[]): Many {
  if (!isOpen(m) || (sub.phase !== 'open' && sub.phase !== 'subscribing')) return reopen(m, effects);
  if (m.link.transport !== 'sse') effects.push({ do: 'send', frame: { event: 'unsubscribe', data: target(sub) } });
  const leaving = new Map(m.leaving);
  leaving.set(sub.key, (leaving.get(sub.key) ?? 0) + 1);
  return reopen({ ...m, leaving }, effects);
}

function add(m: Many, t: Target): Step {
  const key = keyOf(t);
  const effects: ManyEffect[] = [{ do: 'changed' }];
  const had = m.subs.get(key);
  if ('project' in t) {
    if (had) return [put(m, { ...had, refs: had.refs + 1 }), effects];
    const sub: Sub = {
      key, kind: 'project', name: t.project, refs: 1, phase: 'pending', state: initialState(t.project, t.lastEventId ?? null),
      filters: [], asked: {}, projects: new Map(), snapshot: null, error: null, tries: 0,
    };
    return [ask(m, sub, effects), effects];
  }
  const filter: TagFilter = {};
  if (t.status) filter.status = [...t.status].sort();
  if (t.since) filter.since = t.since;
  if (had) {
    const filters = had.filters.concat(filter);
    const asked = union(filters);
    let next: Sub = { ...had, refs: had.refs + 1, filters, asked };
    // A wider union than the hub was asked for: ask again (a new snapshot).
    if (sameFilter(asked, had.asked) || had.phase === 'failed') return [put(m, next), effects];
    let n = leave(m, had, effects);
    if (had.phase === 'retrying') return [put(n, next), effects];
    next = { ...next, snapshot: null };
    n = ask(n, next, effects);
    return [n, effects];
  }
  const sub: Sub = {
    key, kind: 'tag', name: t.tag, refs: 1, phase: 'pending', state: null, filters: [filter], asked: filter,
    projects: new Map(), snapshot: null, error: null, tries: 0,
  };
  return [ask(m, sub, effects), effects];
}

function remove(m: Many, t: Target): Step {
  const key = keyOf(t);
  const sub = m.subs.get(key);
  if (!sub) return [m, []];
  const effects: ManyEffect[] = [{ do: 'changed' }];
  if (sub.refs > 1) {
    // One tag filter less; the hub keeps the wider union (a narrower one would cost a
    // new snapshot and save little).
    const filters = [...sub.filters];
    if ('tag' in t) {
      const f: TagFilter = {};
      if (t.status) f.status = [...t.status].sort();
      if (t.since) f.since = t.since;
      const i = filters.findIndex((x) => sameFilter(x, f));
      filters.splice(i >= 0 ? i : 0, 1);
    }
    return [put(m, { ...sub, refs: sub.refs - 1, filters }), effects];
  }
  const n = leave(m, sub, effects);
  const subs = new Map(n.subs);
  subs.delete(key);
  return [{ ...n, subs }, effects];
}

/** The subscription a frame names: by its `tag` or `project_id`. The hub echoes at
 * most 64 characters of a refused name, so a longer one is found by that prefix. */
function subOf(m: Many, f: { project_id?: string; tag?: string }): Sub | undefined {
  // A tag's frames name the tag and the project: the tag's subscription.
  const [kind, name] = typeof f.tag === 'string' ? ['tag', f.tag] : typeof f.project_id === 'string' ? ['project', f.project_id] : [];
  if (!kind) return undefined;
  const exact = m.subs.get(`${kind}:${name}`);
  if (exact || name!.length < 64) return exact;
  for (const sub of m.subs.values()) if (sub.kind === kind && sub.name.startsWith(name!)) return sub;
  return undefined;
}

function refusal(m: Many, sub: Sub, d: SubscriptionErrorData): Step {
  // Already subscribed: it goes on (this client asked twice, e.g. across a resubscribe).
  if (d.code === 'ALREADY_SUBSCRIBED') return [m, []];
  const effects: ManyEffect[] = [{ do: 'changed' }];
  const retrying = LATER.has(d.code as string);
  const error: SubscriptionFailure = { code: d.code, message: d.message, retrying };
  if (!retrying) return [put(m, { ...sub, phase: 'failed', error }), effects];
  const c = m.link.config;
  const b = Math.max(5000, Math.min(c.maxMs, c.initialMs * 2 ** sub.tries));
  effects.push({ do: 'later', key: sub.key, minMs: b / 2, maxMs: b });
  return [put(m, { ...sub, phase: 'retrying', error, tries: sub.tries + 1 }), effects];
}

function frame(m: Many, f: Frame & { project_id?: string; tag?: string }): Step {
  const emit: ManyEffect = { do: 'emit', frame: f };
  if (f.event === 'connected') {
    // The connection's own: machine.ts opens the link on a project's `connected`.
    const d = f.data as { timestamp: string; heartbeat_interval: number };
    const [link, effects] = step(m.link, { on: 'frame', frame: { event: 'connected', data: { ...d, project_id: '', resumed: false, recovered: true } } });
    let n: Many = { ...m, link, leaving: new Map() };
    const out: ManyEffect[] = linkEffects(effects).filter((e) => e.do !== 'emit');
    out.push(emit);
    if (!isOpen(n)) return [n, out];
    // Everything again, each project from its own last id.
    for (const sub of n.subs.values()) {
      if (sub.phase === 'pending' || sub.phase === 'subscribing' || sub.phase === 'open') n = ask(n, { ...sub, snapshot: null }, out);
    }
    out.push({ do: 'changed' });
    return [n, out];
  }
  if (f.event === 'subscription_error') {
    const sub = subOf(m, f);
    if (!sub || m.leaving.has(sub.key)) return [m, [emit]];
    const [n, effects] = refusal(m, sub, f.data);
    return [n, [emit, ...effects]];
  }
  const sub = subOf(m, f);
  if (f.event === 'unsubscribed') {
    const key = typeof f.tag === 'string' ? `tag:${f.tag}` : `project:${f.project_id}`;
    const left = m.leaving.get(key);
    if (!left) return [m, [emit]];
    const leaving = new Map(m.leaving);
    if (left > 1) leaving.set(key, left - 1);
    else leaving.delete(key);
    return [{ ...m, leaving }, [emit]];
  }
  // Frames of a subscription let go of (or never made) change nothing.
  if (!sub || m.leaving.has(sub.key) || (sub.phase !== 'subscribing' && sub.phase !== 'open')) return [m, sub ? [] : [emit]];
  const effects: ManyEffect[] = [emit, { do: 'changed' }];
  if (sub.kind === 'project') {
    // Its `subscribed` is the project's `connected` (recovered or not).
    const g = f.event === 'subscribed' ? ({ event: 'connected', data: f.data } as Frame) : f;
    const state = reduce(sub.state!, g, m.link.config.maxLogs);
    const next: Sub = f.event === 'subscribed' ? { ...sub, phase: 'open', error: null, tries: 0, state } : { ...sub, state };
    return [put(m, next), effects];
  }
  if (f.event === 'subscribed') {
    const left = (f.data as { projects?: number }).projects ?? 0;
    const next: Sub = left > 0
      ? { ...sub, phase: 'open', error: null, tries: 0, snapshot: { left, projects: new Map() } }
      : { ...sub, phase: 'open', error: null, tries: 0, snapshot: null, projects: new Map() };
    return [put(m, next), effects];
  }
  if (f.event === 'project_state') {
    const d = f.data;
    const id = f.project_id ?? d.project_id;
    // The SSE stream takes no filter: what the hub would have left out (a snapshot's or
    // an unknown project's state not passing `status`) is left out here; a known
    // project's change is kept (the hub says when one leaves the filter).
    const keep = m.link.transport !== 'sse' || matches(d, sub.asked) || (!sub.snapshot && sub.projects.has(id));
    if (sub.snapshot) {
      const projects = sub.snapshot.projects;
      if (keep) projects.set(id, d);
      const left = sub.snapshot.left - 1;
      return [put(m, left > 0 ? { ...sub, snapshot: { left, projects } } : { ...sub, snapshot: null, projects }), effects];
    }
    if (!keep) return [m, [emit]];
    const projects = new Map(sub.projects);
    projects.set(id, d);
    return [put(m, { ...sub, projects }), effects];
  }
  return [m, [emit]];
}

export function stepMany(m: Many, input: ManyInput): Step {
  if (m.link.phase === 'stopped') return [m, []];
  switch (input.on) {
    case 'add':
      return add(m, input.target);
    case 'remove':
      return remove(m, input.target);
    case 'resubscribe': {
      const sub = m.subs.get(input.key);
      if (!sub || sub.phase !== 'retrying') return [m, []];
      const effects: ManyEffect[] = [];
      return [ask(m, sub, effects), effects];
    }
    case 'frame':
      return frame(m, input.frame);
    case 'reopen': {
      const n: Many = { ...m, reopening: false };
      const { phase } = n.link;
      if (phase !== 'open' && phase !== 'connecting') return [n, []];
      // Reopened when the list changed, or one it names is to be subscribed anew (let go
      // of and added again in the same turn, or asked again after a refusal).
      const now = named(n).stream;
      if (now.join() === m.stream.join() && !(phase === 'open' && now.some((k) => n.subs.get(k)?.phase === 'pending'))) return [n, []];
      return dialStream(unasked({ ...n, link: { ...n.link, phase: 'connecting', greeted: false } }));
    }
    default: {
      // The connection's own inputs: machine.ts decides (a WebSocket blocked on the way
      // switches to SSE, as for one project).
      const [link, effects] = step(m.link, input);
      let n: Many = { ...m, link };
      if (link.phase !== 'open' && m.link.phase === 'open') {
        // The link is gone: what the hub held is asked for again once it is back.
        n = { ...unasked(n), leaving: new Map() };
      }
      const out = linkEffects(effects);
      // An SSE dial names the subscriptions wanted now.
      if (link.transport === 'sse' && out.some((e) => e.do === 'dial')) {
        const [d, more] = dialStream(n);
        return [d, [...out.filter((e) => e.do !== 'dial'), ...more]];
      }
      return [n, out];
    }
  }
}
