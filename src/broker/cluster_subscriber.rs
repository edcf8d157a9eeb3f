//! The process's single subscriber on a Redis Cluster: sharded Pub/Sub.
//!
//! Each watched project's shard channel `progress:{<id>}` lives in the project's slot,
//! so SSUBSCRIBE goes to the one primary that owns it and SPUBLISH (in `publish.lua`)
//! is delivered by that shard alone, not broadcast over the cluster bus as a plain
//! PUBLISH would be. redis-rs's cluster connection (RESP3, with a push channel) holds
//! one connection per node, routes each SSUBSCRIBE by slot and, after a node's
//! connection drops or the topology changes, subscribes again where the slot now lives.
//!
//! Lossless, as on one node (`subscriber.rs`, whose gap fill this shares): every
//! SSUBSCRIBE confirmation the server sends (the first, and each resubscription after a
//! reconnect, failover or slot move) is followed by a gap fill of that project from its
//! history before the next message is delivered.
//!
//! Failover and slot moves: a node that loses a slot (a master demoted in a failover, or
//! the source of a migration) ends its subscriptions there with its own SUNSUBSCRIBE.
//! The project is subscribed again where the slot lives now; first a keyed probe sends
//! the connection to the slot's owner, so that a stale slot map is corrected (the old
//! node answers MOVED, redis-rs refreshes its map) before the SSUBSCRIBE is routed. This
//! matters: a replica accepts SSUBSCRIBE for its master's slots, and a subscription left
//! on the demoted master was found to receive nothing more (`a_manual_failover_is_survived`).
//! A refresh can still read a stale map from a node that has not heard of the failover
//! yet, so the subscriber then asks every node its map takes for a primary for its ROLE
//! ([`check_primaries`]); so does every new connection before it subscribes, and the
//! keep-alive. A node that answers as a replica, or does not answer, makes the subscriber
//! rebuild the whole cluster connection with backoff, resubscribing and gap-filling every
//! watched project, as the single-node subscriber does after a reconnect.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::{RedisConn, cluster_builder};
use super::subscriber::{
    BACKOFF_MAX, Lost, fill_gap, new_backoff, project_of, record_origins, within,
};
use crate::hub::{Hub, SubscriptionChange, Topic};
use crate::metrics as m;
use crate::wire::ProjectId;

/// Connect and response timeouts of the subscriber's cluster connection.
const TIMEOUT: Duration = Duration::from_secs(3);

pub struct ClusterSubscriber {
    seeds: Vec<String>,
    /// For the history reads of gap filling.
    commands: RedisConn,
    hub: Arc<Hub>,
    up: Arc<AtomicBool>,
    /// Projects that have watchers, with the topic to tell once subscribed.
    wanted: HashMap<ProjectId, Arc<Topic>>,
    keepalive: Duration,
}

enum Exit {
    Shutdown,
    Lost(Lost),
}

/// A live cluster connection and the push messages of all its nodes.
struct Link {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl ClusterSubscriber {
    pub fn new(
        seeds: Vec<String>,
        commands: RedisConn,
        hub: Arc<Hub>,
        up: Arc<AtomicBool>,
        keepalive: Duration,
    ) -> Self {
        Self {
            seeds,
            commands,
            hub,
            up,
            wanted: HashMap::new(),
            keepalive,
        }
    }

