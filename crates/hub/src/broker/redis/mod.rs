//! The Redis broker: publishing through one atomic script on a shared multiplexed
//! connection, receiving through the process's single subscriber connection
//! (`subscriber/`: the loop, and its connection on one node or a cluster).
//!
//! Every key, channel and script is named in `layout.rs`. On a cluster the publish
//! script runs on the project's slot and publishes with SPUBLISH on `progress:{id}`,
//! which hashes to that same slot.

pub mod connection;
pub mod era;
pub mod history_policy;
pub mod layout;
pub mod outbox;
mod presence;
pub mod publish_inputs;
mod quota;
pub mod sentinel;
mod set_pages;
mod shared_read;
pub mod stall;
mod subscriber;
mod tag_index;
pub mod target;
mod vacancy;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::quota::Admission;
use super::{
    Broker, BrokerError, Deliveries, HistoryConfig, PreparedEvent, Replay, SubscriptionChange,
    TagEntry,
};
use crate::wire::{EventId, ProjectId, Tag};
use connection::{RedisConn, Timeouts};
use subscriber::{Cluster, Node, Single, Subscriber};
use target::RedisTarget;

/// How long one Redis command may take before the caller hears an error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/readyz` waits for Redis to answer ROLE (PING on a cluster).
const READY_TIMEOUT: Duration = Duration::from_millis(500);

/// The timeouts of a connection for commands.
fn command_timeouts() -> Timeouts {
    Timeouts {
        connect: COMMAND_TIMEOUT,
        response: COMMAND_TIMEOUT,
        max_retry_delay: Some(Duration::from_millis(500)),
    }
}

pub struct RedisBroker {
    /// Multiplexed connection for commands; reconnects by itself on the next command
    /// after a failure, so an outage of any length ends when Redis is back.
    commands: RedisConn,
    /// One node or a cluster: says which channels and publish command to use.
    target: RedisTarget,
    /// Set by the subscriber: true while its connection is up and subscribed.
    subscriber_up: Arc<AtomicBool>,
    /// Set by the subscriber's liveness probe from a miss until a probe comes back.
    probe_failing: Arc<AtomicBool>,
    history: HistoryConfig,
    /// Concurrent history reads of one project share one read (see `shared_read.rs`).
    reads: shared_read::SharedReads,
    /// On one node: the era the publish script checks, stamped before a publish on a
    /// connection that may be new (see `era.rs`).
    era: Option<era::Era>,
    /// A publisher that is not a hub (a worker, `progress-hub publish`): publishes with
    /// the history policy the hubs announce (see `history_policy.rs`), not `history`.
    follower: Option<history_policy::Follower>,
}

impl RedisBroker {
    /// A broker that can publish and read history. Connects lazily: a Redis that is
    /// down now is an error on use, not at start.
    /// `url` names one node or a cluster (see [`RedisTarget`]).
    pub fn connect(url: &str, history: HistoryConfig) -> Result<Self, BrokerError> {
        history.check()?;
        let target = RedisTarget::parse(url)?;
        let timeouts = command_timeouts();
        let era = matches!(target, RedisTarget::Single(_)).then(era::Era::default);
        let commands = RedisConn::open(&target, timeouts)?;
        Ok(Self {
            commands,
            era,
            target,
            subscriber_up: Arc::new(AtomicBool::new(false)),
            probe_failing: Arc::new(AtomicBool::new(false)),
            history,
            reads: shared_read::SharedReads::default(),
            follower: None,
        })
    }

    /// This broker as a publisher that is not a hub: it publishes with the history
    /// policy the hubs announce (its own only while none is announced).
    pub fn following_the_hubs(mut self) -> Self {
        self.follower = Some(history_policy::Follower::new(self.history));
        self
    }

