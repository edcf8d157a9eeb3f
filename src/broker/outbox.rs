//! The webhook outbox: every `complete` (a run's end) waiting to be told to the
//! backend's webhook endpoints (`webhook/`). The broker writes an entry in the same
//! atomic step as the `complete` itself, so an event that was published is never missed
//! and one that was refused is never told.
//!
//! Taking an entry is a lease, not a removal: the entry stays until [`Outbox::done`];
//! a hub that dies while holding it leaves it to another hub (or itself, restarted) once
//! the lease runs out. With Redis (`redis/outbox.rs`) the outbox is durable and shared by
//! every hub; in process ([`MemoryOutbox`]) it lives and dies with the hub.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::BrokerError;
use crate::wire::ProjectId;
use crate::wire::stall::Bounds;

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
    /// appended. The in-process outbox has no such scan (it sends no `job.stalled`).
    async fn scan_stalled(
        &self,
        _bounds: &Bounds,
        _lost: &HashSet<ProjectId>,
    ) -> Result<usize, BrokerError> {
        Ok(0)
    }
    /// Whether the endpoint (its URL) answered 410 Gone, on any hub sharing the outbox.
    async fn is_gone(&self, endpoint: &str) -> Result<bool, BrokerError>;
    /// Records that the endpoint answered 410 Gone: every hub sends it nothing more
    /// (with Redis, until an operator removes it; in process, until the hub restarts).
    async fn set_gone(&self, endpoint: &str) -> Result<(), BrokerError>;
}

/// How long [`MemoryOutbox::take`] waits for an entry before answering none.
const MEMORY_WAIT: Duration = Duration::from_secs(1);

/// The in-process outbox: not durable (a restart forgets what was not yet delivered),
/// one hub only; leases are not needed, an entry taken stays with its task until done.
#[derive(Default)]
pub struct MemoryOutbox {
    inner: Mutex<MemoryEntries>,
    arrived: Notify,
    gone: Mutex<HashSet<String>>,
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
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = format!("{enqueued_ms}-{}", inner.next_id);
        inner.waiting.push_back(OutboxEntry {
            id,
            project: project.clone(),
            state,
            enqueued_ms,
            kind: None,
            reason: None,
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
