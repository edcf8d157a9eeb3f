//! A worker: takes jobs from the queue and runs them, a few at a time, keeping each
//! claimed job alive in the queue while it runs.
//!
//! On shutdown it stops taking jobs, lets running ones finish within a grace period,
//! then hands the rest back to the queue for another worker. A job taken over from a
//! dead worker goes on at its first unfinished step (the pipeline records every step
//! with the job), unless that worker had already published its `complete`: the
//! project's state records which job completed, so a job taken over after its
//! `complete` is settled, not run again.
//!
//! A worker that stalls (a paused host, a long partition) may find on waking that
//! another worker reclaimed its job. It runs a job only under a lease: for `claim_idle`
//! after a keep-alive found its claim held (no other worker may reclaim the job before
//! then), and while the lease is not renewed the pipeline is not polled. The keep-alive
//! comes first after any pause; when it reports the claim lost, the run is dropped at
//! once: nothing settled, no `complete`, the job left to the worker that holds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::WorkerConfig;
use super::pipeline::{Outcome, generate_video};
use super::providers::{CallLog, Providers};
use super::queue::{Claimed, JobQueue, Ownership, QueueError};
use progress_hub::broker::Broker;
use progress_hub::broker::Fence;
use progress_hub::metrics as m;
use progress_hub::publish::Publisher;

/// How long one `take` waits for a job before looking again.
const TAKE_WAIT: Duration = Duration::from_secs(1);
/// Pause after a queue error (Redis down) before trying again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);
/// A keep-alive that failed is tried again after this (or sooner, with a short lease).
const KEEPALIVE_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Worker {
    pub queue: Arc<dyn JobQueue>,
    pub broker: Arc<dyn Broker>,
    pub publisher: Publisher,
    pub config: WorkerConfig,
    /// This worker's consumer name in the queue.
    pub name: String,
}

