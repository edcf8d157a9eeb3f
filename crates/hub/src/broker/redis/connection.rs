//! The command connection to Redis, whether one node or a cluster: one type, so the
//! publish script, history reads and the job queue run unchanged on either.
//!
//! - One node: redis-rs's connection manager (multiplexed, reconnects on the next
//!   command after a failure).
//! - A cluster: redis-rs's cluster connection (multiplexed per node, routes each command
//!   by its keys' slot, follows MOVED/ASK, refreshes the topology). It is opened on
//!   first use, so a cluster that is down at start is an error on use, as for one node.
//! - A Sentinel primary: a multiplexed connection to the node the sentinels name,
//!   opened on first use and again whenever the primary switched (see `sentinel.rs`), a
//!   command failed on a broken connection, or a node answered `READONLY` (a command
//!   refused as READONLY wrote nothing, so it is sent once more to the new primary).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use super::sentinel::{Sentinel, is_demoted};
use super::target::RedisTarget;
use crate::broker::BrokerError;

/// Timeouts of a command connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    /// Longest wait between the connection manager's reconnect attempts (one node);
    /// `None`: redis-rs's default.
    pub max_retry_delay: Option<Duration>,
}

/// A command connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(LazyCluster),
    Sentinel(SentinelConn),
}

impl RedisConn {
    /// A connection to `target`; connects lazily.
    pub fn open(target: &RedisTarget, timeouts: Timeouts) -> Result<Self, BrokerError> {
        Ok(match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| BrokerError::InvalidUrl(e.to_string()))?;
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response))
                    .set_number_of_retries(2);
                if let Some(delay) = timeouts.max_retry_delay {
                    config = config.set_max_delay(delay);
                }
                Self::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster(seeds) => {
                let client = cluster_builder(seeds)
                    .connection_timeout(timeouts.connect)
                    .response_timeout(timeouts.response)
                    .build()
                    .map_err(|e| BrokerError::InvalidUrl(e.to_string()))?;
                Self::Cluster(LazyCluster::new(client))
            }
            RedisTarget::Sentinel(target) => Self::Sentinel(SentinelConn {
                sentinel: Sentinel::new(target)?,
                current: Arc::new(parking_lot::Mutex::new(None)),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response)),
            }),
        })
    }
}

/// The builder every cluster connection of the hub starts from.
pub fn cluster_builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.iter().map(String::as_str))
}

/// A cluster connection opened on first use (and again after a failed first attempt).
#[derive(Clone)]
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    fn new(client: ClusterClient) -> Self {
        Self {
            client: Arc::new(client),
            conn: Arc::new(OnceCell::new()),
        }
    }

    pub async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }

    /// A connection of its own, not shared with this one (for blocking commands, which
    /// would hold up everything else queued to the same node).
    pub async fn separate(&self) -> RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }
}

/// A connection to the primary that the sentinels name, reopened when it is stale.
#[derive(Clone)]
pub struct SentinelConn {
    sentinel: Arc<Sentinel>,
    /// The connection and the generation it was opened in; `None` until first use and
    /// after a failure.
    /// A plain lock, never held across an await (see [`SentinelConn::get`]).
    current: Arc<parking_lot::Mutex<Option<(u64, MultiplexedConnection)>>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    /// The sentinels, for the other connections to the same primary.
    pub fn sentinel(&self) -> &Arc<Sentinel> {
        &self.sentinel
    }

