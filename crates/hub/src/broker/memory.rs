//! The in-process broker: the self-contained mode of `serve`.
//!
//! It keeps the same contract as Redis (history with epochs, state, progress clamping,
//! retention) so the same integration tests run against both. Publishing appends to
//! the history and hands the frame on (to the hub, through `Deliveries`) under one lock, so history order and
//! delivery order are the same.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::{Budget, Owner};
use super::outbox::{MemoryOutbox, MemorySource, now_ms};
use super::quota::Admission;
use super::redis::publish_inputs::CONTRACT;
use super::{
    Broker, BrokerError, Deliveries, HistoryConfig, PreparedEvent, Replay, SubscriptionChange,
    TagEntry,
};
use crate::wire::stall::{Bounds, StallReason};
use crate::wire::{EventId, Frame, ProjectId, ProjectState, Tag};

/// How often expired histories and receipts are swept from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long a receipt is remembered (`publish.lua`: `SET ... EX 600`).
const RECEIPT_TTL: Duration = Duration::from_secs(600);
/// Most idempotency keys remembered in all (beyond it the oldest go first).
const MAX_RECEIPTS: usize = 100_000;
/// Most `complete`s remembered as seen by a watcher (beyond it the oldest go first:
/// forgetting one only makes it look unseen).
const MAX_SEEN: usize = 100_000;

pub struct MemoryBroker {
    deliveries: Arc<dyn Deliveries>,
    config: HistoryConfig,
    store: Arc<Mutex<Store>>,
    /// Where a run's end goes for the webhooks, when the hub has any.
    outbox: Option<Arc<MemoryOutbox>>,
}

/// Every project's history, and what bounds them: their bytes, charged to their
/// creators, with the order in which each creator's were last used (see `budget.rs`),
/// and the callers' idempotency keys.
#[derive(Default)]
struct Store {
    projects: HashMap<ProjectId, History>,
    /// Bytes of every frame held, and [`PROJECT_OVERHEAD`] per project, against
    /// `HistoryConfig::memory_budget`, per creator.
    budget: Budget,
    receipts: Receipts,
    seen: Seen,
    /// Each tag's index (Redis's `progress:{tag:<tag>}:projects`): project → when (ms)
    /// its run was last given the tag; `*`'s ([`Tag::all`]): when its history or its
    /// newest run began. A forgotten project leaves `*`'s and the indexes of the tags
    /// its state carried; other stale entries go when a reader finds them (`untag`).
    tags: HashMap<Tag, HashMap<ProjectId, u64>>,
}

/// The `complete`s a watcher was written (see `Broker::record_complete_seen`), each
/// until its retention ends, oldest first.
#[derive(Default)]
struct Seen {
    ids: HashMap<(ProjectId, EventId), Instant>,
    order: VecDeque<((ProjectId, EventId), Instant)>,
}

impl Seen {
    fn trim(&mut self, now: Instant) {
        while let Some((key, until)) = self.order.front()
            && (*until <= now || self.order.len() > MAX_SEEN)
        {
            self.ids.remove(key);
            self.order.pop_front();
        }
    }

    fn insert(&mut self, key: (ProjectId, EventId), until: Instant) {
        if let Entry::Vacant(entry) = self.ids.entry(key.clone()) {
            entry.insert(until);
            self.order.push_back((key, until));
        }
    }
}

/// What the in-process outbox's scans see of this broker.
struct Scanned {
    store: Arc<Mutex<Store>>,
    deliveries: Arc<dyn Deliveries>,
}

impl MemorySource for Scanned {
    fn stalled_runs(
        &self,
        bounds: &Bounds,
        lost: &HashSet<ProjectId>,
    ) -> Vec<(ProjectId, HashMap<String, String>, StallReason)> {
        let (now, at) = (Instant::now(), chrono::Utc::now());
        let store = self.store.lock();
        store
            .projects
            .iter()
            .filter(|(_, history)| {
                history.seq > 0
                    && history.expires_at > now
                    && !history.state.contains_key("run_ended")
            })
            .filter_map(|(project, history)| {
                let fields = history.fields();
                let (state, _) = ProjectState::from_hash(&fields)?;
                let (reason, _) =
                    crate::wire::stall::stall(&state, bounds, lost.contains(project), at)?;
                Some((project.clone(), fields, reason))
            })
            .collect()
    }

    fn watched(&self) -> (HashSet<ProjectId>, HashSet<ProjectId>) {
        let now = self
            .deliveries
            .presence()
            .into_iter()
            .filter(|(_, watchers)| *watchers > 0)
            .map(|(project, _)| project)
            .collect();
        let left = self
            .deliveries
            .presence_changes()
            .into_iter()
            .filter(|(_, watchers)| *watchers == 0)
            .map(|(project, _)| project)
            .collect();
        (now, left)
    }

