//! Flags more than one subcommand takes, written once. Every default comes from the
//! library's own (`config.rs`, `HistoryConfig::default()`, `WorkerConfig::default()`),
//! so the command line and a program that builds the configuration agree by
//! construction.

use std::time::Duration;

use clap::Args;

use progress_hub::broker::HistoryConfig;
use progress_hub::config::DEFAULT_COALESCE_WINDOW;
use progress_hub::locale::Locale;
use progress_hub_jobs::{RetryPolicy, WorkerConfig};

/// A duration as the command line reads and shows it (`30s`, `1600ms`, `24h`).
pub type HumanDuration = humantime::Duration;

/// How much history is kept. The hubs announce theirs in Redis, and every other process
/// that publishes there (a worker, `publish`) follows it: their own is used only while no
/// hub has announced one. 0 (nothing kept) is refused at start.
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Events of history kept per project (for resume; publishers follow the hubs').
    #[arg(long, env = "HUB_HISTORY_LEN", default_value_t = HistoryConfig::default().max_len)]
    pub history_len: usize,
    /// Bytes of history kept per project (oldest trimmed beyond; publishers follow the hubs').
    #[arg(long, env = "HUB_HISTORY_BYTES", default_value_t = HistoryConfig::default().max_bytes)]
    pub history_bytes: usize,
    /// In-process broker only: bytes of history kept across all projects, each charged
    /// to the client that created it (beyond it, the least recently used unwatched
    /// projects of the client holding the most are forgotten first).
    #[arg(long, env = "HUB_MEMORY_BUDGET", default_value_t = HistoryConfig::default().memory_budget)]
    pub memory_budget: usize,
    /// How long history and state are kept after `complete` (publishers follow the hubs').
    #[arg(long, env = "HUB_RETENTION", default_value_t = HistoryConfig::default().retention.into())]
    pub retention: HumanDuration,
}

impl HistoryArgs {
    pub fn config(&self) -> HistoryConfig {
        HistoryConfig {
            max_len: self.history_len,
            max_bytes: self.history_bytes,
            memory_budget: self.memory_budget,
            retention: self.retention.into(),
            ..HistoryConfig::default()
        }
    }
}

/// How events are written: in which language, and how often a project's
/// `progress_update`s may go out.
#[derive(Args, Debug, Clone)]
pub struct PublishingArgs {
    /// Language of the text the process writes (stage labels, log lines, catalog
    /// solutions): zh-TW or en.
    #[arg(long, env = "HUB_LOCALE", default_value_t = Locale::default())]
    pub locale: Locale,
    /// progress_update events of one project are coalesced to one per this window.
    #[arg(long, env = "HUB_COALESCE_WINDOW", default_value_t = DEFAULT_COALESCE_WINDOW.into())]
    pub coalesce_window: HumanDuration,
}

/// How jobs run (for `serve`'s in-process worker and for `worker`).
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Delay of one unit of mock provider work; a full run is 36 units (1.6s ≈ 1 minute).
    #[arg(long, env = "HUB_MOCK_DELAY", default_value_t = WorkerConfig::default().mock_delay.into())]
    pub mock_delay: HumanDuration,
    /// Retries per provider call before a stage fails.
    #[arg(long, env = "HUB_MAX_RETRIES", default_value_t = RetryPolicy::default().max_retries)]
    pub max_retries: u32,
    /// First retry delay (doubling, with jitter, capped at 30 s).
    #[arg(long, env = "HUB_RETRY_BACKOFF", default_value_t = RetryPolicy::default().base.into())]
    pub retry_backoff: HumanDuration,
    /// Jobs one worker runs at once.
    #[arg(long, env = "HUB_WORKER_CONCURRENCY", default_value_t = WorkerConfig::default().concurrency)]
    pub concurrency: usize,
    /// Provider calls one job's ASSETS stage makes at once (its images and avatar, in
    /// parallel after the voice); 1 makes them one by one.
    #[arg(long, env = "HUB_ASSET_CONCURRENCY", default_value_t = WorkerConfig::default().asset_concurrency)]
    pub asset_concurrency: usize,
    /// A job whose worker shows no life for this long is taken over by another.
    #[arg(long, env = "HUB_CLAIM_IDLE", default_value_t = WorkerConfig::default().claim_idle.into())]
    pub claim_idle: HumanDuration,
    /// How long a job's publish waits out a Redis outage (retrying) before it errors.
    #[arg(long, env = "HUB_PUBLISH_RETRY", default_value_t = WorkerConfig::default().publish_retry.into())]
    pub publish_retry: HumanDuration,
    /// Log every mock provider call to this file, one line `<STAGE> <step>` (for tests
    /// and demos: what a real deployment would pay for).
    #[arg(long, env = "HUB_MOCK_CALL_LOG")]
    pub mock_call_log: Option<std::path::PathBuf>,
}

impl JobArgs {
    pub fn worker_config(&self, shutdown_grace: Duration) -> WorkerConfig {
        WorkerConfig {
            mock_delay: self.mock_delay.into(),
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base: self.retry_backoff.into(),
                ..RetryPolicy::default()
            },
            concurrency: self.concurrency,
            asset_concurrency: self.asset_concurrency,
            claim_idle: self.claim_idle.into(),
            shutdown_grace,
            publish_retry: self.publish_retry.into(),
            mock_call_log: self.mock_call_log.clone(),
        }
    }
}
