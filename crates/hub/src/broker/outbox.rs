//! The webhook outbox: every `complete` (a run's end) waiting to be told to the
//! backend's webhook endpoints (`webhook/`). The broker writes an entry in the same
//! atomic step as the `complete` itself, so an event that was published is never missed
//! and one that was refused is never told.
//!
//! Taking an entry is a lease, not a removal: the entry stays until [`Outbox::done`];
//! a hub that dies while holding it leaves it to another hub (or itself, restarted) once
//! the lease runs out. With Redis (`redis/outbox.rs`) the outbox is durable and shared by
//! every hub; in process ([`MemoryOutbox`]) it lives and dies with the hub.
//!
//! Besides a run's end, the hubs' scans append `job.stalled` (a run under way gone
//! silent) and `project.vacated` (a project watched before, without a watcher for a
//! grace), each once: with Redis through scripts that guard it across hubs, in process
//! from what the in-process broker shows ([`MemorySource`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::BrokerError;
use crate::wire::ProjectId;
use crate::wire::stall::{Bounds, StallReason};

/// The webhook types the scans append, as they are named in an entry's `kind`.
pub const STALLED: &str = "job.stalled";
pub const VACATED: &str = "project.vacated";
/// The state field an entry of [`VACATED`] carries: when (Unix ms) the vacancy began.
pub const VACANT_SINCE: &str = "vacant_since";

/// One run's end, to be told.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Unique and stable across retries, hubs and restarts: the webhook's `webhook-id`
    /// is made of it.
    pub id: String,
    pub project: ProjectId,
    /// The project's state hash as the `complete` left it (see `ProjectState::from_hash`).
    pub state: HashMap<String, String>,
    /// When the `complete` was published (Unix ms): retries stop a configured time after.
    pub enqueued_ms: u64,
    /// The webhook's type when it is not a run's end (`job.stalled`), and why (a
    /// `wire::stall::StallReason`'s word).
    pub kind: Option<String>,
    pub reason: Option<String>,
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `max` entries to deliver: new ones, and those whose lease ran out (a hub
    /// died holding them). Waits a little (about a second) when there are none.
    async fn take(&self, max: usize) -> Result<Vec<OutboxEntry>, BrokerError>;
    /// Renews the lease on an entry still being delivered (retries can take hours).
    async fn keep(&self, id: &str) -> Result<(), BrokerError>;
    /// The entry was delivered to every endpoint (or given up): it goes.
    async fn done(&self, id: &str) -> Result<(), BrokerError>;
    /// Entries not yet done, all hubs together.
    async fn pending(&self) -> Result<u64, BrokerError>;
    /// Appends the runs under way silent for longer than their stage's bound, or whose worker is
    /// `lost` (`job.stalled`), each once per stall over every hub (told again when a
    /// stall told `silent` turns out `worker_lost`); returns how many this call
    /// appended.
    async fn scan_stalled(
        &self,
        bounds: &Bounds,
        lost: &HashSet<ProjectId>,
    ) -> Result<usize, BrokerError>;
    /// Appends the projects watched before that have had no watcher (over every hub)
    /// for `grace` (`project.vacated`), each once per vacancy over every hub; returns
    /// how many this call appended.
    async fn scan_vacated(&self, grace: Duration) -> Result<usize, BrokerError>;
    /// Whether the endpoint (its URL) answered 410 Gone, on any hub sharing the outbox.
    async fn is_gone(&self, endpoint: &str) -> Result<bool, BrokerError>;
    /// Records that the endpoint answered 410 Gone: every hub sends it nothing more
    /// (with Redis, until an operator removes it; in process, until the hub restarts).
    async fn set_gone(&self, endpoint: &str) -> Result<(), BrokerError>;
}

/// How long [`MemoryOutbox::take`] waits for an entry before answering none.
const MEMORY_WAIT: Duration = Duration::from_secs(1);

/// What the in-process outbox's scans read: the in-process broker's projects and this
/// process's watchers (the in-process broker implements it).
pub trait MemorySource: Send + Sync + 'static {
    /// The state of each run under way silent for longer than `bound`, by project.
    fn stalled_runs(
        &self,
        bounds: &Bounds,
        lost: &HashSet<ProjectId>,
    ) -> Vec<(ProjectId, HashMap<String, String>, StallReason)>;
    /// The projects watched now, and those watched at some time since the last call
    /// that are no longer (a watcher came and went between two scans).
    fn watched(&self) -> (HashSet<ProjectId>, HashSet<ProjectId>);
    /// The project's state fields (none for a project without history).
    fn state(&self, project: &ProjectId) -> HashMap<String, String>;
}

/// The in-process outbox: not durable (a restart forgets what was not yet delivered),
/// one hub only; leases are not needed, an entry taken stays with its task until done.
#[derive(Default)]
pub struct MemoryOutbox {
    inner: Mutex<MemoryEntries>,
    arrived: Notify,
    gone: Mutex<HashSet<String>>,
    source: OnceLock<Arc<dyn MemorySource>>,
    /// Project → the last event of the stall told (a new stall has another).
    stalls_told: Mutex<HashMap<ProjectId, (String, StallReason)>>,
    /// Project watched at the last scan (`None`), or without a watcher since then.
    vacancies: Mutex<HashMap<ProjectId, Option<tokio::time::Instant>>>,
}

#[derive(Default)]
struct MemoryEntries {
    waiting: VecDeque<OutboxEntry>,
    /// Taken and not yet done.
    taken: usize,
    next_id: u64,
}