    fn state(&self, project: &ProjectId) -> HashMap<String, String> {
        let store = self.store.lock();
        store
            .projects
            .get(project)
            .filter(|history| history.seq > 0 && history.expires_at > Instant::now())
            .map(History::fields)
            .unwrap_or_default()
    }
}

/// One project's history and state.
struct History {
    epoch: String,
    seq: u64,
    /// The frames as published (an error frame without its `error` object, which
    /// `Frame::from_published` adds on the way out: see there).
    frames: VecDeque<(u64, Bytes)>,
    /// Bytes of `frames`, against `HistoryConfig::max_bytes`.
    bytes: usize,
    /// Its use stamp in its owner's LRU order (`Budget`).
    used: u64,
    /// Who its bytes are charged to.
    owner: Owner,
    /// The state's fields, as `publish.lua` keeps them in the state hash (the script's
    /// own, and those the publisher patches), read by `ProjectState::from_hash`.
    state: HashMap<String, String>,
    expires_at: Instant,
    /// Every fence holder seen (`publish.lua`'s `fences` set; kept when the history
    /// expires, as that set outlives it).
    fences: HashSet<String>,
    /// The current holder's parallel units: unit -> its newest token, and whether it
    /// was counted done (`publish.lua`'s `units` hash).
    units: HashMap<String, (u64, bool)>,
}

/// Callers' idempotency keys (keyed publishes only) of the last 10 minutes and the ids
/// they got, as `publish.lua` keeps receipts: a retry gets its first id and appends
/// nothing. Unkeyed publishes are never retried here (an in-process publish cannot
/// fail), so they leave no receipt. Kept apart from the histories, as Redis keeps a
/// receipt key apart: a history's expiry or eviction does not forget them, and their
/// age is trimmed by the sweep, whether the project publishes again or not.
#[derive(Default)]
struct Receipts {
    ids: HashMap<(ProjectId, String), EventId>,
    order: VecDeque<((ProjectId, String), Instant)>,
}

impl Receipts {
    fn trim(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front()
            && (now.duration_since(*at) > RECEIPT_TTL || self.order.len() > MAX_RECEIPTS)
        {
            self.ids.remove(key);
            self.order.pop_front();
        }
    }

    fn get(&self, project: &ProjectId, receipt: &str) -> Option<&EventId> {
        self.ids.get(&(project.clone(), receipt.to_string()))
    }

