//! A worker: takes jobs from the queue and runs them, a few at a time, keeping each
//! claimed job alive in the queue while it runs.
//!
//! On shutdown it stops taking jobs, lets running ones finish within a grace period,
//! then hands the rest back to the queue for another worker. A job taken over from a
//! dead worker restarts from the beginning (progress cannot go backwards within the
//! run, so the bar holds), unless that worker had already published its `complete`:
//! the project's state records which job completed, so a job taken over after its
//! `complete` is settled, not run again.
//!
//! A worker that stalls (a paused host, a long partition) may find on waking that
//! another worker reclaimed its job: its keep-alive then reports the claim lost, and
//! the run is dropped at once: nothing settled, no `complete`, the job left to the
//! worker that holds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::WorkerConfig;
use super::pipeline::{Outcome, generate_video};
use super::providers::Providers;
use super::queue::{Claimed, JobQueue, Ownership};
use crate::broker::Broker;
use crate::metrics as m;
use crate::publish::Publisher;
use crate::wire::event::LogLevel;

/// How long one `take` waits for a job before looking again.
const TAKE_WAIT: Duration = Duration::from_secs(1);
/// Pause after a queue error (Redis down) before trying again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

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
        if claimed.reclaimed() {
            let text = self.publisher.locale().pick(
                "先前的 worker 已停止回應，工作由其他 worker 接手並重新開始",
                "The previous worker stopped responding; another worker took the job over and restarted it",
            );
            let _ = self
                .publisher
                .publish_log(project, LogLevel::Warning, text)
                .await;
        }
        let providers = Providers::mock(
            self.config.mock_delay,
            &job.inject_failures,
            self.publisher.locale(),
        );
        // Every log line of the job carries its project and job ids.
        let span = tracing::info_span!("job", project_id = %project, job_id = %job.id);
        let pipeline =
            generate_video(&self.publisher, &providers, self.config.retry, job).instrument(span);
        tokio::pin!(pipeline);
        let mut keepalive =
            tokio::time::interval((self.config.claim_idle / 4).max(Duration::from_millis(50)));
        loop {
            tokio::select! {
                outcome = &mut pipeline => {
                    let label = match &outcome {
                        Outcome::Completed { .. } => "completed",
                        Outcome::Failed { .. } => "failed",
                    };
                    if let Some(Ownership::Lost { holder }) = self.settle(&claimed).await {
                        // The run ended between losing its claim and the next keep-alive:
                        // its `complete` may be one of two.
                        tracing::warn!(project_id = %project, job_id = %job.id, outcome = label, "job finished after its claim was lost");
                        self.claim_lost(&claimed, holder.as_deref());
                        return;
                    }
                    m::job_finished(label);
                    tracing::info!(project_id = %project, job_id = %job.id, outcome = label, "job finished");
                    return;
                }
                _ = keepalive.tick() => {
                    match self.queue.keep_alive(&claimed).await {
                        Ok(Ownership::Held) => {}
                        Ok(Ownership::Lost { holder }) => {
                            // Returning drops the pipeline mid-step: it publishes nothing more.
                            self.claim_lost(&claimed, holder.as_deref());
                            return;
                        }
                        Err(err) => {
                            tracing::warn!(project_id = %project, job_id = %job.id, error = %err, "could not renew the job's claim");
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
