//! The job queue: how generate requests reach workers. One trait; an in-process queue
//! for the self-contained hub, and Redis Streams (`redis_queue.rs`) so workers on any
//! machine cooperate.
//!
//! The contract: at most one job per project while the job exists, queued or running
//! (`submit` says `Busy` otherwise); a taken job stays the taker's while it shows life
//! (`keep_alive`); a job whose worker went silent for `claim_idle` is taken again by
//! another (`take` reclaims it); `finish` settles it; `hand_back` returns it for another
//! worker. What the job finished so far (`record`, a [`Checkpoint`]) stays with it until
//! it is settled, and comes with every later `take` of it. A `cancel` marks the
//! project's job, queued or running, until it is settled; its worker asks
//! `cancel_requested` between provider calls. `lost_workers` names the projects whose
//! taken job's lease ran out (`claim_idle` without a sign of life) and that no worker
//! took over yet: the hub reports them `stalled` with reason `worker_lost`.
//!
//! A reclaim makes a new claim and ends the old one. The silent worker may come back:
//! `keep_alive`, `finish` and `hand_back` act only on a claim that still holds, and
//! report `Ownership::Lost` otherwise, so that worker drops its run instead of taking
//! the job back, settling it, or queueing it twice.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::checkpoint::Checkpoint;
use super::{Job, QueueLimits};
use progress_hub::wire::ProjectId;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("a generation job is already running for this project ({job_id})")]
    Busy { job_id: String },
    /// The client has as many unfinished jobs as it may (`QueueLimits`).
    #[error("this client has {limit} unfinished generation jobs, the most it may have")]
    ClientFull { limit: usize },
    /// As many jobs wait as the queue holds (`QueueLimits`).
    #[error("{limit} generation jobs are waiting, the most the queue holds")]
    Full { limit: usize },
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for QueueError {
    fn from(err: redis::RedisError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// A job accepted into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Its place among the jobs waiting to be taken when it was queued: 1 when none
    /// waited before it (jobs already running are not counted).
    pub position: u64,
}

/// A job a worker has taken, and which claim on it is the worker's.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// The queue's handle for it (a stream entry id; a counter in memory).
    pub entry: String,
    /// The consumer (worker) that took it.
    pub consumer: String,
    /// How many times the job has been handed out, this time included: 1 for the first
    /// taker, one more for each reclaim. With `consumer` it names this claim, so even a
    /// worker that reclaims its own stalled job holds a new claim, not the old one.
    pub delivery: u64,
    /// What earlier runs of the job finished (empty for a fresh job).
    pub checkpoint: Checkpoint,
}

impl Claimed {
    /// Taken over from a worker that stopped showing life.
    pub fn reclaimed(&self) -> bool {
        self.delivery > 1
    }

    /// Another run of this job came before this one (it was reclaimed, handed back, or
    /// queued again): this run takes the job over, at the first unfinished step.
    pub fn taken_over(&self) -> bool {
        self.reclaimed() || self.job.requeued > 0 || !self.checkpoint.is_empty()
    }

    /// Orders the claims of one job, newest highest: by how often the job was queued
    /// again, then by the entry's delivery count. Events are published under it, and
    /// the broker refuses those of an older claim (see `publish.lua`).
    pub fn fencing_token(&self) -> u64 {
        (u64::from(self.job.requeued) << 32) | self.delivery.min(u64::from(u32::MAX))
    }
}