impl MemoryOutbox {
    /// Adds a run's end (the in-process broker calls this as it publishes the `complete`).
    pub fn push(&self, project: &ProjectId, state: HashMap<String, String>, enqueued_ms: u64) {
        self.push_kind(project, state, enqueued_ms, None, None);
    }

    /// Where the scans read runs and watchers from (set once, by the in-process broker).
    pub fn attach(&self, source: Arc<dyn MemorySource>) {
        let _ = self.source.set(source);
    }

    fn push_kind(
        &self,
        project: &ProjectId,
        state: HashMap<String, String>,
        enqueued_ms: u64,
        kind: Option<&str>,
        reason: Option<&str>,
    ) {
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = format!("{enqueued_ms}-{}", inner.next_id);
        inner.waiting.push_back(OutboxEntry {
            id,
            project: project.clone(),
            state,
            enqueued_ms,
            kind: kind.map(str::to_string),
            reason: reason.map(str::to_string),
        });
        drop(inner);
        self.arrived.notify_one();
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn take(&self, max: usize) -> Result<Vec<OutboxEntry>, BrokerError> {
        let arrived = self.arrived.notified();
        let taken = self.drain(max);
        if !taken.is_empty() {
            return Ok(taken);
        }
        let _ = tokio::time::timeout(MEMORY_WAIT, arrived).await;
        Ok(self.drain(max))
    }

    async fn keep(&self, _id: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn done(&self, _id: &str) -> Result<(), BrokerError> {
        let mut inner = self.inner.lock();
        inner.taken = inner.taken.saturating_sub(1);
        Ok(())
    }

    async fn pending(&self) -> Result<u64, BrokerError> {
        let inner = self.inner.lock();
        Ok((inner.waiting.len() + inner.taken) as u64)
    }

    async fn scan_stalled(
        &self,
        bounds: &Bounds,
        lost: &HashSet<ProjectId>,
    ) -> Result<usize, BrokerError> {
        let Some(source) = self.source.get() else {
            return Ok(0);
        };
        let stalled = source.stalled_runs(bounds, lost);
        let mut told = self.stalls_told.lock();
        // A run no longer stalled has published (or ended): its next stall is a new one.
        told.retain(|project, _| stalled.iter().any(|(p, _, _)| p == project));
        let mut appended = 0;
        for (project, state, reason) in stalled {
            let last = state.get("last_event_id").cloned().unwrap_or_default();
            // Told once per stall, and once more if a stall told `silent` turns out
            // `worker_lost` (never the other way round), as `stall.lua` does.
            match told.get(&project) {
                Some((was, StallReason::WorkerLost)) if *was == last => continue,
                Some((was, _)) if *was == last && reason == StallReason::Silent => continue,
                _ => {}
            }
            told.insert(project.clone(), (last, reason));
            self.push_kind(
                &project,
                state,
                now_ms(),
                Some(STALLED),
                Some(reason.as_str()),
            );
            appended += 1;
        }
        Ok(appended)
    }

    async fn scan_vacated(&self, grace: Duration) -> Result<usize, BrokerError> {
        let Some(source) = self.source.get() else {
            return Ok(0);
        };
        let (watched, left) = source.watched();
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        {
            let mut vacancies = self.vacancies.lock();
            for project in &watched {
                vacancies.insert(project.clone(), None);
            }
            // Watched since the last scan, vacant again: a new vacancy, from now.
            for project in left.into_iter().filter(|p| !watched.contains(p)) {
                vacancies.insert(project, Some(now));
            }
            vacancies.retain(|project, since| {
                if watched.contains(project) {
                    return true;
                }
                let began = *since.get_or_insert(now);
                if now.duration_since(began) < grace {
                    return true;
                }
                due.push((project.clone(), began));
                false
            });
        }
        for (project, began) in &due {
            let mut state = source.state(project);
            let ago = now.duration_since(*began).as_millis() as u64;
            state.insert(
                VACANT_SINCE.into(),
                now_ms().saturating_sub(ago).to_string(),
            );
            self.push_kind(project, state, now_ms(), Some(VACATED), None);
        }
        Ok(due.len())
    }

    async fn is_gone(&self, endpoint: &str) -> Result<bool, BrokerError> {
        Ok(self.gone.lock().contains(endpoint))
    }

    async fn set_gone(&self, endpoint: &str) -> Result<(), BrokerError> {
        self.gone.lock().insert(endpoint.to_string());
        Ok(())
    }
}

impl MemoryOutbox {
    fn drain(&self, max: usize) -> Vec<OutboxEntry> {
        let mut inner = self.inner.lock();
        let n = max.min(inner.waiting.len());
        inner.taken += n;
        inner.waiting.drain(..n).collect()
    }
}

/// Now, in Unix milliseconds (the outbox's clock for an entry's age).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_taken_once_in_order_and_counted_until_done() {
        let outbox = MemoryOutbox::default();
        let project = ProjectId::parse("p1").unwrap();
        for n in 0..3 {
            outbox.push(&project, HashMap::from([("seq".into(), n.to_string())]), 5);
        }
        let first = outbox.take(2).await.unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].state["seq"], "0");
        assert_ne!(first[0].id, first[1].id);
        let rest = outbox.take(10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(outbox.pending().await.unwrap(), 3);
        for entry in first.iter().chain(&rest) {
            outbox.done(&entry.id).await.unwrap();
        }
        assert_eq!(outbox.pending().await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_outbox_answers_none_after_a_while() {
        let outbox = MemoryOutbox::default();
        assert!(outbox.take(5).await.unwrap().is_empty());
    }
}
