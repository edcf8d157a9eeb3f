//! Each tag's index on Redis: the sorted set `progress:{tag:<tag>}:projects`, project →
//! when (ms) its run was last given the tag.
//!
//! A tag's projects live in many slots, the index in the tag's own: on a Redis Cluster
//! no script can write both. So the index is written after the atomic publish
//! (`publish.lua`), one `ZADD` (and `EXPIRE`) per tag, each atomic on its own, the
//! publish and the index together not: a publisher that dies between them leaves a
//! tagged state its index does not list until its next tagged publish. The state is the
//! truth: a reader keeps an entry only while the project's state still carries the tag
//! and removes the others ([`forget`]).
//!
//! The reserved tag `*` ([`Tag::all`]) has the index of every project's runs,
//! `progress:{tag:*}:projects` (its own slot, as a tag's), project → when (ms) its
//! history or its newest run began (`publish.lua` tells the publisher). It would
//! otherwise grow with every project ever published to, so each write also drops its
//! entries older than the index is kept ([`add`]'s `keep`): a run listed under `*`
//! stays listed for that long after it began (two retentions, or two active TTLs if
//! longer).

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::layout::tag_index_key;
use crate::broker::TagEntry;
use crate::wire::{ProjectId, Tag};

/// Adds `project` to each tag's index at `at_ms`; the index lives `keep` after its
/// newest entry (`*`'s also drops its entries older than `keep`).
pub async fn add(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
    tags: &[Tag],
    at_ms: u64,
    keep: Duration,
) -> Result<(), redis::RedisError> {
    for tag in tags {
        let key = tag_index_key(tag);
        // One key, one slot: a pipeline of two (three) commands, on one node or a cluster.
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(at_ms)
            .arg(project.as_str())
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(keep.as_secs().max(1))
            .ignore();
        if tag.is_all() {
            let oldest = at_ms.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
        }
        let _: () = pipe.query_async(conn).await?;
    }
    Ok(())
}

/// The tag's entries given at or after `since_ms`, newest first (ties: by project id,
/// descending), after `after` (the last entry of the page before), at most `count`.
pub async fn page(
    conn: &mut (impl ConnectionLike + Send),
    tag: &Tag,
    since_ms: u64,
    after: Option<&TagEntry>,
    count: usize,
) -> Result<Vec<TagEntry>, redis::RedisError> {
    let key = tag_index_key(tag);
    let max = after.map_or_else(|| "+inf".to_string(), |a| a.at_ms.to_string());
    let mut out = Vec::with_capacity(count);
    let mut offset = 0;
    let batch = count.max(1);
    loop {
        let rows: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&key)
            .arg(&max)
            .arg(since_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(batch)
            .query_async(conn)
            .await?;
        let fetched = rows.len();
        offset += fetched;
        for (member, score) in rows {
            // Members are project ids this hub wrote; anything else is skipped.
            let Ok(project) = ProjectId::parse(&member) else {
                continue;
            };
            let entry = TagEntry {
                project,
                at_ms: score as u64,
            };
            if after.is_none_or(|a| entry.comes_after(a)) {
                out.push(entry);
                if out.len() == count {
                    return Ok(out);
                }
            }
        }
        if fetched < batch {
            return Ok(out);
        }
    }
}

/// Removes `projects` from the tag's index (their state no longer carries it).
pub async fn forget(
    conn: &mut (impl ConnectionLike + Send),
    tag: &Tag,
    projects: &[ProjectId],
) -> Result<(), redis::RedisError> {
    if projects.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("ZREM");
    cmd.arg(tag_index_key(tag));
    for project in projects {
        cmd.arg(project.as_str());
    }
    cmd.query_async(conn).await
}
