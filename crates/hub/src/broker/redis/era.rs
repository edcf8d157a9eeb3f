//! The node's era: which incarnation of the Redis server the projects' states were
//! written under, so that a restart that lost acknowledged writes cannot make ids repeat
//! (issue 23 §2).
//!
//! A Redis restarted from an older save (RDB save points, AOF `everysec` after a host
//! crash) holds each project as it was at the save: its sequence number is behind ids
//! already handed out, and new publishes would reuse them (a client resuming from one
//! would be told `recovered: true` and skip events). Redis cannot tell whether it lost
//! anything, but every start has a new `run_id` (`INFO server`), and every connection to
//! the new server is a new one. So the hubs keep `progress:era` = the `run_id` they last
//! found running: they stamp it whenever a connection of theirs may be to a new server
//! (whenever the subscriber connects; before the first publish, and before the next
//! publish after one failed or the subscriber's connection dropped, which it does the
//! moment the server goes). `publish.lua` reads the era (one `GET`) and starts a new
//! epoch for a state written under another, keeping the history and going on with the
//! sequence: a position is in the history only when the entry at its sequence number
//! carries exactly its id (`replay.lua`), so a resume from an id the restart lost gets
//! `recovered: false` and a snapshot, while one from an id it kept (a restart that lost
//! nothing; the last events before a shutdown, whose channel messages the hubs may not
//! have received) replays the events after it across the epochs, and a hub's gap fill
//! delivers them before the new epoch's.
//!
//! What is left (docs/RELIABILITY.md): a publish by a publisher that does not stamp
//! (the Python SDK) between the restart and the first hub's stamp still continues the
//! old epoch; and on a Redis Cluster, or behind Sentinel, the era is not kept.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::RedisError;
use redis::aio::ConnectionLike;

use super::layout::ERA_KEY;

/// Stamps the era with the running server's `run_id`; 1 when it changed (a new
/// incarnation), 0 when it already named it.
static STAMP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if not run_id then return redis.error_reply('ERR no run_id in INFO server') end
if redis.call('GET', KEYS[1]) == run_id then return 0 end
redis.call('SET', KEYS[1], run_id)
return 1
",
    )
});

/// Stamps the era now; true when the server is an incarnation the era did not name.
pub async fn stamp(conn: &mut (impl ConnectionLike + Send)) -> Result<bool, RedisError> {
    let changed: i64 = STAMP.key(ERA_KEY).invoke_async(conn).await?;
    if changed == 1 {
        tracing::warn!(
            "Redis runs a new incarnation (restarted, or another server): projects begin a new epoch with their next event"
        );
    }
    Ok(changed == 1)
}

/// Whether the command connection may have reached a new server since the era was last
/// stamped through it. Cheap to clone; clones share the flag.
#[derive(Debug, Clone)]
pub struct Era {
    unsure: Arc<AtomicBool>,
}

impl Default for Era {
    fn default() -> Self {
        // Nothing stamped yet: the first publish stamps.
        Self {
            unsure: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Era {
    /// The connection may reach a new server before the next publish: a command failed,
    /// or the subscriber's connection (to the same server) dropped.
    pub fn mark_unsure(&self) {
        self.unsure.store(true, Ordering::Release);
    }

    /// Stamps the era if the connection may be new since the last stamp.
    pub async fn ensure(&self, conn: &mut (impl ConnectionLike + Send)) -> Result<(), RedisError> {
        if self.unsure.swap(false, Ordering::AcqRel)
            && let Err(err) = stamp(conn).await
        {
            self.mark_unsure();
            return Err(err);
        }
        Ok(())
    }
}
