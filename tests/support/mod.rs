//! Test support: a real `redis-server` per test on a free port ([`redis`]), a real Redis
//! Cluster ([`cluster`]), a Sentinel-managed primary and replica ([`sentinel`]), a real
//! hub on port 0 ([`hub`]), a real WebSocket client ([`client`]), the `progress-hub`
//! binary ([`cli`]) and a TCP proxy that can silence Pub/Sub deliveries ([`proxy`]). The
//! one place tests get their
//! moving parts from; key and channel names come from the crate ([`layout`]).
#![allow(dead_code)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod hub;
pub mod proxy;
pub mod receiver;
pub mod redis;
pub mod sentinel;

use std::time::Duration;

pub use self::redis::RedisServer;
pub use client::{Seen, SseReader, WsClient};
pub use cluster::RedisCluster;
pub use hub::{Backend, HubConfig, TestHub, fast_hub};
pub use progress_hub::broker::redis::layout;
use progress_hub::wire::ProjectId;
pub use proxy::RedisProxy;
pub use sentinel::{Auth, SentinelSetup};
use serde_json::Value;

/// A project id the test knows to be valid.
pub fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("a valid project id")
}

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Reads one counter or gauge from the hub's `/metrics` (summing its label sets).
pub async fn metric(hub: &TestHub, name: &str) -> f64 {
    metric_at(&hub.http(""), name).await
}

/// As [`metric`], for a hub at `base` (`http://host:port`), e.g. a spawned binary.
pub async fn metric_at(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it holds or `PATIENCE` runs out (for state that no event
/// announces, such as Redis's subscriber count).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if poll_until(check, |held| *held).await.is_err() {
        panic!("timed out waiting for: {what}");
    }
}

/// As [`eventually`], for a value that must come to equal `want`; on a timeout the
/// failure shows the last value read.
pub async fn eventually_eq<T, F, Fut>(what: &str, want: T, read: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    if let Err(last) = poll_until(read, |value| *value == want).await {
        assert_eq!(last, want, "timed out waiting for: {what}");
    }
}

/// Reads until `done` holds (`Ok`) or `PATIENCE` runs out (`Err`, the last value read).
pub(crate) async fn poll_until<T, F, Fut>(read: F, done: impl Fn(&T) -> bool) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    poll_for(PATIENCE, read, done).await
}

/// As [`poll_until`], for `patience` instead of `PATIENCE`.
pub(crate) async fn poll_for<T, F, Fut>(
    patience: Duration,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let value = read().await;
        if done(&value) {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Defines one test per backend from an `async fn(Backend)` (`mod support` is declared
/// with `#[macro_use]` first, so every test module has it).
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(crate::support::Backend::Memory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(crate::support::Backend::Redis).await
                }
            }
        )*
    };
}

/// A fresh path for a worker's provider call log.
pub fn call_log_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "progress-hub-calls-{}-{name}-{:08x}.log",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// The provider calls a worker logged, in order (none if it logged nothing).
pub fn calls_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A log event with a recognisable message.
pub fn log_event(message: &str) -> Value {
    serde_json::json!({"event": "log", "data": {"level": "INFO", "message": message}})
}

/// A `progress_update` at `p` percent.
pub fn progress(p: u8) -> Value {
    serde_json::json!({"event": "progress_update", "data": {
        "status": "RENDERING", "progress": p, "current_stage": "正在渲染影片...", "estimated_remaining": 100
    }})
}
