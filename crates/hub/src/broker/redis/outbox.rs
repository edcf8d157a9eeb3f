//! The webhook outbox in Redis (see `broker/outbox.rs`): the stream
//! [`layout::OUTBOX_KEY`], which `publish.lua` appends a run's end to in the same atomic
//! step as the `complete`, read by every hub with webhooks in the consumer group
//! [`layout::OUTBOX_GROUP`]. An entry taken stays pending (its lease) until done; one
//! whose holder went quiet for the lease is claimed by another (XAUTOCLAIM), so each is
//! delivered by one hub at a time and none is lost when a hub dies.
//!
//! The script appends only while the stream exists, i.e. once a hub with webhooks has
//! created the group: publishers (workers, the Python SDK) need not know of webhooks.
//! One node (or Sentinel's primary) only: on a cluster the stream would be in another
//! slot than the project's keys, so the hub refuses webhooks there (see `webhook/`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{FromRedisValue, Value};

use super::connection::{RedisConn, Timeouts};
use super::layout::{self, OUTBOX_GROUP, OUTBOX_KEY};
use super::target::RedisTarget;
use crate::broker::BrokerError;
use crate::broker::outbox::{Outbox, OutboxEntry};
use crate::wire::ProjectId;
use crate::wire::stall::Bounds;

/// How long one read waits for a new entry (the connection is this outbox's own, so the
/// blocked read holds up nothing else).
const BLOCK: Duration = Duration::from_secs(1);

pub struct RedisOutbox {
    /// Its own connection: a blocking XREADGROUP must not stall the publish path.
    conn: RedisConn,
    /// The stall scan's (`stall.rs`) and the 410 record's, which must not wait behind
    /// that blocked read.
    scan: RedisConn,
    /// This process in the group (unique per process: a restarted hub is a new consumer
    /// and takes its predecessor's entries when their lease runs out).
    consumer: String,
    lease: Duration,
    /// Whether the group is known to exist (made at the first read, and again after
    /// Redis lost it): a hub starts while Redis is down, as it does without webhooks.
    grouped: AtomicBool,
}

impl RedisOutbox {
    /// The outbox on the Redis `url` names. Connects lazily; the stream and its group are
    /// created at the first read if new.
    pub fn open(url: &str, lease: Duration) -> Result<Self, BrokerError> {
        let target = RedisTarget::parse(url)?;
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            response: BLOCK + Duration::from_secs(2),
            max_retry_delay: Some(Duration::from_millis(500)),
        };
        let conn = RedisConn::open(&target, timeouts)?;
        let scan = RedisConn::open(&target, timeouts)?;
        Ok(Self {
            conn,
            scan,
            consumer: format!("hub-{}", crate::wire::EventId::new_epoch()),
            lease,
            grouped: AtomicBool::new(false),
        })
    }

    /// Creates the stream and its group (from the start: entries written before are
    /// delivered too); an existing group is kept.
    async fn create_group(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(OUTBOX_KEY)
            .arg(OUTBOX_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(err) if err.code() != Some("BUSYGROUP") => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// Entries whose holder has not renewed its lease, now this consumer's.
    async fn reclaim(&self, max: usize) -> Result<Vec<StreamId>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(OUTBOX_KEY)
            .arg(OUTBOX_GROUP)
            .arg(&self.consumer)
            .arg(self.lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(reply.claimed)
    }

    async fn read_new(&self, max: usize) -> Result<Vec<StreamId>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(OUTBOX_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(OUTBOX_KEY)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }
}

/// An outbox entry as `publish.lua` wrote it: `channel` (the project's), then the state
/// hash's fields. `None` for one that is not (never delivered; it is dropped).
fn entry(raw: StreamId) -> Option<OutboxEntry> {
    let mut state: HashMap<String, String> = raw
        .map
        .into_iter()
        .filter_map(|(k, v)| String::from_redis_value(v).ok().map(|v| (k, v)))
        .collect();
    let project = layout::project_of_channel(&state.remove("channel")?)?;
    let (kind, reason) = super::stall::take_kind(&mut state);
    let enqueued_ms = raw.id.split('-').next()?.parse().ok()?;
    Some(OutboxEntry {
        id: raw.id,
        project,
        state,
        enqueued_ms,
        kind,
        reason,
    })
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn take(&self, max: usize) -> Result<Vec<OutboxEntry>, BrokerError> {
        if !self.grouped.load(Ordering::Relaxed) {
            self.create_group().await?;
        }
        let mut raw = match self.reclaim(max).await {
            Ok(raw) => raw,
            // The stream or its group was lost (Redis restarted empty): made anew.
            Err(err) if err.code() == Some("NOGROUP") => {
                self.create_group().await?;
                Vec::new()
            }
            Err(err) => return Err(err.into()),
        };
        if raw.len() < max {
            raw.extend(self.read_new(max - raw.len()).await?);
        }
        let mut taken = Vec::with_capacity(raw.len());
        for one in raw {
            let id = one.id.clone();
            match entry(one) {
                Some(entry) => taken.push(entry),
                None => {
                    tracing::warn!(id, "webhook outbox entry unreadable; dropped");
                    self.done(&id).await?;
                }
            }
        }
        Ok(taken)
    }

    async fn keep(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XCLAIM")
            .arg(OUTBOX_KEY)
            .arg(OUTBOX_GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn done(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(OUTBOX_KEY)
            .arg(OUTBOX_GROUP)
            .arg(id)
            .cmd("XDEL")
            .arg(OUTBOX_KEY)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn scan_stalled(
        &self,
        bounds: &Bounds,
        lost: &HashSet<ProjectId>,
    ) -> Result<usize, BrokerError> {
        super::stall::scan(&self.scan, bounds, lost).await
    }

    async fn scan_vacated(&self, grace: Duration) -> Result<usize, BrokerError> {
        super::vacancy::scan(&self.scan, grace).await
    }

    async fn is_gone(&self, endpoint: &str) -> Result<bool, BrokerError> {
        let mut conn = self.scan.clone();
        let gone: bool = redis::cmd("HEXISTS")
            .arg(layout::WEBHOOKS_GONE_KEY)
            .arg(endpoint)
            .query_async(&mut conn)
            .await?;
        Ok(gone)
    }

    async fn set_gone(&self, endpoint: &str) -> Result<(), BrokerError> {
        let mut conn = self.scan.clone();
        let _: Value = redis::cmd("HSET")
            .arg(layout::WEBHOOKS_GONE_KEY)
            .arg(endpoint)
            .arg(crate::broker::outbox::now_ms())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn pending(&self) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        let len: u64 = redis::cmd("XLEN")
            .arg(OUTBOX_KEY)
            .query_async(&mut conn)
            .await?;
        Ok(len)
    }
}
