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
}

export type ManyInput =
  | Exclude<Input, { on: 'frame' } | { on: 'looked-up' }>
  | { on: 'frame'; frame: Frame & { project_id?: string; tag?: string } }
  | { on: 'add'; target: Target }
  | { on: 'remove'; target: Target }
  /** A refused subscription's delay ended. */
  | { on: 'resubscribe'; key: string };

export type ManyEffect =
  | LinkEffect
  /** Send a client frame on the open link. */
  | { do: 'send'; frame: object }
  /** Feed back `resubscribe` for `key` after a delay drawn from [minMs, maxMs]. */
  | { do: 'later'; key: string; minMs: number; maxMs: number }
  /** Subscriptions, states or errors changed. */
  | { do: 'changed' };

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
  let m: Many = { link: start({ ...config, stayOpen: true, backfill: false }, initialState('')), subs: new Map(), leaving: new Map() };
  for (const target of targets) m = stepMany(m, { on: 'add', target })[0];
  return m;
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

/** Asks the hub for `sub` now (the link is open) or once it is. */
function ask(m: Many, sub: Sub, effects: ManyEffect[]): Many {
  if (!isOpen(m)) return put(m, { ...sub, phase: 'pending' });
  effects.push({ do: 'send', frame: subscribeFrame(sub) });
  return put(m, { ...sub, phase: 'subscribing' });
}

/** Sends `unsubscribe` for a subscription the hub holds (or is about to). */
function leave(m: Many, sub: Sub, effects: ManyEffect[]): Many {
  if (!isOpen(m) || (sub.phase !== 'open' && sub.phase !== 'subscribing')) return m;
  effects.push({ do: 'send', frame: { event: 'unsubscribe', data: target(sub) } });
  const leaving = new Map(m.leaving);
  leaving.set(sub.key, (leaving.get(sub.key) ?? 0) + 1);
  return { ...m, leaving };
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
    if (sub.snapshot) {
      const projects = sub.snapshot.projects;
      projects.set(id, d);
      const left = sub.snapshot.left - 1;
      return [put(m, left > 0 ? { ...sub, snapshot: { left, projects } } : { ...sub, snapshot: null, projects }), effects];
    }
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
    default: {
      // The connection's own inputs: machine.ts decides. Except one: without an SSE
      // feed for many projects (not in this version), a WebSocket blocked on the way
      // (or a hub that was down when the WebSocket failed and up for the probe) is
      // tried again with backoff, not switched to SSE.
      const i: typeof input = input.on === 'refused' && input.code === 'UPGRADE_REQUIRED' ? { on: 'unreachable' } : input;
      const [link, effects] = step(m.link, i);
      let n: Many = { ...m, link };
      if (link.phase !== 'open' && m.link.phase === 'open') {
        // The link is gone: what the hub held is asked for again once it is back.
        const subs = new Map(n.subs);
        for (const sub of subs.values()) if (sub.phase === 'subscribing' || sub.phase === 'open') subs.set(sub.key, { ...sub, phase: 'pending' });
        n = { ...n, subs, leaving: new Map() };
      }
      return [n, linkEffects(effects)];
    }
  }
}
