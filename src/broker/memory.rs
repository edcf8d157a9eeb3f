//! The in-process broker: the self-contained mode of `serve`.
//!
//! Publishing hands the payload straight to the hub; subscribing is immediate. It keeps
//! the same contract as Redis so the same integration tests run against both.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Broker, BrokerError};
use crate::hub::{Hub, SubscriptionChange};
use crate::wire::ProjectId;

pub struct MemoryBroker {
    hub: Arc<Hub>,
}

impl MemoryBroker {
    pub fn start(
        hub: Arc<Hub>,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    change = changes.recv() => match change {
                        Some(SubscriptionChange::Subscribe(topic)) => topic.mark_subscribed(),
                        Some(SubscriptionChange::Unsubscribe(_)) => {}
                        None => return,
                    },
                }
            }
        });
        Self { hub }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError> {
        self.hub.deliver(project, payload);
        Ok(())
    }

    async fn is_ready(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