    fn insert(&mut self, project: &ProjectId, receipt: &str, id: EventId, now: Instant) {
        let key = (project.clone(), receipt.to_string());
        self.ids.insert(key.clone(), id);
        self.order.push_back((key, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

impl History {
    /// The state as Redis keeps it (`publish.lua`'s hash: the epoch and seq with the
    /// rest), for `ProjectState::from_hash`.
    fn fields(&self) -> HashMap<String, String> {
        let mut fields = self.state.clone();
        fields.insert("epoch".into(), self.epoch.clone());
        fields.insert("seq".into(), self.seq.to_string());
        fields
    }

    fn new(used: u64, owner: Owner) -> Self {
        Self {
            epoch: EventId::new_epoch(),
            seq: 0,
            frames: VecDeque::new(),
            bytes: 0,
            used,
            owner,
            state: HashMap::new(),
            expires_at: Instant::now(),
            fences: HashSet::new(),
            units: HashMap::new(),
        }
    }

    fn pop_oldest(&mut self) -> usize {
        match self.frames.pop_front() {
            Some((_, frame)) => {
                let len = frame.len();
                self.bytes -= len;
                len
            }
            None => 0,
        }
    }
}

impl Store {
    /// Marks the project used now (creating its history, charged to the hub's own
    /// publishers, if it has none).
    fn touch(&mut self, project: &ProjectId) -> &mut History {
        self.open(project, &None)
    }

    /// Marks the project used now, creating its history charged to `owner` if it has
    /// none (an existing one keeps its owner).
    fn open(&mut self, project: &ProjectId, owner: &Owner) -> &mut History {
        match self.projects.entry(project.clone()) {
            Entry::Occupied(entry) => {
                let history = entry.into_mut();
                history.used = self.budget.reuse(&history.owner, history.used, project);
                history
            }
            Entry::Vacant(entry) => {
                let used = self.budget.open(owner, project);
                entry.insert(History::new(used, owner.clone()))
            }
        }
    }

    fn forget(&mut self, project: &ProjectId) {
        if let Some(history) = self.projects.remove(project) {
            self.budget
                .close(&history.owner, history.used, history.bytes);
            let carried = history.state.get("tags").map(|t| Tag::split(t));
            let all = Tag::all();
            let indexes = carried.iter().flatten().chain([&all]);
            self.untag(indexes, std::slice::from_ref(project));
        }
    }

    fn untag<'a>(&mut self, tags: impl IntoIterator<Item = &'a Tag>, projects: &[ProjectId]) {
        for tag in tags {
            if let Some(index) = self.tags.get_mut(tag) {
                for project in projects {
                    index.remove(project);
                }
                if index.is_empty() {
                    self.tags.remove(tag);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<ProjectId> = self
            .projects
            .iter()
            .filter(|(_, h)| h.expires_at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for project in expired {
            self.forget(&project);
        }
        self.budget.sweep(now);
        self.receipts.trim(now);
        self.seen.trim(now);
    }

    /// Brings the bytes held back within `budget`, taking from the client that holds
    /// the most first (so one client's flood is paid for by its own projects): its
    /// least recently used project nobody watches is forgotten (never `keep`, the one
    /// just published to); if it has none, the oldest frame of its least recently used
    /// project that has more than one (its state stays; a resume from before gets
    /// `recovered: false`). Only when the heaviest client has nothing left to give
    /// does the next one give.
    fn enforce(&mut self, budget: usize, keep: &ProjectId, watched: &dyn Deliveries) {
        while self.budget.total() > budget {
            match self.reclaimable(keep, watched) {
                Some(Reclaim::Forget(project)) => {
                    tracing::debug!(project_id = %project, "memory budget: forgot an idle project's history");
                    self.forget(&project);
                }
                Some(Reclaim::Trim(project)) => {
                    if let Some(history) = self.projects.get_mut(&project) {
                        let freed = history.pop_oldest();
                        self.budget.shrink(&history.owner, freed);
                    }
                }
                None => return,
            }
        }
    }

    /// What to take back next (see [`Store::enforce`]).
    fn reclaimable(&self, keep: &ProjectId, watched: &dyn Deliveries) -> Option<Reclaim> {
        for (_, projects) in self.budget.heaviest_first() {
            let mut trim = None;
            for project in projects {
                if project != keep && !watched.is_watched(project) {
                    return Some(Reclaim::Forget(project.clone()));
                }
                let floor = usize::from(project == keep);
                if trim.is_none()
                    && self
                        .projects
                        .get(project)
                        .is_some_and(|h| h.frames.len() > floor)
                {
                    trim = Some(project.clone());
                }
            }
            if let Some(project) = trim {
                return Some(Reclaim::Trim(project));
            }
        }
        None
    }
}

/// One step of taking memory back.
enum Reclaim {
    Forget(ProjectId),
    Trim(ProjectId),
}

impl MemoryBroker {
    pub fn start(
        config: HistoryConfig,
        deliveries: Arc<dyn Deliveries>,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let store: Arc<Mutex<Store>> = Arc::default();
        let swept = Arc::clone(&store);
        tracker.spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sweep.tick() => swept.lock().sweep(Instant::now()),
                    change = changes.recv() => match change {
                        Some(SubscriptionChange::Subscribe(topic)) => topic.mark_subscribed(),
                        Some(SubscriptionChange::Unsubscribe(_)) => {}
                        None => return,
                    },
                }
            }
        });
        Self {
            deliveries,
            config,
            store,
            outbox: None,
        }
    }

    /// This broker, putting every run's end into `outbox` as it publishes it, and
    /// showing the outbox's scans its runs and watchers (`job.stalled`,
    /// `project.vacated`).
    pub fn with_outbox(mut self, outbox: Option<Arc<MemoryOutbox>>) -> Self {
        if let Some(outbox) = &outbox {
            // The vacancy scan reads which projects' watchers changed between its looks.
            self.deliveries.track_presence();
            outbox.attach(Arc::new(Scanned {
                store: Arc::clone(&self.store),
                deliveries: Arc::clone(&self.deliveries),
            }));
        }
        self.outbox = outbox;
        self
    }

    /// Bytes of history held in all, and idempotency keys remembered.
    #[cfg(test)]
    fn footprint(&self) -> (usize, usize) {
        let store = self.store.lock();
        (store.budget.total(), store.receipts.len())
    }

    /// Projects with a history.
    #[cfg(test)]
    fn projects(&self) -> usize {
        self.store.lock().projects.len()
    }

    /// Forgets what has expired now (what the periodic sweep does).
    #[cfg(test)]
    fn sweep_now(&self) {
        self.store.lock().sweep(Instant::now());
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        project: &ProjectId,
        event: &PreparedEvent,
    ) -> Result<EventId, BrokerError> {
        let (t, s) = (&event.template, &event.state);
        let now = Instant::now();
        let mut guard = self.store.lock();
        let store = &mut *guard;
        store.receipts.trim(now);
        if event.keyed
            && let Some(id) = store.receipts.get(project, &event.receipt)
        {
            return Ok(id.clone());
        }
        let history = store.touch(project);
        if history.expires_at <= now && history.seq > 0 {
            // Expired: the history is lost, as a Redis key with a TTL would be (the
            // fences are kept, as their own key outlives it).
            let (used, owner) = (history.used, history.owner.clone());
            let freed = history.bytes;
            let fences = std::mem::take(&mut history.fences);
            *history = History::new(used, owner.clone());
            history.fences = fences;
            store.budget.shrink(&owner, freed);
        }
        let history = store.touch(project);
        let state = &mut history.state;
        let field = |state: &HashMap<String, String>, name: &str| state.get(name).cloned();
        // Fences, as `publish.lua` checks them.
        // A unit's own claim (`publish.lua`'s units): its token against its own newest.
        let unit = event.fence.as_ref().and(s.unit.as_ref());
        let (mut unit_was_done, mut fresh_units) = (false, false);
        if let Some(fence) = &event.fence {
            let holder = &fence.holder;
            if field(state, "fence_ended").as_ref() == Some(holder) {
                return Err(BrokerError::Stale(format!(
                    "job {holder} has already completed"
                )));
            }
            let newest = field(state, "fence_token")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            let same = field(state, "fence_holder").as_ref() == Some(holder);
            if same {
                if let Some(unit) = unit {
                    let (own, done) = history.units.get(&unit.name).copied().unwrap_or_default();
                    unit_was_done = done;
                    if fence.token < own {
                        return Err(BrokerError::Stale(format!(
                            "claim {} of unit {} of job {holder} was superseded by claim {own}",
                            fence.token, unit.name
                        )));
                    }
                } else if fence.token < newest {
                    return Err(BrokerError::Stale(format!(
                        "claim {} of job {holder} was superseded by claim {newest}",
                        fence.token
                    )));
                }
            } else if !history.fences.insert(holder.clone()) {
                return Err(BrokerError::Stale(format!(
                    "job {holder} is no longer the project's current job"
                )));
            } else {
                history.units.clear();
                fresh_units = true;
            }
            let token = if unit.is_some() && same {
                fence.token.max(newest)
            } else {
                fence.token
            };
            state.insert("fence_holder".into(), holder.clone());
            state.insert("fence_token".into(), token.to_string());
        }
        // A unit done: counted once; its progress is that of k of N done.
        let mut asked = t.progress;
        let mut units_frame = None;
        if let (Some(fence), Some(unit)) = (&event.fence, unit) {
            let counted = unit.done_of.filter(|n| *n > 0);
            if let Some(n) = counted {
                let before = field(state, "units_done")
                    .and_then(|d| d.parse::<u32>().ok())
                    .filter(|_| !fresh_units)
                    .unwrap_or(0);
                let done = if unit_was_done { before } else { before + 1 }.min(n);
                state.insert("units_done".into(), done.to_string());
                state.insert("units_total".into(), n.to_string());
                if let Some((from, to)) = unit.progress_span {
                    let span = (i64::from(to) - i64::from(from)) * i64::from(done) / i64::from(n);
                    asked = u8::try_from(i64::from(from) + span).ok();
                }
                units_frame = Some(format!(",\"units_done\":{done},\"units_total\":{n}"));
            }
            history.units.insert(
                unit.name.clone(),
                (fence.token, unit_was_done || counted.is_some()),
            );
        }
        let state = &mut history.state;
        // A history or a run begins: the project goes into `*`'s index, as `publish.lua`
        // tells its publisher.
        let mut begun = history.seq == 0;
        // Runs, as `publish.lua` starts them: after one ended, or with an event that
        // starts one (refused when its holder has published already: a worker was quicker).
        if s.starts_run || (state.contains_key("run_ended") && !s.ends_run) {
            begun = true;
            if let Some(holder) = &s.run_holder
                && history.fences.contains(holder)
            {
                return Err(BrokerError::Stale(format!(
                    "job {holder} has already begun"
                )));
            }
            let script_fields = &CONTRACT.script_fields;
            state.retain(|name, _| name != "run_ended" && script_fields.contains(name));
            state.insert("progress".into(), "0".into());
        }
        // Progress never goes backwards within a run: a lower value is clamped up.
        let mut max: u8 = field(state, "progress")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let progress = asked.map(|p| p.max(max));
        if let Some(p) = progress {
            max = p;
        }
        if let Some(floor) = s.progress_floor {
            max = max.max(floor);
        }
        history.seq += 1;
        let id = EventId::new(&history.epoch, history.seq);
        let mut text = t.assemble(&id.to_string(), progress);
        if let (Some(p), Some(units)) = (progress, &units_frame) {
            // After the progress, as `publish.lua` splices them.
            let at = t.head.len() + id.to_string().len() + t.mid.len();
            let at = at + "\"progress\":".len() + p.to_string().len();
            text.insert_str(at, units);
        }
        let bytes = Bytes::from(text);
        Frame::from_published(bytes.clone())
            .map_err(|e| BrokerError::Unavailable(format!("assembled frame is invalid: {e}")))?;
        let len = bytes.len();
        history.frames.push_back((history.seq, bytes.clone()));
        history.bytes += len;
        let mut freed = 0;
        // Beyond the count or the bytes, the oldest go; the newest frame always stays.
        while history.frames.len() > self.config.max_len
            || (history.bytes > self.config.max_bytes && history.frames.len() > 1)
        {
            freed += history.pop_oldest();
        }
        let state = &mut history.state;
        state.insert("progress".into(), max.to_string());
        state.insert("last_event_id".into(), id.to_string());
        if s.ends_run {
            state.insert("run_ended".into(), "1".into());
            if let Some(fence) = &event.fence {
                state.insert("fence_ended".into(), fence.holder.clone());
            }
        }
        for (name, value) in &s.patch {
            state.insert((*name).to_string(), value.clone());
        }
        if s.ends_run
            && let Some(outbox) = &self.outbox
        {
            outbox.push(project, history.fields(), now_ms());
        }
        let ttl = if s.ends_run {
            self.config.retention
        } else {
            self.config.active_ttl
        };
        history.expires_at = now + ttl;
        let owner = history.owner.clone();
        store.budget.grow(&owner, len);
        store.budget.shrink(&owner, freed);
        if event.keyed {
            store
                .receipts
                .insert(project, &event.receipt, id.clone(), now);
        }
        let all = begun.then(Tag::all);
        let at = crate::wire::now_ms();
        for tag in s.tags.iter().flatten().chain(all.as_ref()) {
            let index = store.tags.entry(tag.clone()).or_default();
            index.insert(project.clone(), at);
        }
        store.enforce(self.config.memory_budget, project, self.deliveries.as_ref());
        // Delivered under the lock: delivery order is history order.
        self.deliveries.deliver_recorded(project, bytes);
        Ok(id)
    }

    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError> {
        self.deliveries.deliver(project, payload);
        Ok(())
    }

    async fn replay(
        &self,
        project: &ProjectId,
        after: Option<&EventId>,
    ) -> Result<Replay, BrokerError> {
        let mut store = self.store.lock();
        if !store.projects.contains_key(project) {
            return Ok(Replay::default());
        }
        let history = store.touch(project);
        if history.seq == 0 || history.expires_at <= Instant::now() {
            return Ok(Replay::default());
        }
        let Some((state, last)) = ProjectState::from_hash(&history.fields()) else {
            return Ok(Replay::default());
        };
        let stored: Vec<Bytes> = match after {
            Some(a) if a.epoch() == history.epoch => history
                .frames
                .iter()
                .filter(|(seq, _)| *seq > a.seq())
                .map(|(_, f)| f.clone())
                .collect(),
            _ => Vec::new(),
        };
        // Read into frames outside the lock: publishes need not wait for it.
        drop(store);
        let after = stored
            .into_iter()
            .filter_map(|bytes| match Frame::from_published(bytes) {
                Ok(frame) => Some(frame),
                Err(err) => {
                    tracing::warn!(project_id = %project, error = %err, "unreadable history entry skipped");
                    None
                }
            })
            .collect();
        Ok(Replay {
            state: Some((state, last)),
            after,
        })
    }

    async fn tagged(
        &self,
        tag: &Tag,
        since_ms: u64,
        after: Option<&TagEntry>,
        count: usize,
    ) -> Result<Vec<TagEntry>, BrokerError> {
        let store = self.store.lock();
        let mut entries: Vec<TagEntry> = store
            .tags
            .get(tag)
            .into_iter()
            .flatten()
            .filter(|(_, at)| **at >= since_ms)
            .map(|(project, at)| TagEntry {
                project: project.clone(),
                at_ms: *at,
            })
            .filter(|e| after.is_none_or(|a| e.comes_after(a)))
            .collect();
        entries.sort_by(|a, b| (b.at_ms, b.project.as_str()).cmp(&(a.at_ms, a.project.as_str())));
        entries.truncate(count);
        Ok(entries)
    }

    async fn untag(&self, tag: &Tag, projects: &[ProjectId]) -> Result<(), BrokerError> {
        self.store.lock().untag([tag], projects);
        Ok(())
    }

    async fn admit(&self, project: &ProjectId, client: &str) -> Result<Admission, BrokerError> {
        let now = Instant::now();
        let mut store = self.store.lock();
        if let Some(history) = store.projects.get(project) {
            let live = history.seq > 0 && history.expires_at > now;
            // Admitted to this client already, its publish refused (an invalid event):
            // counted once, as Redis counts a project once.
            let opened = history.seq == 0 && history.owner.as_deref() == Some(client);
            if live || opened {
                return Ok(Admission::Admitted);
            }
            // Lost or never published to: it is created anew, by this client.
            store.forget(project);
        }
        let owner: Owner = Some(client.into());
        let admission = store.budget.admit(&owner, &self.config.project_quota, now);
        if admission == Admission::Admitted {
            // Charged to the client from now on, whoever publishes to it.
            store.open(project, &owner);
        }
        Ok(admission)
    }

    async fn watchers(&self, project: &ProjectId) -> Result<u64, BrokerError> {
        Ok(self.deliveries.watchers(project) as u64)
    }

    async fn record_complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<(), BrokerError> {
        let now = Instant::now();
        let mut store = self.store.lock();
        store.seen.trim(now);
        let key = (project.clone(), complete.clone());
        store.seen.insert(key, now + self.config.retention);
        Ok(())
    }

    async fn complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<bool, BrokerError> {
        let store = self.store.lock();
        let key = (project.clone(), complete.clone());
        let until = store.seen.ids.get(&key);
        Ok(until.is_some_and(|until| *until > Instant::now()))
    }

    async fn is_ready(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Watched;
    use crate::broker::budget::PROJECT_OVERHEAD;
    use crate::broker::quota::ProjectQuota;
    use crate::broker::{FrameTemplate, StateChange};
    use crate::hub::Hub;
    use crate::wire::EventKind;

    fn broker() -> MemoryBroker {
        broker_with(HistoryConfig::default())
    }

    fn broker_with(config: HistoryConfig) -> MemoryBroker {
        let (hub, changes) = Hub::new(10);
        MemoryBroker::start(
            config,
            hub,
            changes,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
    }

    fn event(receipt: &str, keyed: bool) -> PreparedEvent {
        PreparedEvent {
            kind: EventKind::Log,
            template: FrameTemplate {
                head: r#"{"event":"log","id":""#.into(),
                mid: r#"","data":{"#.into(),
                tail: r#""level":"INFO","message":"m"}}"#.into(),
                progress: None,
            },
            state: StateChange::default(),
            receipt: receipt.into(),
            keyed,
            retry: false,
            fence: None,
        }
    }

    /// Whatever implements the broker's traits: what it was handed, in order.
    #[derive(Debug, Default)]
    struct Handed(Mutex<Vec<String>>);

    impl Deliveries for Handed {
        fn deliver(&self, project: &ProjectId, payload: Bytes) {
            self.0
                .lock()
                .push(format!("channel {project} {}", payload.len()));
        }
        fn deliver_recorded(&self, project: &ProjectId, payload: Bytes) {
            let frame = String::from_utf8_lossy(&payload).into_owned();
            self.0.lock().push(format!("recorded {project} {frame}"));
        }
        fn deliver_missed(&self, project: &ProjectId, frames: Vec<Frame>) {
            self.0
                .lock()
                .push(format!("missed {project} {}", frames.len()));
        }
        fn reset(&self, project: &ProjectId, _: &ProjectState, last: EventId) {
            self.0.lock().push(format!("reset {project} {last}"));
        }
        fn broker_status(&self, available: bool) {
            self.0.lock().push(format!("available {available}"));
        }
        fn joined_so_far(&self) -> u64 {
            0
        }
        fn is_watched(&self, _: &ProjectId) -> bool {
            false
        }
        fn watchers(&self, _: &ProjectId) -> usize {
            0
        }
        fn presence(&self) -> Vec<(ProjectId, usize)> {
            Vec::new()
        }
        fn track_presence(&self) {}
        fn presence_changed(&self) -> &tokio::sync::Notify {
            static NEVER: std::sync::LazyLock<tokio::sync::Notify> =
                std::sync::LazyLock::new(tokio::sync::Notify::new);
            &NEVER
        }
        fn presence_changes(&self) -> Vec<(ProjectId, usize)> {
            Vec::new()
        }
    }

    impl Watched for Handed {
        fn project(&self) -> &ProjectId {
            static P: std::sync::LazyLock<ProjectId> =
                std::sync::LazyLock::new(|| ProjectId::parse("watched").unwrap());
            &P
        }
        fn resume_point(&self) -> Option<EventId> {
            None
        }
        fn resume_point_ahead(&self) -> Option<EventId> {
            None
        }
        fn set_subscribed_state(&self, _: u64, _: Option<(ProjectState, EventId)>) {}
        fn mark_subscribed(&self) {
            self.0.lock().push("subscribed".into());
        }
    }

    // The broker hands what it records and what it is asked to watch to whatever
    // implements its traits (the hub is one): it needs no hub.
    #[tokio::test]
    async fn the_broker_hands_on_to_its_own_traits_without_a_hub() {
        let handed = Arc::new(Handed::default());
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let broker = MemoryBroker::start(
            HistoryConfig::default(),
            Arc::clone(&handed) as Arc<dyn Deliveries>,
            changes,
            CancellationToken::new(),
            &TaskTracker::new(),
        );
        let p = ProjectId::parse("p").unwrap();
        let id = broker.publish(&p, &event("r", false)).await.unwrap();
        broker
            .publish_raw(&p, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let watched = Arc::new(Handed::default());
        changes_tx
            .send(SubscriptionChange::Subscribe(
                Arc::clone(&watched) as Arc<dyn Watched>
            ))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while watched.0.lock().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the subscription is confirmed");
        assert_eq!(*watched.0.lock(), ["subscribed"]);
        let frame =
            format!(r#"{{"event":"log","id":"{id}","data":{{"level":"INFO","message":"m"}}}}"#);
        assert_eq!(
            *handed.0.lock(),
            [format!("recorded p {frame}"), "channel p 2".to_string()]
        );
    }

    // Only a caller's idempotency key leaves a receipt (40,000 unkeyed publishes kept
    // 9 MB of them); a keyed retry still gets its first id.
    /// A progress_update of `unit` of job `j` under `token` (done: of `n` units).
    fn unit_event(unit: &str, token: u64, done_of: Option<u32>) -> PreparedEvent {
        PreparedEvent {
            kind: EventKind::ProgressUpdate,
            template: FrameTemplate {
                head: r#"{"event":"progress_update","id":""#.into(),
                mid: r#"","data":{"#.into(),
                tail: r#","status":"ASSETS_GENERATING"}}"#.into(),
                progress: Some(20),
            },
            state: StateChange {
                unit: Some(crate::broker::Unit {
                    name: unit.into(),
                    done_of,
                    progress_span: Some((20, 60)),
                }),
                ..StateChange::default()
            },
            receipt: format!("{unit}-{token}-{done_of:?}"),
            keyed: false,
            retry: false,
            fence: Some(crate::broker::Fence {
                holder: "j".into(),
                token,
            }),
        }
    }

    // As `publish.lua` (issue 25 §1): a job's parallel units do not fence each other
    // out; a unit's older attempt is refused; a unit is counted done once, and the
    // progress is that of k of N done.
    #[tokio::test]
    async fn parallel_units_of_a_job_fence_only_their_own_older_attempts() {
        let broker = broker();
        let p = ProjectId::parse("units").unwrap();
        // Four units claimed 1..4; the newest publishes first.
        broker.publish(&p, &unit_event("d", 4, None)).await.unwrap();
        for (unit, token) in [("a", 1), ("b", 2), ("c", 3)] {
            broker
                .publish(&p, &unit_event(unit, token, None))
                .await
                .unwrap();
        }
        // Unit a is redelivered (claim 5): its first attempt is refused from then on.
        broker.publish(&p, &unit_event("a", 5, None)).await.unwrap();
        let stale = broker.publish(&p, &unit_event("a", 1, Some(4))).await;
        assert!(matches!(stale, Err(BrokerError::Stale(_))), "{stale:?}");
        // A claim of the whole job below the newest is refused as before.
        let mut whole = unit_event("x", 3, None);
        whole.state.unit = None;
        let stale = broker.publish(&p, &whole).await;
        assert!(matches!(stale, Err(BrokerError::Stale(_))), "{stale:?}");
        // Done in any order, a redelivered one counted once.
        for (unit, token) in [("c", 3), ("a", 5), ("c", 6), ("d", 4), ("b", 2)] {
            broker
                .publish(&p, &unit_event(unit, token, Some(4)))
                .await
                .unwrap();
        }
        let store = broker.store.lock();
        let history = &store.projects[&p];
        let frames: Vec<String> = history
            .frames
            .iter()
            .map(|(_, f)| String::from_utf8_lossy(f).into_owned())
            .collect();
        let counts: Vec<&str> = frames
            .iter()
            .filter_map(|f| f.split("\"units_done\":").nth(1))
            .map(|rest| rest.split('}').next().unwrap_or_default())
            .collect();
        assert_eq!(
            counts,
            [
                r#"1,"units_total":4,"status":"ASSETS_GENERATING""#,
                r#"2,"units_total":4,"status":"ASSETS_GENERATING""#,
                r#"2,"units_total":4,"status":"ASSETS_GENERATING""#,
                r#"3,"units_total":4,"status":"ASSETS_GENERATING""#,
                r#"4,"units_total":4,"status":"ASSETS_GENERATING""#,
            ]
        );
        assert!(
            frames.last().unwrap().contains(r#""progress":60,"#),
            "{frames:?}"
        );
        let state = &history.state;
        assert_eq!(state["units_done"], "4");
        assert_eq!(state["units_total"], "4");
        assert_eq!(state["fence_token"], "6");
    }

    #[tokio::test]
    async fn only_keyed_publishes_leave_a_receipt() {
        let broker = broker();
        let p = ProjectId::parse("p").unwrap();
        for i in 0..100 {
            broker
                .publish(&p, &event(&format!("r{i}"), false))
                .await
                .unwrap();
        }
        assert_eq!(broker.footprint().1, 0, "no receipt for unkeyed publishes");
        let first = broker.publish(&p, &event("key", true)).await.unwrap();
        let retry = broker.publish(&p, &event("key", true)).await.unwrap();
        assert_eq!(first, retry);
        assert_eq!(broker.footprint().1, 1);
    }

    // Receipts age out by the sweep, whether their project publishes again or not.
    #[tokio::test(start_paused = true)]
    async fn receipts_age_out_without_another_publish() {
        let broker = broker();
        let p = ProjectId::parse("p").unwrap();
        broker.publish(&p, &event("key", true)).await.unwrap();
        tokio::time::advance(RECEIPT_TTL + Duration::from_secs(1)).await;
        broker.sweep_now();
        assert_eq!(broker.footprint().1, 0);
    }

    // A project costs the budget its overhead as well as its frames: 1,000 idle projects
    // of one tiny event each, under a budget of 100 projects' overhead, leave at most 100
    // (before, the budget saw ~100 bytes each and kept all 1,000: issue 23 §5).
    #[tokio::test]
    async fn the_budget_counts_each_projects_overhead() {
        let budget = 100 * PROJECT_OVERHEAD;
        let broker = broker_with(HistoryConfig {
            memory_budget: budget,
            ..HistoryConfig::default()
        });
        for i in 0..1000 {
            let p = ProjectId::parse(&format!("p{i}")).unwrap();
            broker.publish(&p, &event("r", false)).await.unwrap();
        }
        assert!(broker.projects() <= 100, "{} projects", broker.projects());
        assert!(broker.footprint().0 <= budget, "{}", broker.footprint().0);
        assert!(broker.projects() >= 90, "the newest are kept");
    }

    // Over budget, memory is taken from the client holding the most: 200 projects of one
    // client, 10 times the budget, evict that client's own, never the other's project
    // (the least recently used of all, and nobody watches it).
    #[tokio::test]
    async fn a_flood_is_paid_for_by_the_client_that_sent_it() {
        let budget = 20 * PROJECT_OVERHEAD;
        let broker = broker_with(HistoryConfig {
            memory_budget: budget,
            ..HistoryConfig::default()
        });
        let victim = ProjectId::parse("victim").unwrap();
        assert_eq!(
            broker.admit(&victim, "v").await.unwrap(),
            Admission::Admitted
        );
        broker.publish(&victim, &event("r", false)).await.unwrap();
        for i in 0..200 {
            let p = ProjectId::parse(&format!("a{i}")).unwrap();
            assert_eq!(broker.admit(&p, "a").await.unwrap(), Admission::Admitted);
            broker.publish(&p, &event("r", false)).await.unwrap();
        }
        assert!(broker.footprint().0 <= budget, "{}", broker.footprint().0);
        let store = broker.store.lock();
        assert!(
            store.projects.contains_key(&victim),
            "the victim's project stays"
        );
        assert_eq!(store.budget.projects_of(&Some("v".into())), 1);
        assert!(store.budget.projects_of(&Some("a".into())) < 20);
    }

    // A project admitted but not yet published to (its event was refused as invalid) is
    // counted once, however often its client tries again; another client that takes it
    // over is counted as creating it.
    #[tokio::test]
    async fn a_project_is_counted_once_against_its_clients_rate() {
        let broker = broker_with(HistoryConfig {
            project_quota: ProjectQuota {
                max_per_client: 0,
                per_minute: 1,
            },
            ..HistoryConfig::default()
        });
        let p = ProjectId::parse("p").unwrap();
        for _ in 0..3 {
            assert_eq!(broker.admit(&p, "a").await.unwrap(), Admission::Admitted);
        }
        let q = ProjectId::parse("q").unwrap();
        assert!(matches!(
            broker.admit(&q, "a").await.unwrap(),
            Admission::Refused { .. }
        ));
        assert_eq!(broker.admit(&p, "b").await.unwrap(), Admission::Admitted);
        assert!(matches!(
            broker.admit(&q, "b").await.unwrap(),
            Admission::Refused { .. }
        ));
    }

    // The bytes held follow what is kept: never over a project's budget, and nothing
    // once the history has expired.
    #[tokio::test(start_paused = true)]
    async fn bytes_held_follow_what_is_kept() {
        let broker = broker_with(HistoryConfig {
            max_bytes: 1000,
            ..HistoryConfig::default()
        });
        let p = ProjectId::parse("p").unwrap();
        for i in 0..2000 {
            broker
                .publish(&p, &event(&format!("{i}"), false))
                .await
                .unwrap();
            let frames = broker.footprint().0 - PROJECT_OVERHEAD;
            assert!(frames <= 1000, "{frames}");
        }
        assert!(broker.footprint().0 - PROJECT_OVERHEAD > 900);
        tokio::time::advance(HistoryConfig::default().active_ttl).await;
        broker.sweep_now();
        assert_eq!(broker.footprint().0, 0);
    }
}
