//! `progress-hub worker`: runs generation jobs from the Redis job queue, cooperating
//! with every hub and worker on the same Redis.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::shared::{HistoryArgs, HumanDuration, JobArgs, PublishingArgs};
use progress_hub::broker::BrokerError;
use progress_hub::broker::redis::RedisBroker;
use progress_hub::publish::Publisher;
use progress_hub_jobs::WorkerConfig;
use progress_hub_jobs::queue::QueueError;
use progress_hub_jobs::redis_queue::RedisQueue;
use progress_hub_jobs::worker::Worker;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The Redis the hubs use.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    #[command(flatten)]
    pub jobs: JobArgs,
    /// On SIGTERM, how long running jobs may finish before they are handed back.
    #[arg(long, env = "HUB_WORKER_GRACE", default_value_t = WorkerConfig::default().shutdown_grace.into())]
    pub shutdown_grace: HumanDuration,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub publishing: PublishingArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerCommandError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Runs until `shutdown`, then stops gracefully.
pub async fn run(args: &WorkerArgs, shutdown: CancellationToken) -> Result<(), WorkerCommandError> {
    let broker = Arc::new(
        RedisBroker::connect(&args.redis_url, args.history.config())?.following_the_hubs(),
    );
    let config = args.jobs.worker_config(args.shutdown_grace.into());
    let queue = Arc::new(RedisQueue::new(&args.redis_url, config.claim_idle)?);
    let publisher = Publisher::retrying(
        broker.clone(),
        args.publishing.locale,
        args.publishing.coalesce_window.into(),
        config.publish_retry,
    );
    Worker::new(queue, broker, publisher, config)
        .run(shutdown)
        .await;
    Ok(())
}
