//! The per-client project quota on Redis (see `broker/quota.rs`): kept in Redis, so
//! that it holds across every hub, by `quota.lua` on the client's own key.

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::layout::{QUOTA, creations_key, state_key};
use crate::broker::quota::{Admission, ProjectQuota, QuotaLimit};
use crate::wire::ProjectId;

/// May `client` publish to `project`? One `EXISTS` when it has state; else one script
/// call on the client's key (two slots on a cluster, so two steps: two hubs creating
/// the same project at once both record it, which the set counts once).
pub async fn admit(
    conn: &mut (impl ConnectionLike + Send),
    quota: &ProjectQuota,
    window: Duration,
    project: &ProjectId,
    client: &str,
) -> Result<Admission, redis::RedisError> {
    if quota.max_per_client == 0 && quota.per_minute == 0 {
        return Ok(Admission::Admitted);
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(state_key(project))
        .query_async(conn)
        .await?;
    if exists {
        return Ok(Admission::Admitted);
    }
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let (limit, wait_ms): (i64, i64) = QUOTA
        .key(creations_key(client))
        .arg(project.as_str())
        .arg(window_ms)
        .arg(quota.max_per_client)
        .arg(quota.per_minute)
        .invoke_async(conn)
        .await?;
    let retry_after = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
    Ok(match limit {
        1 => Admission::Refused {
            limit: QuotaLimit::Count,
            retry_after,
        },
        2 => Admission::Refused {
            limit: QuotaLimit::Rate,
            retry_after,
        },
        _ => Admission::Admitted,
    })
}