    /// A connection to the primary of the current generation, and that generation.
    ///
    /// No lock is held across an await: the caller may be a future that stops being
    /// polled mid-way (the worker polls a job's pipeline only under its lease, and the
    /// pipeline records its checkpoints on this connection). Had it held the lock while
    /// waiting for the sentinels, the job's keep-alive on the same connection would wait
    /// for a lock that nobody releases, and the worker would stall for good after a
    /// failover.
    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let generation = self.sentinel.generation();
        if let Some(conn) = self.current_of(generation) {
            return Ok((generation, conn));
        }
        let client = self.sentinel.primary().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let mut current = self.current.lock();
        // Another caller may have reconnected meanwhile: one connection per generation.
        if let Some((opened_in, existing)) = current.as_ref()
            && *opened_in == generation
        {
            return Ok((generation, existing.clone()));
        }
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// The connection if it was opened in `generation`.
    fn current_of(&self, generation: u64) -> Option<MultiplexedConnection> {
        match self.current.lock().as_ref() {
            Some((opened_in, conn)) if *opened_in == generation => Some(conn.clone()),
            _ => None,
        }
    }

    /// Takes note of a failed command on a connection of `generation`: whether to send
    /// it again (only when the node refused it as a replica: nothing was written).
    async fn failed(&self, generation: u64, err: &RedisError) -> bool {
        if is_demoted(err) {
            self.sentinel.suspect(generation);
            return true;
        }
        if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
            let mut current = self.current.lock();
            if matches!(current.as_ref(), Some((opened_in, _)) if *opened_in == generation) {
                *current = None;
            }
        }
        false
    }

    /// Takes note of a command's reply on a connection of `generation`: whether the node
    /// refused it as a replica. redis-rs hands an error reply back as a value
    /// (`Value::ServerError`), turned into an `Err` only when the caller converts it, so
    /// a READONLY reply is never an `Err` here.
    fn refused(&self, generation: u64, reply: &Value) -> bool {
        let demoted = refused_as_replica(reply);
        if demoted {
            self.sentinel.suspect(generation);
        }
        demoted
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.get().await?;
        match conn.req_packed_command(cmd).await {
            // Refused as READONLY: nothing was written, so it is sent once more.
            Ok(reply) if self.refused(generation, &reply) => {}
            Err(err) if self.failed(generation, &err).await => {}
            answer => return answer,
        }
        let (_, mut conn) = self.get().await?;
        conn.req_packed_command(cmd).await
    }

    async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.get().await?;
        match conn.req_packed_commands(pipeline, offset, count).await {
            // A replica refuses every write, so a pipeline with a refused one wrote nothing.
            Ok(replies) if replies.iter().any(|r| self.refused(generation, r)) => {}
            Err(err) if self.failed(generation, &err).await => {}
            answer => return answer,
        }
        let (_, mut conn) = self.get().await?;
        conn.req_packed_commands(pipeline, offset, count).await
    }
}

/// Whether a reply is a node's refusal of a write as a replica (`READONLY`, also from
/// inside a script), anywhere in it (a transaction's replies are nested).
fn refused_as_replica(reply: &Value) -> bool {
    match reply {
        Value::ServerError(err) => {
            err.code() == "READONLY" || err.details().is_some_and(|d| d.contains("READONLY"))
        }
        Value::Array(items) => items.iter().any(refused_as_replica),
        _ => false,
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
            Self::Sentinel(conn) => Box::pin(conn.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
            Self::Sentinel(conn) => Box::pin(conn.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
            Self::Sentinel(conn) => conn.sentinel.db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(resp: &[u8]) -> Value {
        redis::parse_redis_value(resp).expect("a RESP reply")
    }

    #[test]
    fn a_readonly_reply_is_a_refusal_as_a_replica() {
        // As Redis 7 answers a write, and a write inside a script, on a replica.
        let plain = reply(b"-READONLY You can't write against a read only replica.\r\n");
        let script = reply(
            b"-READONLY You can't write against a read only replica. script: 1d3a, on @user_script:96.\r\n",
        );
        assert!(refused_as_replica(&plain) && refused_as_replica(&script));
        // A transaction's replies are nested.
        assert!(refused_as_replica(&Value::Array(vec![Value::Okay, plain])));
        let other = reply(b"-ERR unknown command\r\n");
        assert!(!refused_as_replica(&other) && !refused_as_replica(&Value::Okay));
    }
}
