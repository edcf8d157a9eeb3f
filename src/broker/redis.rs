//! The Redis broker: publishing on a shared multiplexed connection, receiving through
//! the process's single subscriber connection (see `subscriber.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::subscriber::Subscriber;
use super::{Broker, BrokerError};
use crate::hub::{Hub, SubscriptionChange};
use crate::wire::ProjectId;

/// How long one Redis command may take before the caller hears an error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/readyz` waits for Redis to answer PING.
const READY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisBroker {
    /// Multiplexed connection for commands; reconnects by itself on the next command
    /// after a failure, so an outage of any length ends when Redis is back.
    commands: ConnectionManager,
    /// Set by the subscriber: true while its connection is up and subscribed.
    subscriber_up: Arc<AtomicBool>,
}

impl RedisBroker {
    pub fn start(
        url: &str,
        keepalive: Duration,
        hub: Arc<Hub>,
        changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, BrokerError> {
        let client =
            redis::Client::open(url).map_err(|e| BrokerError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let subscriber_up = Arc::new(AtomicBool::new(false));
        let subscriber = Subscriber::new(client, hub, Arc::clone(&subscriber_up), keepalive);
        tracker.spawn(subscriber.run(changes, shutdown));
        Ok(Self {
            commands,
            subscriber_up,
        })
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError> {
        let mut conn = self.commands.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(project.channel())
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn is_ready(&self) -> bool {
        if !self.subscriber_up.load(Ordering::Relaxed) {
            return false;
        }
        let mut conn = self.commands.clone();
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(READY_TIMEOUT, ping.query_async::<String>(&mut conn));
        matches!(answer.await, Ok(Ok(_)))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
