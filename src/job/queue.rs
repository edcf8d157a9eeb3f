//! The job queue: how generate requests reach workers. One trait; an in-process queue
//! for the self-contained hub, and Redis Streams (`redis_queue.rs`) so workers on any
//! machine cooperate.
//!
//! The contract: at most one job per project at a time (`submit` says `Busy`
//! otherwise); a taken job stays the taker's while it shows life (`keep_alive`); a job
//! whose worker died is taken again by another (`take` reclaims it after
//! `claim_idle`); `finish` settles it; `hand_back` returns it for another worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Job;
use crate::wire::ProjectId;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("a generation job is already running for this project ({job_id})")]
    Busy { job_id: String },
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for QueueError {
    fn from(err: redis::RedisError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// A job a worker has taken, with what the queue needs to settle it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// The queue's handle for it (a stream entry id; empty in memory).
    pub entry: String,
    /// Taken over from a worker that stopped showing life.
    pub reclaimed: bool,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn submit(&self, job: &Job) -> Result<(), QueueError>;
    /// The next job for `consumer`, waiting at most `wait`.
    async fn take(&self, consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError>;
    async fn keep_alive(&self, consumer: &str, claimed: &Claimed) -> Result<(), QueueError>;
    async fn finish(&self, claimed: &Claimed) -> Result<(), QueueError>;
    async fn hand_back(&self, claimed: &Claimed) -> Result<(), QueueError>;
}

/// The in-process queue of the self-contained hub.
pub struct MemoryQueue {
    tx: mpsc::UnboundedSender<Job>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    /// Project → the job running (or waiting) for it.
    running: Mutex<HashMap<ProjectId, String>>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl MemoryQueue {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ProjectId, String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        self.tx
            .send(job.clone())
            .map_err(|_| QueueError::Unavailable("the in-process queue is closed".into()))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn submit(&self, job: &Job) -> Result<(), QueueError> {
        {
            let mut running = self.running();
            if let Some(job_id) = running.get(&job.project) {
                return Err(QueueError::Busy {
                    job_id: job_id.clone(),
                });
            }
            running.insert(job.project.clone(), job.id.clone());
        }
        self.enqueue(job)
    }

    async fn take(&self, _consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        let mut rx = self.rx.lock().await;
        Ok(tokio::time::timeout(wait, rx.recv())
            .await
            .ok()
            .flatten()
            .map(|job| Claimed {
                job,
                entry: String::new(),
                reclaimed: false,
            }))
    }

    async fn keep_alive(&self, _consumer: &str, _claimed: &Claimed) -> Result<(), QueueError> {
        Ok(())
    }

    async fn finish(&self, claimed: &Claimed) -> Result<(), QueueError> {
        let mut running = self.running();
        if running.get(&claimed.job.project) == Some(&claimed.job.id) {
            running.remove(&claimed.job.project);
        }
        Ok(())
    }

    async fn hand_back(&self, claimed: &Claimed) -> Result<(), QueueError> {
        self.enqueue(&claimed.job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(project: &str, id: &str) -> Job {
        Job {
            id: id.into(),
            project: ProjectId::parse(project).unwrap(),
            topic: "t".into(),
            inject_failures: BTreeMap::new(),
        }
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
        q.hand_back(&taken).await.unwrap();
        q.take("w", Duration::from_secs(1)).await.unwrap().unwrap(); // c
        let again = q.take("w", Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(again.job.id, "a");
        q.finish(&again).await.unwrap();
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
}