impl Worker {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        broker: Arc<dyn Broker>,
        publisher: Publisher,
        config: WorkerConfig,
    ) -> Self {
        let name = format!(
            "{}-{}-{:04x}",
            hostname(),
            std::process::id(),
            rand::random::<u16>()
        );
        Self {
            queue,
            broker,
            publisher,
            config,
            name,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let jobs = TaskTracker::new();
        let stop_jobs = CancellationToken::new();
        let mut errors = 0u32;
        tracing::info!(worker = %self.name, concurrency = self.config.concurrency, "worker started");
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let taken = tokio::select! {
                () = shutdown.cancelled() => break,
                taken = self.queue.take(&self.name, TAKE_WAIT) => taken,
            };
            match taken {
                Ok(Some(claimed)) => {
                    errors = 0;
                    let this = self.clone();
                    let stop = stop_jobs.clone();
                    jobs.spawn(async move {
                        this.run_one(claimed, stop).await;
                        drop(permit);
                    });
                }
                Ok(None) => errors = 0,
                Err(err) => {
                    errors += 1;
                    if errors == 1 || errors.is_multiple_of(50) {
                        tracing::warn!(error = %err, "job queue unavailable; retrying");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ERROR_PAUSE) => {}
                    }
                }
            }
        }
        jobs.close();
        if !jobs.is_empty() {
            tracing::info!(
                running = jobs.len(),
                "worker stopping: letting running jobs finish"
            );
        }
        if tokio::time::timeout(self.config.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = jobs.len(),
                "grace period over: handing running jobs back"
            );
            stop_jobs.cancel();
            jobs.wait().await;
        }
        tracing::info!(worker = %self.name, "worker stopped");
    }

    async fn run_one(&self, claimed: Claimed, stop: CancellationToken) {
        let job = &claimed.job;
        let project = &job.project;
        if self.already_completed(&claimed).await {
            tracing::info!(project_id = %project, job_id = %job.id, "job had already completed; settling it");
            if let Some(Ownership::Lost { holder }) = self.settle(&claimed).await {
                self.claim_lost(&claimed, holder.as_deref());
            }
            return;
        }
        tracing::info!(project_id = %project, job_id = %job.id, reclaimed = claimed.reclaimed(), "job started");
        // Every event of this run is published under this claim: once another worker
        // takes the job over (a higher delivery count), the broker refuses this run's
        // events, even ones sent just before this worker stalled.
        let publisher = self.publisher.for_claim(Fence {
            holder: job.id.clone(),
            token: claimed.fencing_token(),
        });
        let providers = Providers::mock(
            self.config.mock_delay,
            &job.inject_failures,
            publisher.locale(),
            self.config.mock_call_log.as_ref().map(CallLog::new),
        );
        // Every log line of the job carries its project and job ids.
        let span = tracing::info_span!("job", project_id = %project, job_id = %job.id);
        let pipeline = generate_video(
            &publisher,
            &providers,
            self.config.retry,
            self.config.asset_concurrency,
            self.queue.as_ref(),
            &claimed,
        )
        .instrument(span);
        tokio::pin!(pipeline);
        let lease = self.config.claim_idle;
        let mut keepalive = tokio::time::interval((lease / 4).max(Duration::from_millis(50)));
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Until when the claim surely holds: `lease` after a keep-alive that found it held
        // was sent. None until the first one (the first tick is at once).
        let mut held_until: Option<Instant> = None;
        loop {
            let lease_end = held_until.filter(|end| Instant::now() < *end);
            // The pipeline is polled only under the lease; keep-alive and stop come
            // first (biased), so a due keep-alive runs before the pipeline's next step.
            tokio::select! {
                biased;
                _ = keepalive.tick() => {
                    let sent = Instant::now();
                    // Bounded: while it waits, the pipeline is not polled, so a keep-alive
                    // that waited on anything the pipeline holds would stall the job.
                    let renewed = tokio::time::timeout(lease, self.queue.keep_alive(&claimed))
                        .await
                        .unwrap_or_else(|_| Err(QueueError::Unavailable("the keep-alive got no answer in time".into())));
                    match renewed {
                        Ok(Ownership::Held) => held_until = Some(sent + lease),
                        Ok(Ownership::Lost { holder }) => {
                            // Returning drops the pipeline mid-step: it publishes nothing more.
                            self.claim_lost(&claimed, holder.as_deref());
                            if holder.is_none() {
                                self.queue_again(&claimed).await;
                            }
                            return;
                        }
                        Err(err) => {
                            tracing::warn!(project_id = %project, job_id = %job.id, error = %err, "could not renew the job's claim");
                            // Try again soon, not a whole interval later: the job may be
                            // waiting for this confirmation to go on after an outage.
                            keepalive.reset_after(KEEPALIVE_RETRY.min(lease / 4));
                        }
                    }
                }
                () = stop.cancelled() => {
                    match self.queue.hand_back(&claimed).await {
                        Ok(Ownership::Held) => m::job_finished("handed_back"),
                        Ok(Ownership::Lost { holder }) => self.claim_lost(&claimed, holder.as_deref()),
                        Err(err) => {
                            m::job_finished("handed_back");
                            tracing::error!(project_id = %project, job_id = %job.id, error = %err, "could not hand the job back; another worker will reclaim it");
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(lease_end.unwrap_or_else(Instant::now)), if lease_end.is_some() => {
                    tracing::warn!(project_id = %project, job_id = %job.id, "no keep-alive got through for the claim idle time: the job waits until one confirms its claim");
                }
                outcome = &mut pipeline, if lease_end.is_some() => {
                    let label = match &outcome {
                        Outcome::Completed { .. } => "completed",
                        Outcome::Failed { .. } => "failed",
                        Outcome::Cancelled => "cancelled",
                    };
                    let retryable = !matches!(outcome, Outcome::Completed { .. });
                    if let Err(err) = self.queue.keep_retry_point(&claimed, retryable).await {
                        tracing::warn!(project_id = %project, job_id = %job.id, error = %err, "could not keep the job's retry point; a retry starts over");
                    }
                    if let Some(Ownership::Lost { holder }) = self.settle(&claimed).await {
                        // Rare: the lease held when the pipeline last ran, yet the job was
                        // reclaimed (a publish sent just before a pause and executed after
                        // the reclaim, or a clock step on the Redis host). Its `complete`
                        // may be one of two.
                        tracing::warn!(project_id = %project, job_id = %job.id, outcome = label, "job finished after its claim was lost");
                        self.claim_lost(&claimed, holder.as_deref());
                        return;
                    }
                    m::job_finished(label);
                    tracing::info!(project_id = %project, job_id = %job.id, outcome = label, "job finished");
                    return;
                }
            }
        }
    }

    /// Nobody holds the job any more: its entry is gone, because it was settled
    /// elsewhere or because Redis lost its data (restarted empty). Queue it again: a job
    /// that already completed is settled at once by whoever takes it, and one handed
    /// back meanwhile still holds its project's lock, so this submit is refused.
    async fn queue_again(&self, claimed: &Claimed) {
        match self.queue.submit(&claimed.job.requeued_again()).await {
            Ok(_) => {
                tracing::warn!(project_id = %claimed.job.project, job_id = %claimed.job.id, "the job had vanished from the queue (Redis lost its data?); queued it again")
            }
            Err(err) => {
                tracing::info!(project_id = %claimed.job.project, job_id = %claimed.job.id, error = %err, "the job is not queued again")
            }
        }
    }

    /// Another worker reclaimed the job (or settled it): this run is over, and the job
    /// is not this worker's to settle, hand back or complete.
    fn claim_lost(&self, claimed: &Claimed, holder: Option<&str>) {
        m::job_finished("claim_lost");
        tracing::warn!(
            project_id = %claimed.job.project,
            job_id = %claimed.job.id,
            holder = holder.unwrap_or("none"),
            "lost the job's claim (this worker was silent longer than the claim idle time); dropping the run"
        );
    }

    async fn already_completed(&self, claimed: &Claimed) -> bool {
        match self.broker.replay(&claimed.job.project, None).await {
            Ok(replay) => replay
                .state
                .and_then(|(state, _)| state.completed_job)
                .is_some_and(|job| job == claimed.job.id),
            Err(_) => false,
        }
    }

    /// Settles the job; None if the queue could not be reached (it is logged).
    async fn settle(&self, claimed: &Claimed) -> Option<Ownership> {
        match self.queue.finish(claimed).await {
            Ok(ownership) => Some(ownership),
            Err(err) => {
                tracing::error!(project_id = %claimed.job.project, job_id = %claimed.job.id, error = %err, "could not settle the job");
                None
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::Job;
    use crate::checkpoint::Checkpoint;
    use crate::queue::{MemoryQueue, QueueError, Queued};
    use progress_hub::broker::memory::MemoryBroker;
    use progress_hub::locale::Locale;
    use progress_hub::wire::ProjectId;

    /// The in-process queue, whose keep-alives fail while `down` is set (as when this
    /// worker cannot reach Redis, while other workers may).
    struct Unreachable {
        inner: MemoryQueue,
        down: AtomicBool,
    }

    #[async_trait]
    impl JobQueue for Unreachable {
        async fn submit(&self, job: &Job) -> Result<Queued, QueueError> {
            self.inner.submit(job).await
        }
        async fn take(
            &self,
            consumer: &str,
            wait: Duration,
        ) -> Result<Option<Claimed>, QueueError> {
            self.inner.take(consumer, wait).await
        }
        async fn keep_alive(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(QueueError::Unavailable("unreachable".into()));
            }
            self.inner.keep_alive(claimed).await
        }
        async fn finish(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
            self.inner.finish(claimed).await
        }
        async fn cancel(&self, project: &ProjectId) -> Result<Option<String>, QueueError> {
            self.inner.cancel(project).await
        }
        async fn cancel_requested(&self, claimed: &Claimed) -> Result<bool, QueueError> {
            self.inner.cancel_requested(claimed).await
        }
        async fn keep_retry_point(
            &self,
            claimed: &Claimed,
            retryable: bool,
        ) -> Result<(), QueueError> {
            self.inner.keep_retry_point(claimed, retryable).await
        }
        async fn retry_point(&self, project: &ProjectId) -> Result<Option<Checkpoint>, QueueError> {
            self.inner.retry_point(project).await
        }
        async fn hand_back(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
            self.inner.hand_back(claimed).await
        }
        async fn record(
            &self,
            claimed: &Claimed,
            checkpoint: &Checkpoint,
        ) -> Result<Ownership, QueueError> {
            self.inner.record(claimed, checkpoint).await
        }
    }

    /// The project's newest event number and status.
    async fn published(broker: &MemoryBroker, project: &ProjectId) -> (u64, Option<String>) {
        match broker.replay(project, None).await.unwrap().state {
            Some((state, id)) => (id.seq(), state.status),
            None => (0, None),
        }
    }

    // Keep-alives that cannot get through: once the lease (`claim_idle` after the last
    // confirmed keep-alive) runs out, the job publishes nothing more, since another
    // worker may have taken it over by then; when a keep-alive finds the claim still
    // held, the job goes on, to one complete.
    #[tokio::test(start_paused = true)]
    async fn a_job_waits_while_its_claim_is_unconfirmed() {
        let claim_idle = Duration::from_secs(2);
        let (broker, shutdown) = crate::test_broker::memory_broker();
        let queue = Arc::new(Unreachable {
            inner: MemoryQueue::new(claim_idle),
            down: AtomicBool::new(false),
        });
        let publisher = Publisher::new(broker.clone(), Locale::En, Duration::ZERO);
        let config = WorkerConfig {
            mock_delay: Duration::from_millis(100),
            concurrency: 1,
            claim_idle,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(queue.clone(), broker.clone(), publisher, config);
        let project = ProjectId::parse("lease").unwrap();
        let job = Job::for_test("lease", "job-lease");
        queue.submit(&job).await.unwrap();
        let running = tokio::spawn(worker.run(shutdown.clone()));

        // A full run takes 3.6 s; cut the keep-alives off 1 s in.
        while published(&broker, &project).await.0 < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        queue.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(claim_idle + Duration::from_millis(100)).await;
        let paused = published(&broker, &project).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            published(&broker, &project).await,
            paused,
            "nothing published without a confirmed claim"
        );
        assert_ne!(paused.1.as_deref(), Some("COMPLETED"));

        queue.down.store(false, Ordering::SeqCst);
        while published(&broker, &project).await.1.as_deref() != Some("COMPLETED") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        running.await.unwrap();
        let replay = broker.replay(&project, None).await.unwrap();
        let (state, _) = replay.state.unwrap();
        assert_eq!(state.completed_job.as_deref(), Some("job-lease"));
    }
}
