//! The jobs as an extension of the hub (`progress_hub::extension`): started with it, they
//! open the job queue on the hub's broker (Redis Streams beside the hub's Redis, or in
//! process), run the in-process worker unless it is off (`--no-worker`), add the
//! routes that generate, retry and cancel jobs, and tell the hub's stall checks which
//! jobs lost their worker (`probe.rs`).

use std::sync::Arc;
use std::time::Duration;

use progress_hub::extension::{Context, Extension, ExtensionError, Parts};
use progress_hub::publish::Publisher;
use utoipa::OpenApi;

use crate::probe::QueueProbe;
use crate::queue::{JobQueue, MemoryQueue};
use crate::redis_queue::RedisQueue;
use crate::worker::Worker;
use crate::{QueueLimits, WorkerConfig, http};

/// The jobs' settings in a hub.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The in-process worker; `None` runs none (`--no-worker`).
    pub worker: Option<WorkerConfig>,
    /// The job queue's lease (`--claim-idle`) when there is no in-process worker (whose
    /// `claim_idle` it is otherwise): a taken job whose worker showed no life this long
    /// is reported `stalled` with reason `worker_lost` until a worker takes it over.
    pub claim_idle: Duration,
    /// How many generate jobs may wait (globally and per client).
    pub limits: QueueLimits,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            worker: Some(WorkerConfig::default()),
            claim_idle: WorkerConfig::default().claim_idle,
            limits: QueueLimits::default(),
        }
    }
}

/// The jobs, to give `progress_hub::server::start_with`.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    pub config: JobsConfig,
}

impl Jobs {
    pub fn new(config: JobsConfig) -> Self {
        Self { config }
    }
}

impl Extension for Jobs {
    fn start(self: Box<Self>, hub: Context<'_>) -> Result<Parts, ExtensionError> {
        let JobsConfig {
            worker,
            claim_idle,
            limits,
        } = self.config;
        let claim_idle = worker.as_ref().map_or(claim_idle, |w| w.claim_idle);
        let jobs: Arc<dyn JobQueue> = match hub.redis_url {
            Some(url) => Arc::new(RedisQueue::new(url, claim_idle)?.with_limits(limits)),
            None => Arc::new(MemoryQueue::new(claim_idle).with_limits(limits)),
        };
        if let Some(worker) = worker {
            let publisher = Publisher::retrying(
                hub.broker.clone(),
                hub.locale,
                hub.coalesce_window,
                worker.publish_retry,
            );
            let worker = Worker::new(jobs.clone(), hub.broker, publisher, worker);
            hub.tracker.spawn(worker.run(hub.shutdown));
        }
        let probe = QueueProbe {
            jobs: jobs.clone(),
            lease: claim_idle,
        };
        Ok(Parts {
            routes: http::router(jobs),
            api_doc: Some(http::JobsApi::openapi()),
            worker_probe: Some(Arc::new(probe)),
        })
    }
}