    pub async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = new_backoff();
        let mut ever_connected = false;
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok(link) => {
                    if ever_connected {
                        m::redis_reconnected();
                        tracing::info!(
                            channels = self.wanted.len(),
                            "redis cluster subscriber reconnected and resubscribed"
                        );
                    }
                    ever_connected = true;
                    failures = 0;
                    backoff = new_backoff();
                    let exit = self.serve(link, &mut changes, &shutdown).await;
                    self.up.store(false, Ordering::Relaxed);
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Lost(why) => {
                            tracing::warn!(error = %why, "redis cluster subscriber lost; reconnecting");
                        }
                    }
                }
                Err(why) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(error = %why, attempts = failures, "redis cluster subscriber cannot connect; retrying");
                    }
                }
            }
            let delay = backoff.next().unwrap_or(BACKOFF_MAX);
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut wait => break,
                    change = changes.recv() => match change {
                        Some(change) => self.want(change),
                        None => return,
                    },
                }
            }
        }
    }

    /// Connects to the cluster and subscribes every wanted project.
    async fn connect(&mut self) -> Result<Link, Lost> {
        let (tx, pushes) = mpsc::unbounded_channel();
        let client = cluster_builder(&self.seeds)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .build()?;
        let mut conn = within(client.get_async_connection()).await?;
        // A map that still names a demoted primary would put subscriptions on a replica.
        check_primaries(&mut conn).await?;
        let topics: Vec<Arc<Topic>> = self.wanted.values().cloned().collect();
        for topic in &topics {
            within(conn.ssubscribe(topic.project().shard_channel())).await?;
        }
        for topic in &topics {
            fill_gap(&self.commands, &self.hub, topic).await?;
            topic.mark_subscribed();
        }
        self.up.store(true, Ordering::Relaxed);
        Ok(Link { conn, pushes })
    }

    async fn serve(
        &mut self,
        mut link: Link,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: &CancellationToken,
    ) -> Exit {
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Shutdown,
                push = link.pushes.recv() => match push {
                    Some(push) => self.on_push(push, &mut link.conn).await,
                    None => Err(Lost::Closed),
                },
                change = changes.recv() => match change {
                    Some(change) => self.apply(change, changes, &mut link.conn).await,
                    None => return Exit::Shutdown,
                },
                _ = keepalive.tick() => check_primaries(&mut link.conn).await,
            };
            if let Err(lost) = result {
                return Exit::Lost(lost);
            }
        }
    }

    async fn on_push(&mut self, push: PushInfo, conn: &mut ClusterConnection) -> Result<(), Lost> {
        let channel = |data: &[Value]| match data.first() {
            Some(Value::BulkString(name)) => std::str::from_utf8(name)
                .ok()
                .and_then(ProjectId::from_shard_channel),
            _ => None,
        };
        match push.kind {
            PushKind::SMessage => {
                if let (Some(project), Some(Value::BulkString(payload))) =
                    (channel(&push.data), push.data.get(1))
                {
                    self.hub.deliver(&project, Bytes::copy_from_slice(payload));
                }
            }
            // The first confirmation, or a resubscription after a reconnect, failover or
            // slot move: fill what may have been missed meanwhile.
            PushKind::SSubscribe => {
                if let Some(topic) = channel(&push.data).and_then(|p| self.wanted.get(&p)) {
                    fill_gap(&self.commands, &self.hub, topic).await?;
                }
            }
            // Ours (the last watcher left), or the server's: the slot moved away. Still
            // wanted means the server's: subscribe again where the slot lives now.
            PushKind::SUnsubscribe => {
                if let Some(project) = channel(&push.data)
                    && self.wanted.contains_key(&project)
                {
                    // A keyed read goes to the slot's primary as this connection knows it;
                    // if that is the old owner, it answers MOVED and redis-rs refreshes its
                    // slot map before routing anything else.
                    let mut probe = redis::cmd("TYPE");
                    probe.arg(project.shard_channel());
                    within(probe.query_async::<Value>(conn)).await?;
                    within(conn.ssubscribe(project.shard_channel())).await?;
                    // The map may have been refreshed from a node that has not heard of
                    // the failover yet: then start over on a fresh connection.
                    check_primaries(conn).await?;
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    "a redis cluster node's connection dropped; redis-rs reconnects and resubscribes"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies `first` and every other change already waiting.
    async fn apply(
        &mut self,
        first: SubscriptionChange,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        conn: &mut ClusterConnection,
    ) -> Result<(), Lost> {
        let mut was_wanted: HashMap<ProjectId, bool> = HashMap::new();
        let waiting = std::iter::from_fn(|| changes.try_recv().ok());
        for change in std::iter::once(first).chain(waiting) {
            let project = project_of(&change);
            if !was_wanted.contains_key(project) {
                was_wanted.insert(project.clone(), self.wanted.contains_key(project));
            }
            self.want(change);
        }
        let mut newly_subscribed = Vec::new();
        for (project, was) in was_wanted {
            match self.wanted.get(&project) {
                Some(topic) if was => topic.mark_subscribed(),
                Some(topic) => newly_subscribed.push(Arc::clone(topic)),
                // One slot per SSUNSUBSCRIBE: channels of different slots cannot share one.
                None if was => within(conn.sunsubscribe(project.shard_channel())).await?,
                None => {}
            }
        }
        if !newly_subscribed.is_empty() {
            record_origins(&self.commands, &newly_subscribed).await?;
            for topic in &newly_subscribed {
                within(conn.ssubscribe(topic.project().shard_channel())).await?;
            }
            for topic in newly_subscribed {
                topic.mark_subscribed();
            }
        }
        Ok(())
    }

    fn want(&mut self, change: SubscriptionChange) {
        match change {
            SubscriptionChange::Subscribe(topic) => {
                self.wanted.insert(topic.project().clone(), topic);
            }
            SubscriptionChange::Unsubscribe(project) => {
                self.wanted.remove(&project);
            }
        }
    }
}

/// The keep-alive: every node this connection takes for a primary must answer, and as a
/// primary. A replica among them means the slot map is stale (a failover it has not
/// seen), so subscriptions may sit on a node that no longer owns their slot.
async fn check_primaries(conn: &mut ClusterConnection) -> Result<(), Lost> {
    let role = redis::cmd("ROLE");
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let answers = within(conn.route_command(role, routing)).await?;
    let Value::Map(answers) = answers else {
        return Err(Lost::Stale(format!("unexpected ROLE answer {answers:?}")));
    };
    for (node, answer) in answers {
        let role = match &answer {
            Value::Array(fields) => fields.first(),
            _ => None,
        };
        match role {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => {}
            _ => {
                let node = match &node {
                    Value::BulkString(name) => String::from_utf8_lossy(name).into_owned(),
                    other => format!("{other:?}"),
                };
                return Err(Lost::Stale(format!("{node} is not a primary: {answer:?}")));
            }
        }
    }
    Ok(())
}
