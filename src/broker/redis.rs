//! The Redis broker: publishing through one atomic script on a shared multiplexed
//! connection, receiving through the process's single subscriber connection
//! (`subscriber.rs`; on a Redis Cluster, `cluster_subscriber.rs`).
//!
//! Keys of one project share the hash tag `{project_id}` so the script stays valid on
//! Redis Cluster: `progress:{id}:history` (a stream), `progress:{id}:state` (a hash) and
//! `progress:{id}:pub:<receipt>`. On a cluster the script runs on the project's slot and
//! publishes with SPUBLISH on `progress:{id}`, which hashes to that same slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster_subscriber::Cluster;
use super::connection::{RedisConn, Timeouts};
use super::subscriber::{Single, Subscriber};
use super::target::RedisTarget;
use super::{Broker, BrokerError, HistoryConfig, Replay};
use crate::hub::{Hub, SubscriptionChange};
use crate::wire::{EventId, Frame, PreparedEvent, ProjectId, ProjectState};

/// How long one Redis command may take before the caller hears an error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/readyz` waits for Redis to answer PING.
const READY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisBroker {
    /// Multiplexed connection for commands; reconnects by itself on the next command
    /// after a failure, so an outage of any length ends when Redis is back.
    commands: RedisConn,
    /// One node or a cluster: says which channels and publish command to use.
    target: RedisTarget,
    /// Set by the subscriber: true while its connection is up and subscribed.
    subscriber_up: Arc<AtomicBool>,
    history: HistoryConfig,
    publish: redis::Script,
}

pub fn history_key(project: &ProjectId) -> String {
    format!("progress:{{{project}}}:history")
}

pub fn state_key(project: &ProjectId) -> String {
    format!("progress:{{{project}}}:state")
}

impl RedisBroker {
    /// A broker that can publish and read history. Connects lazily: a Redis that is
    /// down now is an error on use, not at start.
    /// `url` names one node or a cluster (see [`RedisTarget`]).
    pub fn connect(url: &str, history: HistoryConfig) -> Result<Self, BrokerError> {
        let target = RedisTarget::parse(url)?;
        let timeouts = Timeouts {
            connect: COMMAND_TIMEOUT,
            response: COMMAND_TIMEOUT,
            max_retry_delay: Some(Duration::from_millis(500)),
        };
        let commands = RedisConn::open(&target, timeouts)?;
        Ok(Self {
            commands,
            target,
            subscriber_up: Arc::new(AtomicBool::new(false)),
            history,
            publish: redis::Script::new(include_str!("publish.lua")),
        })
    }

    /// Starts the process's single subscriber connection, feeding `hub`.
    pub fn spawn_subscriber(
        &self,
        keepalive: Duration,
        hub: Arc<Hub>,
        changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), BrokerError> {
        let up = Arc::clone(&self.subscriber_up);
        let commands = self.commands.clone();
        match &self.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| BrokerError::InvalidUrl(e.to_string()))?;
                let subscriber = Subscriber::<Single>::new(client, commands, hub, up, keepalive);
                tracker.spawn(subscriber.run(changes, shutdown));
            }
            RedisTarget::Cluster(seeds) => {
                let subscriber =
                    Subscriber::<Cluster>::new(seeds.clone(), commands, hub, up, keepalive);
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

/// `''` leaves a state field unchanged; `'=' .. value` sets it (see `publish.lua`).
fn change(value: Option<&str>) -> String {
    value.map(|v| format!("={v}")).unwrap_or_default()
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        project: &ProjectId,
        event: &PreparedEvent,
    ) -> Result<EventId, BrokerError> {
        let t = &event.template;
        let s = &event.state;
        let eta = s
            .estimated_remaining
            .map(|eta| eta.map(|v| v.to_string()).unwrap_or_default());
        let mut conn = self.commands.clone();
        let id: String = self
            .publish
            .key(history_key(project))
            .key(state_key(project))
            .key(format!("progress:{{{project}}}:pub:{}", event.receipt))
            .arg(self.target.channel(project))
            .arg(EventId::new_epoch())
            .arg(self.history.max_len)
            .arg(self.history.active_ttl.as_secs().max(1))
            .arg(self.history.retention.as_secs().max(1))
            .arg(s.event)
            .arg(&t.head)
            .arg(&t.mid)
            .arg(&t.tail)
            .arg(t.progress.map(|p| p.to_string()).unwrap_or_default())
            .arg(s.progress_floor.map(|p| p.to_string()).unwrap_or_default())
            .arg(change(s.status.as_deref()))
            .arg(change(s.current_stage.as_deref()))
            .arg(change(eta.as_deref()))
            .arg(change(s.youtube_url.as_deref()))
            .arg(&s.updated_at)
            .arg(
                s.job
                    .as_ref()
                    .map(|j| j.job_id.as_str())
                    .unwrap_or_default(),
            )
            .arg(self.target.publish_command())
            .arg(
                s.job
                    .as_ref()
                    .map(|j| j.token.to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut conn)
            .await?;
        id.parse().map_err(|_| {
            BrokerError::Unavailable(format!("publish script returned a bad id {id:?}"))
        })
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
        let mut conn = self.commands.clone();
        Ok(read_replay(&mut conn, project, after).await?)
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
        match self.target {
            RedisTarget::Single(_) => "redis",
            RedisTarget::Cluster(_) => "redis-cluster",
        }
    }
}

/// The state and history read of `replay.lua`.
static REPLAY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("replay.lua")));

/// The project's state and the retained history after `after` (in the same epoch), in
/// one atomic read (a script: one command, whose MOVED a cluster connection follows).
/// Shared by sessions (resume) and the subscriber (gap fill).
pub(super) async fn read_replay(
    conn: &mut RedisConn,
    project: &ProjectId,
    after: Option<&EventId>,
) -> Result<Replay, redis::RedisError> {
    let (hash, range): (HashMap<String, String>, StreamRangeReply) = match after {
        Some(after) => {
            REPLAY
                .key(state_key(project))
                .key(history_key(project))
                .arg(format!("(0-{}", after.seq()))
                .invoke_async(conn)
                .await?
        }
        None => (
            redis::cmd("HGETALL")
                .arg(state_key(project))
                .query_async(conn)
                .await?,
            StreamRangeReply::default(),
        ),
    };
    let state = ProjectState::from_hash(&hash);
    let same_epoch =
        matches!((&state, after), (Some((_, last)), Some(a)) if last.epoch() == a.epoch());
    let mut frames = Vec::new();
    if same_epoch {
        for entry in range.ids {
            let Some(redis::Value::BulkString(bytes)) = entry.map.get("frame") else {
                continue;
            };
            match Frame::from_published(Bytes::copy_from_slice(bytes)) {
                Ok(frame) => frames.push(frame),
                Err(err) => {
                    tracing::warn!(project_id = %project, error = %err, "unreadable history entry skipped")
                }
            }
        }
    }
    Ok(Replay {
        state,
        after: frames,
    })
}