/// Whether a claim still held when the queue acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a lost claim means the job is no longer this worker's to run"]
pub enum Ownership {
    /// The claim held; the queue did what was asked.
    Held,
    /// Another claim replaced this one (the job was reclaimed), or the job was settled:
    /// the queue changed nothing. `holder` is the consumer holding the job now, if any.
    Lost { holder: Option<String> },
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Queues the job, unless its project has one (`Busy`) or a limit is reached
    /// (`ClientFull` for `job.client`, `Full` for everyone).
    async fn submit(&self, job: &Job) -> Result<Queued, QueueError>;
    /// The next job for `consumer`, waiting at most `wait`: first one whose worker went
    /// silent for `claim_idle`, then a new one.
    async fn take(&self, consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError>;
    /// Shows the claim's worker is alive, so the job is not reclaimed; `Lost` if it
    /// already was (or was settled).
    async fn keep_alive(&self, claimed: &Claimed) -> Result<Ownership, QueueError>;
    /// Settles the job and frees its project, if the claim still holds.
    async fn finish(&self, claimed: &Claimed) -> Result<Ownership, QueueError>;
    /// Queues the job again for another worker, if the claim still holds.
    async fn hand_back(&self, claimed: &Claimed) -> Result<Ownership, QueueError>;
    /// Records what the job finished so far, if the claim still holds; the next taker
    /// of the job gets it in [`Claimed::checkpoint`].
    async fn record(
        &self,
        claimed: &Claimed,
        checkpoint: &Checkpoint,
    ) -> Result<Ownership, QueueError>;
    /// Asks the project's job (queued or running) to stop: the id of the job marked,
    /// `None` when the project has no job.
    async fn cancel(&self, project: &ProjectId) -> Result<Option<String>, QueueError>;
    /// Whether a cancel of the claimed job was asked.
    async fn cancel_requested(&self, claimed: &Claimed) -> Result<bool, QueueError>;
    /// At the end of the claimed job, before it is settled: keeps what it finished as
    /// its project's retry point (`retryable`: it failed or was cancelled), or forgets
    /// the project's retry point (it completed).
    async fn keep_retry_point(&self, claimed: &Claimed, retryable: bool) -> Result<(), QueueError>;
    /// What the project's last failed or cancelled job finished (`None`: nothing kept).
    async fn retry_point(&self, project: &ProjectId) -> Result<Option<Checkpoint>, QueueError>;
    /// The projects whose taken job's worker has shown no life for `claim_idle` (it
    /// died or hung) and that no worker took over yet. A queue without leases knows none.
    async fn lost_workers(&self) -> Result<HashSet<ProjectId>, QueueError> {
        Ok(HashSet::new())
    }
}

/// A taken job, as the in-process queue tracks it.
struct Pending {
    job: Job,
    consumer: String,
    delivery: u64,
    /// The taker's last sign of life.
    seen: Instant,
}

#[derive(Default)]
struct MemoryState {
    /// Project → the job running (or waiting) for it.
    running: HashMap<ProjectId, String>,
    /// Entry → the claim on a taken job not yet settled.
    pending: HashMap<u64, Pending>,
    /// Job id → what it finished so far (until it is settled).
    checkpoints: HashMap<String, Checkpoint>,
    /// Jobs queued and not yet taken.
    waiting: usize,
    /// Client → its jobs not yet settled.
    clients: HashMap<String, usize>,
    /// Jobs a cancel was asked of (until they are settled).
    cancelled: HashSet<String>,
    /// Project → what its last failed or cancelled job finished.
    retry_points: HashMap<ProjectId, Checkpoint>,
    next_entry: u64,
}

impl MemoryState {
    /// The taken job `claimed` names, if the claim still holds; else who holds it now.
    fn owned(&mut self, claimed: &Claimed) -> Result<(u64, &mut Pending), Ownership> {
        let entry = claimed.entry.parse::<u64>().ok();
        match entry.and_then(|e| self.pending.get_mut(&e).map(|p| (e, p))) {
            Some((e, p)) if p.consumer == claimed.consumer && p.delivery == claimed.delivery => {
                Ok((e, p))
            }
            Some((_, p)) => Err(Ownership::Lost {
                holder: Some(p.consumer.clone()),
            }),
            None => Err(Ownership::Lost { holder: None }),
        }
    }
}

/// The in-process queue of the self-contained hub.
pub struct MemoryQueue {
    tx: mpsc::UnboundedSender<Job>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    claim_idle: Duration,
    limits: QueueLimits,
    state: Mutex<MemoryState>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new(super::WorkerConfig::default().claim_idle)
    }
}