    /// Announces this hub's history policy now and every `ANNOUNCE_EVERY` until
    /// `shutdown` (see `history_policy.rs`).
    pub fn spawn_announcer(&self, shutdown: CancellationToken, tracker: &TaskTracker) {
        let mut conn = self.commands.clone();
        let history = self.history;
        tracker.spawn(async move {
            let mut every = tokio::time::interval(history_policy::ANNOUNCE_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {
                        if let Err(err) = history_policy::announce(&mut conn, &history).await {
                            tracing::debug!(error = %err, "history policy not announced; trying again");
                        }
                    }
                }
            }
        });
    }

    /// Keeps this process's presence entries (its watchers of each project) true until
    /// `shutdown` (see `presence.rs`); they count for `ttl` after each refresh. On a
    /// connection of its own, so a refresh of many projects never queues ahead of a
    /// session's history read.
    pub fn spawn_presence(
        &self,
        ttl: Duration,
        deliveries: Arc<dyn Deliveries>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), BrokerError> {
        let conn = RedisConn::open(&self.target, command_timeouts())?;
        let presence = presence::Presence::new(ttl);
        tracker.spawn(presence.run(conn, deliveries, shutdown));
        Ok(())
    }

    /// Starts the process's single subscriber connection, feeding `deliveries`.
    pub fn spawn_subscriber(
        &self,
        keepalive: Duration,
        deliveries: Arc<dyn Deliveries>,
        changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), BrokerError> {
        let up = Arc::clone(&self.subscriber_up);
        let probe = Arc::clone(&self.probe_failing);
        let commands = self.commands.clone();
        match &self.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| BrokerError::InvalidUrl(e.to_string()))?;
                let node = Node::Fixed(client);
                let subscriber =
                    Subscriber::<Single>::new(node, commands, deliveries, up, keepalive, probe)
                        .stamping(self.era.clone());
                tracker.spawn(subscriber.run(changes, shutdown));
            }
            RedisTarget::Sentinel(_) => {
                let RedisConn::Sentinel(conn) = &commands else {
                    return Err(BrokerError::InvalidUrl(
                        "a sentinel URL without a sentinel connection".into(),
                    ));
                };
                let node = Node::Sentinel(Arc::clone(conn.sentinel()));
                let subscriber =
                    Subscriber::<Single>::new(node, commands, deliveries, up, keepalive, probe);
                tracker.spawn(subscriber.run(changes, shutdown));
            }
            RedisTarget::Cluster(seeds) => {
                let subscriber = Subscriber::<Cluster>::new(
                    seeds.clone(),
                    commands,
                    deliveries,
                    up,
                    keepalive,
                    probe,
                );
                tracker.spawn(subscriber.run(changes, shutdown));
            }
        }
        Ok(())
    }

    /// Whether this broker runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        project: &ProjectId,
        event: &PreparedEvent,
    ) -> Result<EventId, BrokerError> {
        let route = publish_inputs::Route {
            project,
            channel: self.target.channel(project),
            publish_command: self.target.publish_command(),
            era: self.era.is_some(),
            outbox: !self.target.is_cluster(),
            new_epoch: EventId::new_epoch(),
        };
        let mut conn = self.commands.clone();
        let history = match &self.follower {
            Some(follower) => follower.current(&mut conn).await,
            None => self.history,
        };
        let call = publish_inputs::invocation(&route, event, &history);
        if let Some(era) = &self.era {
            era.ensure(&mut conn).await?;
        }
        let answer: redis::Value = match call.invoke_async(&mut conn).await {
            Ok(answer) => answer,
            Err(err) => {
                if let Some(era) = &self.era {
                    era.mark_unsure();
                }
                return Err(err.into());
            }
        };
        let bad = |answer: &dyn std::fmt::Debug| {
            BrokerError::Unavailable(format!("publish script answered {answer:?}, not an id"))
        };
        let (id, begun) = publish_inputs::answer(&answer).ok_or_else(|| bad(&answer))?;
        let id = id.parse().map_err(|_| bad(&id))?;
        // The tags' indexes, and every project's when a run began, in their own
        // slots: after the script, not with it.
        let mut indexes = event.state.tags.clone().unwrap_or_default();
        if begun {
            indexes.push(Tag::all());
        }
        if !indexes.is_empty() {
            let keep = history.active_ttl.max(history.retention) * 2;
            tag_index::add(&mut conn, project, &indexes, crate::wire::now_ms(), keep).await?;
        }
        Ok(id)
    }

    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError> {
        let mut conn = self.commands.clone();
        let _: i64 = redis::cmd(self.target.publish_command())
            .arg(self.target.channel(project))
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn replay(
        &self,
        project: &ProjectId,
        after: Option<&EventId>,
    ) -> Result<Replay, BrokerError> {
        self.reads.replay(&self.commands, project, after).await
    }

    async fn tagged(
        &self,
        tag: &Tag,
        since_ms: u64,
        after: Option<&TagEntry>,
        count: usize,
    ) -> Result<Vec<TagEntry>, BrokerError> {
        let mut conn = self.commands.clone();
        Ok(tag_index::page(&mut conn, tag, since_ms, after, count).await?)
    }

    async fn untag(&self, tag: &Tag, projects: &[ProjectId]) -> Result<(), BrokerError> {
        let mut conn = self.commands.clone();
        Ok(tag_index::forget(&mut conn, tag, projects).await?)
    }

    async fn admit(&self, project: &ProjectId, client: &str) -> Result<Admission, BrokerError> {
        let mut conn = self.commands.clone();
        let window = self.history.active_ttl;
        Ok(quota::admit(
            &mut conn,
            &self.history.project_quota,
            window,
            project,
            client,
        )
        .await?)
    }

    async fn watchers(&self, project: &ProjectId) -> Result<u64, BrokerError> {
        let mut conn = self.commands.clone();
        Ok(presence::watchers(&mut conn, project).await?)
    }

    async fn record_complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<(), BrokerError> {
        let mut conn = self.commands.clone();
        let retention = self.history.retention;
        Ok(presence::record_complete_seen(&mut conn, project, complete, retention).await?)
    }

    async fn complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<bool, BrokerError> {
        let mut conn = self.commands.clone();
        Ok(presence::complete_seen(&mut conn, project, complete).await?)
    }

    /// Ready while the subscriber is subscribed and the command connection reaches a
    /// node that takes writes: a primary that a failover demoted to a replica still
    /// answers PING, so one node (and a Sentinel primary) is asked its ROLE.
    async fn is_ready(&self) -> bool {
        if self.unready_reason().is_some() {
            return false;
        }
        let mut conn = self.commands.clone();
        if self.target.is_cluster() {
            let ping = redis::cmd("PING");
            let answer = tokio::time::timeout(READY_TIMEOUT, ping.query_async::<String>(&mut conn));
            return matches!(answer.await, Ok(Ok(_)));
        }
        // Behind Sentinel: the generation the answer comes from (or a later one).
        let sentinel = match &self.commands {
            RedisConn::Sentinel(conn) => Some(conn.sentinel()),
            _ => None,
        };
        let seen = sentinel.map(|s| s.generation());
        let role = redis::cmd("ROLE");
        let answer = tokio::time::timeout(READY_TIMEOUT, role.query_async::<Value>(&mut conn));
        let role = match answer.await {
            Ok(Ok(Value::Array(role))) => role.into_iter().next(),
            _ => return false,
        };
        let primary = match role {
            Some(Value::BulkString(name)) => name == b"master",
            Some(Value::SimpleString(name)) => name == "master",
            _ => false,
        };
        // A node the sentinels named answers as a replica: demoted, maybe with no
        // announcement heard and no write to meet READONLY; the sentinels are asked
        // again, so the hub does not stay on it (and unready) until the next write.
        if let (false, Some(sentinel), Some(seen)) = (primary, sentinel, seen) {
            sentinel.suspect(seen);
        }
        primary
    }

    fn unready_reason(&self) -> Option<&'static str> {
        if self.probe_failing.load(Ordering::Relaxed) {
            Some("pubsub_probe_missed")
        } else if !self.subscriber_up.load(Ordering::Relaxed) {
            Some("subscriber_down")
        } else {
            None
        }
    }

    fn kind(&self) -> &'static str {
        match self.target {
            RedisTarget::Single(_) => "redis",
            RedisTarget::Cluster(_) => "redis-cluster",
            RedisTarget::Sentinel(_) => "redis-sentinel",
        }
    }
}
