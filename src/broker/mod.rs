//! The broker: where published events come from. One trait, two implementations.
//!
//! - [`redis::RedisBroker`]: any number of hubs and workers cooperate through Redis.
//!   The process holds a single subscriber connection for all its projects.
//! - [`memory::MemoryBroker`]: the same behaviour inside one process, so `serve` works
//!   with nothing else installed.
//!
//! Either way, a broker's subscriber consumes the hub's [`SubscriptionChange`]s and hands
//! every payload published on a watched project's channel to [`Hub::deliver`].

pub mod memory;
pub mod redis;
mod subscriber;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{Hub, SubscriptionChange};
use crate::wire::ProjectId;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

impl From<::redis::RedisError> for BrokerError {
    fn from(err: ::redis::RedisError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes `payload` on the project's channel exactly as given: the legacy path
    /// (`PUBLISH progress:{id} <json>`), with no id and no history.
    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError>;

    /// Whether the broker can serve now (`/readyz`): Redis reachable and the
    /// subscriber connected.
    async fn is_ready(&self) -> bool;

    /// A short name for logs: `memory` or `redis`.
    fn kind(&self) -> &'static str;
}

/// Starts the broker named by `redis_url` (in-process without one) and its subscriber
/// task, which lives until `shutdown`.
pub fn start(
    redis_url: Option<&str>,
    redis_keepalive: std::time::Duration,
    hub: Arc<Hub>,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(match redis_url {
        Some(url) => Arc::new(redis::RedisBroker::start(
            url,
            redis_keepalive,
            hub,
            changes,
            shutdown,
            tracker,
        )?),
        None => Arc::new(memory::MemoryBroker::start(hub, changes, shutdown, tracker)),
    })
}