impl MemoryQueue {
    pub fn new(claim_idle: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            claim_idle,
            limits: QueueLimits::default(),
            state: Mutex::new(MemoryState::default()),
        }
    }

    pub fn with_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock()
    }

    /// Queues the job (with the state locked, so the count of waiting jobs agrees).
    fn enqueue(&self, state: &mut MemoryState, job: &Job) -> Result<(), QueueError> {
        self.tx
            .send(job.clone())
            .map_err(|_| QueueError::Unavailable("the in-process queue is closed".into()))?;
        state.waiting += 1;
        Ok(())
    }

    /// Takes over a job whose taker has been silent for `claim_idle`.
    fn reclaim(&self, consumer: &str) -> Option<Claimed> {
        let mut state = self.state();
        let now = Instant::now();
        let (entry, pending) = state
            .pending
            .iter_mut()
            .filter(|(_, p)| now.duration_since(p.seen) >= self.claim_idle)
            .min_by_key(|(e, _)| **e)?;
        pending.consumer = consumer.to_string();
        pending.delivery += 1;
        pending.seen = now;
        let (job, entry, delivery) = (pending.job.clone(), *entry, pending.delivery);
        let checkpoint = state.checkpoints.get(&job.id).cloned().unwrap_or_default();
        Some(Claimed {
            job,
            entry: entry.to_string(),
            consumer: consumer.to_string(),
            delivery,
            checkpoint,
        })
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn submit(&self, job: &Job) -> Result<Queued, QueueError> {
        let mut state = self.state();
        if let Some(job_id) = state.running.get(&job.project) {
            return Err(QueueError::Busy {
                job_id: job_id.clone(),
            });
        }
        let limits = self.limits;
        if let Some(client) = &job.client
            && state.clients.get(client).copied().unwrap_or(0) >= limits.max_queued_per_client
        {
            return Err(QueueError::ClientFull {
                limit: limits.max_queued_per_client,
            });
        }
        if state.waiting >= limits.max_queued {
            return Err(QueueError::Full {
                limit: limits.max_queued,
            });
        }
        let position = state.waiting as u64 + 1;
        self.enqueue(&mut state, job)?;
        state.running.insert(job.project.clone(), job.id.clone());
        if let Some(client) = &job.client {
            *state.clients.entry(client.clone()).or_default() += 1;
        }
        Ok(Queued { position })
    }

    async fn take(&self, consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        if let Some(claimed) = self.reclaim(consumer) {
            return Ok(Some(claimed));
        }
        let mut rx = self.rx.lock().await;
        let Ok(Some(job)) = tokio::time::timeout(wait, rx.recv()).await else {
            return Ok(None);
        };
        let mut state = self.state();
        state.waiting = state.waiting.saturating_sub(1);
        state.next_entry += 1;
        let entry = state.next_entry;
        state.pending.insert(
            entry,
            Pending {
                job: job.clone(),
                consumer: consumer.to_string(),
                delivery: 1,
                seen: Instant::now(),
            },
        );
        let checkpoint = state.checkpoints.get(&job.id).cloned().unwrap_or_default();
        Ok(Some(Claimed {
            job,
            entry: entry.to_string(),
            consumer: consumer.to_string(),
            delivery: 1,
            checkpoint,
        }))
    }

    async fn keep_alive(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        let mut state = self.state();
        Ok(match state.owned(claimed) {
            Ok((_, pending)) => {
                pending.seen = Instant::now();
                Ownership::Held
            }
            Err(lost) => lost,
        })
    }

    async fn finish(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        let mut state = self.state();
        let entry = match state.owned(claimed) {
            Ok((entry, _)) => entry,
            Err(lost) => return Ok(lost),
        };
        state.pending.remove(&entry);
        state.checkpoints.remove(&claimed.job.id);
        state.cancelled.remove(&claimed.job.id);
        if let Some(client) = &claimed.job.client
            && let Some(n) = state.clients.get_mut(client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.clients.remove(client);
            }
        }
        let project = &claimed.job.project;
        if state.running.get(project) == Some(&claimed.job.id) {
            state.running.remove(project);
        }
        Ok(Ownership::Held)
    }

    async fn hand_back(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        let mut state = self.state();
        let entry = match state.owned(claimed) {
            Ok((entry, _)) => entry,
            Err(lost) => return Ok(lost),
        };
        state.pending.remove(&entry);
        self.enqueue(&mut state, &claimed.job.requeued_again())?;
        Ok(Ownership::Held)
    }

    async fn record(
        &self,
        claimed: &Claimed,
        checkpoint: &Checkpoint,
    ) -> Result<Ownership, QueueError> {
        let mut state = self.state();
        if let Err(lost) = state.owned(claimed) {
            return Ok(lost);
        }
        state
            .checkpoints
            .insert(claimed.job.id.clone(), checkpoint.clone());
        Ok(Ownership::Held)
    }

    async fn cancel(&self, project: &ProjectId) -> Result<Option<String>, QueueError> {
        let mut state = self.state();
        let Some(job_id) = state.running.get(project).cloned() else {
            return Ok(None);
        };
        state.cancelled.insert(job_id.clone());
        Ok(Some(job_id))
    }

    async fn cancel_requested(&self, claimed: &Claimed) -> Result<bool, QueueError> {
        Ok(self.state().cancelled.contains(&claimed.job.id))
    }

    async fn keep_retry_point(&self, claimed: &Claimed, retryable: bool) -> Result<(), QueueError> {
        let mut state = self.state();
        let project = claimed.job.project.clone();
        match state.checkpoints.get(&claimed.job.id).cloned() {
            Some(done) if retryable => {
                state.retry_points.insert(project, done);
            }
            _ => {
                state.retry_points.remove(&project);
            }
        }
        Ok(())
    }

    async fn retry_point(&self, project: &ProjectId) -> Result<Option<Checkpoint>, QueueError> {
        Ok(self.state().retry_points.get(project).cloned())
    }

    async fn lost_workers(&self) -> Result<HashSet<ProjectId>, QueueError> {
        let now = Instant::now();
        Ok(self
            .state()
            .pending
            .values()
            .filter(|p| now.duration_since(p.seen) >= self.claim_idle)
            .map(|p| p.job.project.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(project: &str, id: &str) -> Job {
        Job::for_test(project, id)
    }

    #[tokio::test]
    async fn one_job_per_project_until_finished() {
        let q = MemoryQueue::default();
        q.submit(&job("p", "a")).await.unwrap();
        assert!(
            matches!(q.submit(&job("p", "b")).await, Err(QueueError::Busy { job_id }) if job_id == "a")
        );
        q.submit(&job("q", "c")).await.unwrap();
        let taken = q.take("w", Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(taken.job.id, "a");
        assert_eq!(q.hand_back(&taken).await.unwrap(), Ownership::Held);
        q.take("w", Duration::from_secs(1)).await.unwrap().unwrap(); // c
        let again = q.take("w", Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(again.job.id, "a");
        assert_eq!((again.delivery, again.job.requeued), (1, 1));
        assert!(
            again.fencing_token() > taken.fencing_token(),
            "a handed-back job's new claim outranks the old one, though its delivery count restarts"
        );
        assert_eq!(q.finish(&again).await.unwrap(), Ownership::Held);
        q.submit(&job("p", "d")).await.unwrap();
        assert!(
            q.take("w", Duration::from_millis(10))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            q.take("w", Duration::from_millis(10))
                .await
                .unwrap()
                .is_none()
        );
    }

    // A worker silent for the claim idle time loses the job to the next taker; back to
    // life, it can neither keep it, settle it, nor queue it again. Same for a worker
    // that reclaims its own job: the older claim is over.
    #[tokio::test(start_paused = true)]
    async fn a_reclaimed_job_is_lost_to_its_silent_taker() {
        let idle = Duration::from_secs(30);
        let q = MemoryQueue::new(idle);
        let wait = Duration::from_millis(10);
        q.submit(&job("p", "a")).await.unwrap();
        let first = q.take("w1", wait).await.unwrap().unwrap();
        assert!(!first.reclaimed());
        // Alive: not reclaimed, however long the job runs.
        tokio::time::advance(idle / 2).await;
        assert_eq!(q.keep_alive(&first).await.unwrap(), Ownership::Held);
        tokio::time::advance(idle / 2).await;
        assert!(q.take("w2", wait).await.unwrap().is_none());
        assert!(q.lost_workers().await.unwrap().is_empty(), "alive");

        tokio::time::advance(idle).await;
        assert_eq!(
            q.lost_workers().await.unwrap(),
            HashSet::from([ProjectId::parse("p").unwrap()]),
            "its lease ran out: lost until taken over"
        );
        let second = q.take("w2", wait).await.unwrap().unwrap();
        assert!(q.lost_workers().await.unwrap().is_empty(), "taken over");
        assert!(second.reclaimed());
        assert_eq!(second.job.id, "a");
        let lost = Ownership::Lost {
            holder: Some("w2".into()),
        };
        assert_eq!(q.keep_alive(&first).await.unwrap(), lost);
        assert_eq!(q.finish(&first).await.unwrap(), lost);
        assert_eq!(q.hand_back(&first).await.unwrap(), lost);
        assert!(
            q.take("w3", wait).await.unwrap().is_none(),
            "not queued again"
        );
        assert!(matches!(
            q.submit(&job("p", "b")).await,
            Err(QueueError::Busy { .. })
        ));

        tokio::time::advance(idle).await;
        let third = q.take("w2", wait).await.unwrap().unwrap();
        assert_eq!(third.delivery, 3);
        assert_eq!(q.keep_alive(&second).await.unwrap(), lost);
        assert_eq!(q.keep_alive(&third).await.unwrap(), Ownership::Held);
        assert_eq!(q.finish(&third).await.unwrap(), Ownership::Held);
        assert_eq!(
            q.keep_alive(&third).await.unwrap(),
            Ownership::Lost { holder: None },
            "a settled job is no one's"
        );
        q.submit(&job("p", "b")).await.unwrap();
    }

    // What a run finished stays with the job: the next taker (a reclaim, or the worker
    // a job was handed back to) gets it; a lost claim cannot change it; settling the job
    // discards it.
    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_goes_with_the_job_until_it_is_settled() {
        let idle = Duration::from_secs(30);
        let q = MemoryQueue::new(idle);
        let wait = Duration::from_millis(10);
        q.submit(&job("p", "a")).await.unwrap();
        let first = q.take("w1", wait).await.unwrap().unwrap();
        assert!(first.checkpoint.is_empty() && !first.taken_over());
        let mut done = Checkpoint {
            youtube_url: Some("u".into()),
            ..Checkpoint::default()
        };
        assert_eq!(q.record(&first, &done).await.unwrap(), Ownership::Held);
        tokio::time::advance(idle).await;
        let second = q.take("w2", wait).await.unwrap().unwrap();
        assert_eq!(second.checkpoint, done);
        assert!(second.taken_over());
        let stale = Checkpoint::default();
        assert!(matches!(
            q.record(&first, &stale).await.unwrap(),
            Ownership::Lost { .. }
        ));
        done.thumbnail = Some(super::super::providers::Asset { name: "t".into() });
        assert_eq!(q.record(&second, &done).await.unwrap(), Ownership::Held);
        assert_eq!(q.hand_back(&second).await.unwrap(), Ownership::Held);
        let third = q.take("w3", wait).await.unwrap().unwrap();
        assert_eq!(third.checkpoint, done, "a handed-back job keeps it");
        assert!(third.taken_over());
        assert_eq!(q.finish(&third).await.unwrap(), Ownership::Held);
        q.submit(&job("p", "a")).await.unwrap();
        let fresh = q.take("w1", wait).await.unwrap().unwrap();
        assert!(fresh.checkpoint.is_empty(), "settling discards it");
    }

    // Limits: per client, jobs not yet settled; for all, jobs not yet taken. A refused
    // submit leaves nothing behind; a settled job frees its client's place, a taken
    // one frees a place in the queue.
    #[tokio::test]
    async fn the_queue_is_bounded_per_client_and_in_all() {
        let q = MemoryQueue::default().with_limits(QueueLimits {
            max_queued: 2,
            max_queued_per_client: 1,
        });
        let wait = Duration::from_millis(10);
        let from = |project: &str, client: &str| Job {
            client: Some(client.into()),
            ..job(project, &format!("{project}-{client}"))
        };
        assert_eq!(q.submit(&from("p1", "a")).await.unwrap().position, 1);
        assert!(matches!(
            q.submit(&from("p2", "a")).await,
            Err(QueueError::ClientFull { limit: 1 })
        ));
        assert_eq!(q.submit(&from("p3", "b")).await.unwrap().position, 2);
        assert!(matches!(
            q.submit(&from("p4", "c")).await,
            Err(QueueError::Full { limit: 2 })
        ));
        q.submit(&from("p4", "c")).await.unwrap_err();
        let taken = q.take("w", wait).await.unwrap().unwrap();
        assert_eq!(taken.job.project.as_str(), "p1");
        assert_eq!(
            q.submit(&from("p4", "c")).await.unwrap().position,
            2,
            "a taken job no longer waits"
        );
        assert!(matches!(
            q.submit(&from("p2", "a")).await,
            Err(QueueError::ClientFull { .. })
        ));
        assert_eq!(q.finish(&taken).await.unwrap(), Ownership::Held);
        q.take("w", wait).await.unwrap().unwrap();
        q.submit(&from("p2", "a")).await.unwrap();
    }
}
