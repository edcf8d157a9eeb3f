//! The subscriber's connection on one Redis node: a Pub/Sub connection of its own
//! (not redis-rs's connection manager), SUBSCRIBE on `progress:<id>`, as the original
//! Python publisher names the channel. The loop around it is `mod.rs`'s.
//!
//! Behind Sentinel the node is the primary the sentinels name at each (re)connect, and
//! the connection ends as soon as the primary switches (see `../sentinel.rs`), so the
//! loop reconnects to the new one, resubscribes and fills the gap from its history.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::Value;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;

use super::{Connection, Lost, RESUBSCRIBE_BATCH, Shared, within};
use crate::broker::Watched;
use crate::broker::redis::layout;
use crate::broker::redis::sentinel::Sentinel;
use crate::wire::ProjectId;

/// One node: a Pub/Sub connection of its own (not redis-rs's connection manager),
/// SUBSCRIBE on `progress:<id>`.
pub(in crate::broker::redis) struct Single {
    sink: PubSubSink,
    stream: PubSubStream,
    /// Behind Sentinel: changes when the primary switched, which ends this connection.
    switched: Option<watch::Receiver<u64>>,
}

/// Which node: a fixed one, or the primary that the sentinels name.
pub(in crate::broker::redis) enum Node {
    Fixed(redis::Client),
    Sentinel(Arc<Sentinel>),
}

impl Connection for Single {
    type Target = Node;
    type Message = redis::Msg;
    const NAME: &'static str = "redis";
    const PROBE_PUBLISH: &'static str = "PUBLISH";

    async fn open(node: &Node, topics: &[Arc<dyn Watched>]) -> Result<Self, Lost> {
        let (client, switched) = match node {
            Node::Fixed(client) => (client.clone(), None),
            Node::Sentinel(sentinel) => {
                // Watched from before the question, so a switch during it is not missed.
                let mut switched = sentinel.switches();
                switched.mark_unchanged();
                (sentinel.primary().await?, Some(switched))
            }
        };
        let pubsub = within(client.get_async_pubsub()).await?;
        let (sink, stream) = pubsub.split();
        let mut conn = Self {
            sink,
            stream,
            switched,
        };
        conn.subscribe(topics).await?;
        Ok(conn)
    }

    async fn next(&mut self) -> Option<redis::Msg> {
        match &mut self.switched {
            Some(switched) => tokio::select! {
                message = self.stream.next() => message,
                // A switch (or the sentinels gone): this node is no longer the primary.
                _ = switched.changed() => None,
            },
            None => self.stream.next().await,
        }
    }

    async fn handle(&mut self, shared: &Shared, msg: redis::Msg) -> Result<(), Lost> {
        let channel: &[u8] = msg.get_channel_name().as_bytes();
        if shared.probe_received(channel, msg.get_payload_bytes()) {
            return Ok(());
        }
        // Only our own channels are ever subscribed, so anything else is ignored.
        if let Some(project) = layout::project_of_channel(msg.get_channel_name()) {
            shared
                .deliveries
                .deliver(&project, Bytes::copy_from_slice(msg.get_payload_bytes()));
        }
        Ok(())
    }

    async fn subscribe(&mut self, topics: &[Arc<dyn Watched>]) -> Result<(), Lost> {
        for batch in topics.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> =
                batch.iter().map(|t| layout::channel(t.project())).collect();
            within(self.sink.subscribe(channels)).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, projects: &[ProjectId]) -> Result<(), Lost> {
        for batch in projects.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(layout::channel).collect();
            within(self.sink.unsubscribe(channels)).await?;
        }
        Ok(())
    }

    async fn subscribe_probes(&mut self, instance: &str) -> Result<Vec<String>, Lost> {
        let channel = layout::probe_channel(instance);
        within(self.sink.subscribe(&channel)).await?;
        Ok(vec![channel])
    }

    async fn keepalive(&mut self) -> Result<(), Lost> {
        // In subscribed mode Redis answers PING with ["pong", ""], not "PONG".
        within(self.sink.ping::<Value>()).await.map(drop)
    }
}
