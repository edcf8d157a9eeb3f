//! The stall scan behind the `job.stalled` webhook (one node, Sentinel): each hub with
//! webhooks reads, a few times per bound, the runs under way (`layout::RUNNING_KEY`,
//! kept by `publish.lua` as runs begin and end, so the publishes between cost nothing)
//! and the few fields of each one's state that say whether it is silent; a run silent
//! for longer than the bound goes into the outbox through `stall.lua`, which appends it
//! once per stall whichever hub sees it first (a marker per project and last event,
//! holding the reason told: a `silent` stall whose worker then turns out lost is told
//! again, `worker_lost`). A run whose worker the hub's job queue found lost is stalled
//! at once, silent for the bound or not. Runs found ended, or whose state is gone (it expired), leave the set.
//!
//! The cost is one SSCAN page and one HMGET per run under way per scan, per hub; none
//! on the publish path.

use std::collections::{HashMap, HashSet};

use redis::Value;

use super::connection::RedisConn;
use super::layout::{self, OUTBOX_KEY, RUNNING_KEY};
use super::set_pages::SetPages;
use crate::broker::BrokerError;
use crate::wire::stall::{self, Bounds};
use crate::wire::{ProjectId, ProjectState};

/// Runs read per SSCAN page, and most read per scan (the rest wait for the next one).
const PAGE: usize = 500;
const MAX_PER_SCAN: usize = 10_000;

/// Scans the runs under way; returns how many stalls this hub appended to the outbox.
pub async fn scan(
    conn: &RedisConn,
    bounds: &Bounds,
    lost: &HashSet<ProjectId>,
) -> Result<usize, BrokerError> {
    let mut conn = conn.clone();
    let mut pages = SetPages::new(RUNNING_KEY, PAGE, MAX_PER_SCAN);
    let mut told = 0;
    while let Some(channels) = pages.next(&mut conn).await? {
        told += page(&mut conn, &channels, bounds, lost).await?;
    }
    Ok(told)
}

const FIELDS: [&str; 4] = ["status", "updated_at", "last_event_id", "run_ended"];

async fn page(
    conn: &mut RedisConn,
    channels: &[String],
    bounds: &Bounds,
    lost: &HashSet<ProjectId>,
) -> Result<usize, BrokerError> {
    let runs: Vec<(String, ProjectId)> = channels
        .iter()
        .filter_map(|c| Some((c.clone(), layout::project_of_channel(c)?)))
        .collect();
    if runs.is_empty() {
        return Ok(0);
    }
    let mut read = redis::pipe();
    for (_, project) in &runs {
        read.cmd("HMGET")
            .arg(layout::state_key(project))
            .arg(&FIELDS[..]);
    }
    let states: Vec<Vec<Option<String>>> = read.query_async(conn).await?;
    let now = chrono::Utc::now();
    let mut gone = Vec::new();
    let mut told = 0;
    for ((channel, project), fields) in runs.iter().zip(states) {
        let field = |n: usize| fields.get(n).cloned().flatten().filter(|v| !v.is_empty());
        let (Some(last), None) = (field(2), field(3)) else {
            // Ended, or the state is gone: no longer under way.
            gone.push(channel.clone());
            continue;
        };
        let state = ProjectState {
            status: field(0),
            updated_at: field(1),
            ..ProjectState::empty()
        };
        let Some((reason, _)) = stall::stall(&state, bounds, lost.contains(project), now) else {
            continue;
        };
        let appended: i64 = layout::STALL
            .key(layout::state_key(project))
            .key(OUTBOX_KEY)
            .key(layout::stall_told_key(project, &last))
            .arg(&last)
            .arg(channel)
            .arg(reason.as_str())
            .invoke_async(conn)
            .await?;
        told += appended as usize;
    }
    if !gone.is_empty() {
        let _: Value = redis::cmd("SREM")
            .arg(RUNNING_KEY)
            .arg(&gone)
            .query_async(conn)
            .await?;
    }
    Ok(told)
}

/// The fields of an outbox entry that say which webhook it is, when it is not a run's
/// end: `webhook_type` and `stall_reason`, as `stall.lua` writes them (taken out of
/// `state`).
pub fn take_kind(state: &mut HashMap<String, String>) -> (Option<String>, Option<String>) {
    (state.remove("webhook_type"), state.remove("stall_reason"))
}
