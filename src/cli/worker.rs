//! `progress-hub worker`: runs generation jobs from the Redis job queue, cooperating
//! with every hub and worker on the same Redis. Also the job flags `serve` shares.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::broker::redis::RedisBroker;
use crate::broker::{BrokerError, HistoryConfig};
use crate::job::queue::QueueError;
use crate::job::redis_queue::RedisQueue;
use crate::job::worker::Worker;
use crate::job::{RetryPolicy, WorkerConfig};
use crate::locale::Locale;
use crate::publish::Publisher;

/// How jobs run (for `serve`'s in-process worker and for `worker`).
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Delay of one unit of mock provider work; a full run is 36 units (1.6s ≈ 1 minute).
    #[arg(long, env = "HUB_MOCK_DELAY", default_value = "1600ms", value_parser = humantime::parse_duration)]
    pub mock_delay: Duration,
    /// Retries per provider call before a stage fails.
    #[arg(long, env = "HUB_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// First retry delay (doubling, with jitter, capped at 30 s).
    #[arg(long, env = "HUB_RETRY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Jobs one worker runs at once.
    #[arg(long, env = "HUB_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// A job whose worker shows no life for this long is taken over by another.
    #[arg(long, env = "HUB_CLAIM_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub claim_idle: Duration,
    /// How long a job's publish waits out a Redis outage (retrying) before it errors.
    #[arg(long, env = "HUB_PUBLISH_RETRY", default_value = "120s", value_parser = humantime::parse_duration)]
    pub publish_retry: Duration,
}

impl JobArgs {
    pub fn worker_config(&self, shutdown_grace: Duration) -> WorkerConfig {
        WorkerConfig {
            mock_delay: self.mock_delay,
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base: self.retry_backoff,
                ..RetryPolicy::default()
            },
            concurrency: self.concurrency,
            claim_idle: self.claim_idle,
            shutdown_grace,
            publish_retry: self.publish_retry,
        }
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The Redis the hubs use.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    #[command(flatten)]
    pub jobs: JobArgs,
    /// On SIGTERM, how long running jobs may finish before they are handed back.
    #[arg(long, env = "HUB_WORKER_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Events of history kept per project (keep equal to the hub's).
    #[arg(long, env = "HUB_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: usize,
    /// How long history is kept after `complete` (keep equal to the hub's).
    #[arg(long, env = "HUB_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Language of the job's log lines and messages.
    #[arg(long, env = "HUB_LOCALE", default_value = "zh-TW")]
    pub locale: Locale,
    /// progress_update events of one project are coalesced to one per this window.
    #[arg(long, env = "HUB_COALESCE_WINDOW", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub coalesce_window: Duration,
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
    let history = HistoryConfig {
        max_len: args.history_len,
        retention: args.retention,
        ..HistoryConfig::default()
    };
    let broker = Arc::new(RedisBroker::connect(&args.redis_url, history)?);
    let config = args.jobs.worker_config(args.shutdown_grace);
    let queue = Arc::new(RedisQueue::new(&args.redis_url, config.claim_idle)?);
    let publisher = Publisher::retrying(
        broker.clone(),
        args.locale,
        args.coalesce_window,
        config.publish_retry,
    );
    Worker::new(queue, broker, publisher, config)
        .run(shutdown)
        .await;
    Ok(())
}
