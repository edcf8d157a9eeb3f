//! The in-process broker: the self-contained mode of `serve`.
//!
//! It keeps the same contract as Redis (history with epochs, state, progress clamping,
//! retention) so the same integration tests run against both. Publishing appends to
//! the history and hands the frame to the hub under one lock, so history order and
//! delivery order are the same.

use std::collections::{HashMap, VecDeque};
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
use crate::wire::{EventId, EventKind, Frame, ProjectId, ProjectState};

/// How often expired histories are swept from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct MemoryBroker {
    hub: Arc<Hub>,
    config: HistoryConfig,
    projects: Arc<Mutex<HashMap<ProjectId, History>>>,
}

/// One project's history and state.
struct History {
    epoch: String,
    seq: u64,
    frames: VecDeque<(u64, Frame)>,
    state: ProjectState,
    expires_at: Instant,
    /// The job fence of `publish.lua`: the newest claim seen of the running job, and
    /// the last job whose `complete` is in (kept across the next run's reset).
    fence: Option<JobClaim>,
    ended_job: Option<String>,
    /// Callers' idempotency keys (keyed receipts) of the last 10 minutes and the ids
    /// they got, as `publish.lua` keeps receipts: a retry gets its first id and appends
    /// nothing. Kept across the history's expiry, as Redis keeps a receipt key.
    receipts: HashMap<String, EventId>,
    receipt_order: VecDeque<(String, Instant)>,
}

/// How long a receipt is remembered (`publish.lua`: `SET ... EX 600`).
const RECEIPT_TTL: Duration = Duration::from_secs(600);
/// Most keys remembered per project (beyond it the oldest go first).
const MAX_RECEIPTS: usize = 100_000;

impl History {
    fn new() -> Self {
        Self {
            epoch: EventId::new_epoch(),
            seq: 0,
            frames: VecDeque::new(),
            state: ProjectState::empty(),
            expires_at: Instant::now(),
            fence: None,
            ended_job: None,
            receipts: HashMap::new(),
            receipt_order: VecDeque::new(),
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
        let projects: Arc<Mutex<HashMap<ProjectId, History>>> = Arc::default();
        let swept = Arc::clone(&projects);
        tracker.spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sweep.tick() => {
                        let now = Instant::now();
                        swept.lock().retain(|_, h| h.expires_at > now);
                    }
                    change = changes.recv() => match change {
                        Some(SubscriptionChange::Subscribe(topic)) => topic.mark_subscribed(),
                        Some(SubscriptionChange::Unsubscribe(_)) => {}
                        None => return,
                    },
                }
            }
        });
        Self {
            hub,
            config,
            projects,
        }
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
        let mut projects = self.projects.lock();
        let history = projects.entry(project.clone()).or_insert_with(History::new);
        if history.expires_at <= now && history.seq > 0 {
            // Expired: the history is lost, as a Redis key with a TTL would be (not the
            // receipts, which have their own).
            let receipts = std::mem::take(&mut history.receipts);
            let order = std::mem::take(&mut history.receipt_order);
            *history = History::new();
            history.receipts = receipts;
            history.receipt_order = order;
        }
        while let Some((receipt, at)) = history.receipt_order.front()
            && (now.duration_since(*at) > RECEIPT_TTL || history.receipt_order.len() > MAX_RECEIPTS)
        {
            history.receipts.remove(receipt);
            history.receipt_order.pop_front();
        }
        if let Some(id) = history.receipts.get(&event.receipt) {
            return Ok(id.clone());
        }
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
        let state = &mut history.state;
        let finished = matches!(state.status.as_deref(), Some("COMPLETED" | "FAILED"));
        if finished && event.kind != EventKind::Complete {
            state.progress = 0;
            state.youtube_url = None;
            state.completed_job = None;
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
        let frame = Frame::from_published(bytes.clone())
            .map_err(|e| BrokerError::Unavailable(format!("assembled frame is invalid: {e}")))?;
        history.frames.push_back((history.seq, frame));
        while history.frames.len() > self.config.max_len {
            history.frames.pop_front();
        }
        let state = &mut history.state;
        if let Some(v) = &s.status {
            state.status = Some(v.clone());
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
        history.receipts.insert(event.receipt.clone(), id.clone());
        history
            .receipt_order
            .push_back((event.receipt.clone(), now));
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
        let projects = self.projects.lock();
        let Some(history) = projects.get(project) else {
            return Ok(Replay::default());
        };
        if history.seq == 0 || history.expires_at <= Instant::now() {
            return Ok(Replay::default());
        }
        let last = EventId::new(&history.epoch, history.seq);
        let after_frames = match after {
            Some(a) if a.epoch() == history.epoch => history
                .frames
                .iter()
                .filter(|(seq, _)| *seq > a.seq())
                .map(|(_, f)| f.clone())
                .collect(),
            _ => Vec::new(),
        };
        Ok(Replay {
            state: Some((history.state.clone(), last)),
            after: after_frames,
        })
    }

    async fn is_ready(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
