//! The job queue as the hub's `WorkerProbe`: the stall checker and the `job.stalled` scan
//! ask it which jobs lost their worker (their lease ran out and no worker took them over).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use progress_hub::hub::stall::WorkerProbe;
use progress_hub::wire::ProjectId;

use crate::queue::JobQueue;

/// The hub's job queue, asked for lost workers.
pub(crate) struct QueueProbe {
    pub(crate) jobs: Arc<dyn JobQueue>,
    pub(crate) lease: Duration,
}

#[async_trait::async_trait]
impl WorkerProbe for QueueProbe {
    async fn lost(&self) -> HashSet<ProjectId> {
        self.jobs.lost_workers().await.unwrap_or_else(|err| {
            tracing::debug!(error = %err, "could not ask the job queue for lost workers");
            HashSet::new()
        })
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}
