//! The in-process broker: the self-contained mode of `serve`.
//!
//! It keeps the same contract as Redis (history with epochs, state, progress clamping,
//! retention) so the same integration tests run against both. Publishing appends to
//! the history and hands the frame to the hub under one lock, so history order and
//! delivery order are the same.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Broker, BrokerError, HistoryConfig, Replay};
use super::{JobClaim, PreparedEvent};
use crate::hub::{Hub, SubscriptionChange};
use crate::wire::event::ProgressStatus;
use crate::wire::{EventId, EventKind, Frame, ProjectId, ProjectState};

/// How often expired histories and receipts are swept from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long a receipt is remembered (`publish.lua`: `SET ... EX 600`).
const RECEIPT_TTL: Duration = Duration::from_secs(600);
/// Most idempotency keys remembered in all (beyond it the oldest go first).
const MAX_RECEIPTS: usize = 100_000;

pub struct MemoryBroker {
    hub: Arc<Hub>,
    config: HistoryConfig,
    store: Arc<Mutex<Store>>,
}

/// Every project's history, and what bounds them: their bytes in all, the order in
/// which they were last used (to forget the least recently used first), and the
/// callers' idempotency keys.
#[derive(Default)]
struct Store {
    projects: HashMap<ProjectId, History>,
    /// Last use (publish or replay) → project, oldest first. A project's entry moves
    /// to the end on every use, so eviction takes from the front.
    lru: BTreeMap<u64, ProjectId>,
    next_use: u64,
    /// Bytes of every frame held, against `HistoryConfig::memory_budget`.
    bytes: usize,
    receipts: Receipts,
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
    /// Its key in `Store::lru`.
    used: u64,
    state: ProjectState,
    expires_at: Instant,
    /// The job fence of `publish.lua`: the newest claim seen of the running job, and
    /// the last job whose `complete` is in (kept across the next run's reset).
    fence: Option<JobClaim>,
    ended_job: Option<String>,
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
    fn new(used: u64) -> Self {
        Self {
            epoch: EventId::new_epoch(),
            seq: 0,
            frames: VecDeque::new(),
            bytes: 0,
            used,
            state: ProjectState::empty(),
            expires_at: Instant::now(),
            fence: None,
            ended_job: None,
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
    /// Marks the project used now (creating its history if it has none).
    fn touch(&mut self, project: &ProjectId) -> &mut History {
        self.next_use += 1;
        let used = self.next_use;
        self.lru.insert(used, project.clone());
        let history = self
            .projects
            .entry(project.clone())
            .or_insert_with(|| History::new(used));
        if history.used != used {
            self.lru.remove(&history.used);
            history.used = used;
        }
        history
    }

    fn forget(&mut self, project: &ProjectId) {
        if let Some(history) = self.projects.remove(project) {
            self.lru.remove(&history.used);
            self.bytes -= history.bytes;
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
        self.receipts.trim(now);
    }

    /// Brings the bytes held back within `budget`: forgets the least recently used
    /// projects nobody watches (never `keep`, the one just published to); if the
    /// watched ones alone are over it, drops their oldest frames, least recently used
    /// first (their state stays; a resume from before them gets `recovered: false`).
    fn enforce(&mut self, budget: usize, keep: &ProjectId, hub: &Hub) {
        if self.bytes <= budget {
            return;
        }
        // Only as many as cover the excess are looked at (usually one).
        let excess = self.bytes - budget;
        let (mut covered, mut idle) = (0, Vec::new());
        for project in self.lru.values() {
            if covered >= excess {
                break;
            }
            if project != keep && !hub.is_watched(project) {
                covered += self.projects.get(project).map_or(0, |h| h.bytes);
                idle.push(project.clone());
            }
        }
        for project in idle {
            tracing::debug!(project_id = %project, "memory budget: forgot an idle project's history");
            self.forget(&project);
        }
        if self.bytes <= budget {
            return;
        }
        let (mut covered, mut order) = (0, Vec::new());
        let excess = self.bytes - budget;
        for project in self.lru.values() {
            if covered >= excess {
                break;
            }
            covered += self.projects.get(project).map_or(0, |h| h.bytes);
            order.push(project.clone());
        }
        for project in order {
            let Some(history) = self.projects.get_mut(&project) else {
                continue;
            };
            // The newest frame of the project just published to stays.
            let floor = usize::from(&project == keep);
            while self.bytes > budget && history.frames.len() > floor {
                self.bytes -= history.pop_oldest();
            }
            if self.bytes <= budget {
                return;
            }
        }
    }
}

impl MemoryBroker {
    pub fn start(
        config: HistoryConfig,
        hub: Arc<Hub>,
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
        Self { hub, config, store }
    }

    /// Bytes of history held in all, and idempotency keys remembered.
    #[cfg(test)]
    fn footprint(&self) -> (usize, usize) {
        let store = self.store.lock();
        (store.bytes, store.receipts.len())
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
            // Expired: the history is lost, as a Redis key with a TTL would be.
            let used = history.used;
            let freed = history.bytes;
            *history = History::new(used);
            store.bytes -= freed;
        }
        let history = store.touch(project);
        if let Some(claim) = &event.job {
            if history.ended_job.as_ref() == Some(&claim.job_id) {
                return Err(BrokerError::Stale(format!(
                    "job {} has already completed",
                    claim.job_id
                )));
            }
            if let Some(fence) = &history.fence
                && fence.job_id == claim.job_id
                && claim.token < fence.token
            {
                return Err(BrokerError::Stale(format!(
                    "claim {} of job {} was superseded by claim {}",
                    claim.token, claim.job_id, fence.token
                )));
            }
            history.fence = Some(claim.clone());
        }
        // Runs, as `publish.lua` starts them: after `complete`, or with a QUEUED update
        // (refused when its job's run has begun or ended: a worker was quicker).
        if s.starts_run
            && let Some(job) = &s.job_id
            && (history.fence.as_ref().is_some_and(|f| &f.job_id == job)
                || history.ended_job.as_ref() == Some(job))
        {
            return Err(BrokerError::Stale(format!("job {job} has already begun")));
        }
        let state = &mut history.state;
        let finished = matches!(state.status.as_deref(), Some("COMPLETED" | "FAILED"));
        if s.starts_run || (finished && event.kind != EventKind::Complete) {
            *state = ProjectState {
                completed_job: state.completed_job.take(),
                job_id: s.job_id.clone(),
                queue_position: s.queue_position,
                ..ProjectState::empty()
            };
        }
        // Progress never goes backwards within a run: a lower value is clamped up.
        let progress = t.progress.map(|p| p.max(state.progress));
        if let Some(p) = progress {
            state.progress = p;
        }
        if let Some(floor) = s.progress_floor {
            state.progress = state.progress.max(floor);
        }
        history.seq += 1;
        let id = EventId::new(&history.epoch, history.seq);
        let text = t.assemble(&id.to_string(), progress);
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
        if let Some(v) = &s.status {
            state.status = Some(v.clone());
            if v != ProgressStatus::Queued.as_str() {
                // A place in the queue means something only while the run waits there.
                state.queue_position = None;
            }
        }
        if let Some(v) = &s.current_stage {
            state.current_stage = Some(v.clone());
        }
        if let Some(v) = s.estimated_remaining {
            state.estimated_remaining = v;
        }
        if let Some(v) = &s.youtube_url {
            state.youtube_url = Some(v.clone());
        }
        if event.kind == EventKind::Complete
            && let Some(claim) = &event.job
        {
            state.completed_job = Some(claim.job_id.clone());
            state.job_id = Some(claim.job_id.clone());
            history.ended_job = Some(claim.job_id.clone());
        }
        state.last_event_id = Some(id.to_string());
        state.updated_at = Some(s.updated_at.clone());
        let ttl = if event.kind == EventKind::Complete {
            self.config.retention
        } else {
            self.config.active_ttl
        };
        history.expires_at = now + ttl;
        store.bytes = store.bytes + len - freed;
        if event.keyed {
            store
                .receipts
                .insert(project, &event.receipt, id.clone(), now);
        }
        store.enforce(self.config.memory_budget, project, &self.hub);
        // Delivered under the lock: delivery order is history order.
        self.hub.deliver(project, bytes);
        Ok(id)
    }

    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError> {
        self.hub.deliver(project, payload);
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
        let last = EventId::new(&history.epoch, history.seq);
        let stored: Vec<Bytes> = match after {
            Some(a) if a.epoch() == history.epoch => history
                .frames
                .iter()
                .filter(|(seq, _)| *seq > a.seq())
                .map(|(_, f)| f.clone())
                .collect(),
            _ => Vec::new(),
        };
        let state = history.state.clone();
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
    use crate::broker::{FrameTemplate, StateChange};

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
            job: None,
        }
    }

    // Only a caller's idempotency key leaves a receipt (40,000 unkeyed publishes kept
    // 9 MB of them); a keyed retry still gets its first id.
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
            assert!(broker.footprint().0 <= 1000, "{}", broker.footprint().0);
        }
        assert!(broker.footprint().0 > 900);
        tokio::time::advance(HistoryConfig::default().active_ttl).await;
        broker.sweep_now();
        assert_eq!(broker.footprint().0, 0);
    }
}
