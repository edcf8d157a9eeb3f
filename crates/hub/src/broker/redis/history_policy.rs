//! The hubs' history policy in Redis (issue 22 §3, issue 23 §7): the hubs announce how
//! much history a project keeps, and how long, at [`layout::HISTORY_POLICY_KEY`]; every
//! other publisher on that Redis (the worker, `progress-hub publish`, the Python SDK)
//! reads it and publishes with it, so a publisher configured otherwise cannot grow a
//! project's history past the hubs' bounds (nor shrink it). A publisher's own setting is
//! what it uses only while no hub has announced one.
//!
//! The key is a hash: `len`, `bytes` (per project), `active_ttl_s`, `retention_s`. It has
//! no TTL; the hubs write it at start and every [`ANNOUNCE_EVERY`] (so it is back soon
//! after Redis lost it), and a publisher reads it at most every [`ANNOUNCE_EVERY`].

use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionLike;
use tokio::time::Instant;

use super::layout;
use crate::broker::HistoryConfig;

/// How often the hubs write the policy, and a publisher reads it again.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);

/// Writes `history` as the hubs' policy.
pub async fn announce(
    conn: &mut (impl ConnectionLike + Send),
    history: &HistoryConfig,
) -> Result<(), redis::RedisError> {
    redis::cmd("HSET")
        .arg(layout::HISTORY_POLICY_KEY)
        .arg("len")
        .arg(history.max_len)
        .arg("bytes")
        .arg(history.max_bytes)
        .arg("active_ttl_s")
        .arg(history.active_ttl.as_secs())
        .arg("retention_s")
        .arg(history.retention.as_secs())
        .query_async::<()>(conn)
        .await
}

/// The announced policy (`memory_budget` from `own`: it is each process's own), or
/// `None` if none was announced; an announcement that makes no sense is ignored with
/// a warning.
pub async fn read(
    conn: &mut (impl ConnectionLike + Send),
    own: &HistoryConfig,
) -> Result<Option<HistoryConfig>, redis::RedisError> {
    let fields: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(layout::HISTORY_POLICY_KEY)
        .arg(&["len", "bytes", "active_ttl_s", "retention_s"])
        .query_async(conn)
        .await?;
    let [Some(len), Some(bytes), Some(active), Some(retention)] = fields[..] else {
        return Ok(None);
    };
    let (Ok(max_len), Ok(max_bytes)) = (usize::try_from(len), usize::try_from(bytes)) else {
        return Ok(None);
    };
    let announced = HistoryConfig {
        max_len,
        max_bytes,
        memory_budget: own.memory_budget,
        project_quota: own.project_quota,
        active_ttl: Duration::from_secs(active),
        retention: Duration::from_secs(retention),
    };
    match announced.check() {
        Ok(()) => Ok(Some(announced)),
        Err(err) => {
            tracing::warn!(error = %err, "the announced history policy is ignored");
            Ok(None)
        }
    }
}

/// A publisher's view of the policy: the announced one, read at most every
/// [`ANNOUNCE_EVERY`], else its own.
pub struct Follower {
    own: HistoryConfig,
    last: Mutex<Option<(Instant, Option<HistoryConfig>)>>,
}

impl Follower {
    pub fn new(own: HistoryConfig) -> Self {
        Self {
            own,
            last: Mutex::new(None),
        }
    }

    /// The policy to publish with now.
    pub async fn current(&self, conn: &mut (impl ConnectionLike + Send)) -> HistoryConfig {
        let now = Instant::now();
        let cached = *self.last.lock();
        if let Some((at, policy)) = cached
            && now.duration_since(at) < ANNOUNCE_EVERY
        {
            return policy.unwrap_or(self.own);
        }
        let policy = match read(conn, &self.own).await {
            Ok(policy) => policy,
            // Redis unreachable: the publish itself will say so; keep what was known.
            Err(_) => cached.and_then(|(_, policy)| policy),
        };
        let before = self.last.lock().replace((now, policy));
        let changed = before.is_none_or(|(_, was)| was != policy);
        if let Some(policy) = policy
            && changed
            && policy != self.own
        {
            tracing::info!(
                history_len = policy.max_len,
                history_bytes = policy.max_bytes,
                retention_s = policy.retention.as_secs(),
                own_history_len = self.own.max_len,
                own_history_bytes = self.own.max_bytes,
                own_retention_s = self.own.retention.as_secs(),
                "publishing with the history policy the hubs announce; this process's own setting is ignored"
            );
        }
        policy.unwrap_or(self.own)
    }
}
