//! The vacancy scan behind the `project.vacated` webhook (one node, Sentinel): each hub
//! that sends it keeps a marker alive ([`layout::VACANCY_ON_KEY`]), and while it lives
//! every hub adds the projects its watchers watch to a set ([`layout::WATCHED_KEY`],
//! `presence.rs`). A few times per grace the scanning hubs read that set and look at
//! each project through `vacated.lua`: one with no live watcher over every hub (the
//! last left, or its hub died and its presence entry ran out) for the grace is told
//! once per vacancy, whichever hub looks first, and leaves the set until a watcher
//! comes back.
//!
//! The cost is one SSCAN page and one script call per watched project per scan, per
//! scanning hub; on the presence path, one call per presence write of a hub.

use std::time::Duration;

use super::connection::RedisConn;
use super::layout::{self, OUTBOX_KEY, VACANCY_ON_KEY, WATCHED_KEY};
use super::set_pages::SetPages;
use crate::broker::BrokerError;
use crate::wire::ProjectId;

/// Projects read per SSCAN page, and most looked at per scan (the rest wait).
const PAGE: usize = 500;
const MAX_PER_SCAN: usize = 10_000;
/// How long the marker outlives a scan: hubs stop adding to the set this long after
/// the last scanning hub stopped.
const MARKER_TTL: Duration = Duration::from_secs(600);

/// Scans the watched projects; returns how many vacancies this hub told the outbox.
pub async fn scan(conn: &RedisConn, grace: Duration) -> Result<usize, BrokerError> {
    let mut conn = conn.clone();
    let _: () = redis::cmd("SET")
        .arg(VACANCY_ON_KEY)
        .arg(1)
        .arg("PX")
        .arg(MARKER_TTL.as_millis() as u64)
        .query_async(&mut conn)
        .await?;
    let grace_ms = grace.as_millis().max(1) as u64;
    let mut pages = SetPages::new(WATCHED_KEY, PAGE, MAX_PER_SCAN);
    let mut told = 0;
    while let Some(projects) = pages.next(&mut conn).await? {
        told += look(&mut conn, projects, grace_ms).await?;
    }
    Ok(told)
}

/// Looks at each project of a page of the set; returns how many it told.
async fn look(
    conn: &mut RedisConn,
    projects: Vec<String>,
    grace_ms: u64,
) -> Result<usize, BrokerError> {
    let mut told = 0;
    for raw in projects {
        let Ok(project) = ProjectId::parse(&raw) else {
            let _: i64 = redis::cmd("SREM")
                .arg(WATCHED_KEY)
                .arg(&raw)
                .query_async(conn)
                .await?;
            continue;
        };
        let outcome: i64 = layout::VACATED
            .key(layout::watchers_key(&project))
            .key(layout::vacancy_key(&project))
            .key(layout::state_key(&project))
            .key(OUTBOX_KEY)
            .key(WATCHED_KEY)
            .arg(layout::channel(&project))
            .arg(project.as_str())
            .arg(grace_ms)
            .invoke_async(conn)
            .await?;
        told += usize::from(outcome == 1);
    }
    Ok(told)
}
