//! Presence on Redis: how many watch each project, summed over every hub.
//!
//! Each hub keeps one entry per watched project in the project's `watchers` hash (its
//! instance → its number of watchers, and until when that counts: `presence.lua`). The
//! hub writes an entry as soon as the number changes (the changes that came meanwhile
//! are written together, one number per project; a project it never wrote an entry for
//! costs no removal) and rewrites them all every third of the TTL, so a hub that dies
//! stops counting within the TTL and nothing has to notice its death. Delivering frames
//! writes nothing.
//!
//! While a hub sends `project.vacated` (its scan keeps a marker alive), each write
//! also adds the projects it counts watchers of to the set that scan reads
//! (`vacancy_track.lua`, one call per write), and a hub's new entry for a project ends
//! the project's vacancy (`presence.lua`).
//!
//! Which `complete` frames a watcher was written is one key per complete (`SET ... EX`
//! the retention), written by the session once its transport took the frame.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use redis::aio::ConnectionLike;
use tokio_util::sync::CancellationToken;

use super::layout::{
    PRESENCE, VACANCY_ON_KEY, VACANCY_TRACK, WATCHED_KEY, WATCHERS, complete_seen_key, vacancy_key,
    watchers_key,
};
use crate::broker::Deliveries;
use crate::wire::{EventId, ProjectId};

/// Presence writes in flight at once (a refresh of many projects).
const CONCURRENT_WRITES: usize = 32;

/// This hub's share of presence: its instance name, and how long its entries count.
pub struct Presence {
    instance: String,
    ttl: Duration,
}

impl Presence {
    /// Presence for a new hub process: a random instance name, so a restarted hub never
    /// adds to (or removes) the entries of the process it replaces.
    pub fn new(ttl: Duration) -> Self {
        let instance = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        Self { instance, ttl }
    }

    /// Keeps this hub's entries true until `shutdown`: writes the projects whose number
    /// of watchers changed as they change, rewrites every entry every third of the TTL,
    /// and removes them all at shutdown. A failed write is retried by the next refresh
    /// (an entry that should have gone expires on its own).
    pub async fn run<C: ConnectionLike + Clone + Send + 'static>(
        self,
        conn: C,
        counts: Arc<dyn Deliveries>,
        shutdown: CancellationToken,
    ) {
        counts.track_presence();
        // Every project this hub has an entry for (so shutdown can remove them).
        let mut written: HashSet<ProjectId> = HashSet::new();
        let mut refresh = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(10)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let counts = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = counts.presence_changed().notified() => counts.presence_changes(),
                _ = refresh.tick() => {
                    // The changes are in the refresh; taking them spares a second write.
                    let changed = counts.presence_changes();
                    let mut all = counts.presence();
                    all.extend(changed.into_iter().filter(|(_, n)| *n == 0));
                    all
                }
            };
            self.write(&conn, counts, &mut written).await;
        }
        let gone: Vec<(ProjectId, usize)> = written.iter().map(|p| (p.clone(), 0)).collect();
        self.write(&conn, gone, &mut written).await;
    }

    /// Writes this hub's number of watchers of each project.
    async fn write<C: ConnectionLike + Clone + Send + 'static>(
        &self,
        conn: &C,
        counts: Vec<(ProjectId, usize)>,
        written: &mut HashSet<ProjectId>,
    ) {
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // None here, and no entry written: nothing to remove.
        let counts = counts
            .into_iter()
            .filter(|(project, watchers)| *watchers > 0 || written.contains(project))
            .collect::<Vec<_>>();
        // After the entries: a scan that tells a vacancy between the two finds the
        // project watched again at its next look (see `vacancy_track.lua`).
        let watched: Vec<String> = counts
            .iter()
            .filter(|(_, watchers)| *watchers > 0)
            .map(|(project, _)| project.to_string())
            .collect();
        let writes = counts.into_iter().map(|(project, watchers)| {
            write_one(
                conn.clone(),
                self.instance.clone(),
                project,
                watchers,
                ttl_ms,
            )
        });
        let mut writes = futures_util::stream::iter(writes).buffer_unordered(CONCURRENT_WRITES);
        while let Some((project, watchers, result)) = writes.next().await {
            match result {
                Ok(()) if watchers == 0 => {
                    written.remove(&project);
                }
                Ok(()) => {
                    written.insert(project);
                }
                Err(err) => {
                    tracing::debug!(project_id = %project, error = %err, "presence not written; the next refresh tries again");
                }
            }
        }
        track_vacancies(conn, &watched).await;
    }
}

/// Adds the projects watched here to the vacancy scan's set, if a hub scans (see
/// `vacancy_track.lua`); a failure is retried by the next write.
async fn track_vacancies<C: ConnectionLike + Clone + Send>(conn: &C, watched: &[String]) {
    if watched.is_empty() {
        return;
    }
    let added: Result<i64, _> = VACANCY_TRACK
        .key(VACANCY_ON_KEY)
        .key(WATCHED_KEY)
        .arg(watched)
        .invoke_async(&mut conn.clone())
        .await;
    if let Err(err) = added {
        tracing::debug!(error = %err, "watched projects not tracked for vacancies; the next write tries again");
    }
}

/// Writes one hub's number of watchers of one project (`presence.lua`).
async fn write_one<C: ConnectionLike + Send>(
    mut conn: C,
    instance: String,
    project: ProjectId,
    watchers: usize,
    ttl_ms: u64,
) -> (ProjectId, usize, Result<(), redis::RedisError>) {
    let result: Result<i64, _> = PRESENCE
        .key(watchers_key(&project))
        .key(vacancy_key(&project))
        .arg(instance)
        .arg(watchers)
        .arg(ttl_ms)
        .invoke_async(&mut conn)
        .await;
    (project, watchers, result.map(|_| ()))
}

/// How many watch the project now, over every hub.
pub async fn watchers(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
) -> Result<u64, redis::RedisError> {
    WATCHERS.key(watchers_key(project)).invoke_async(conn).await
}

/// Records that a watcher was written the project's `complete` `id`, for `retention`.
pub async fn record_complete_seen(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
    id: &EventId,
    retention: Duration,
) -> Result<(), redis::RedisError> {
    redis::cmd("SET")
        .arg(complete_seen_key(project, id))
        .arg(1)
        .arg("EX")
        .arg(retention.as_secs().max(1))
        .query_async(conn)
        .await
}

/// Whether a watcher was written the project's `complete` `id`.
pub async fn complete_seen(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
    id: &EventId,
) -> Result<bool, redis::RedisError> {
    redis::cmd("EXISTS")
        .arg(complete_seen_key(project, id))
        .query_async(conn)
        .await
}
