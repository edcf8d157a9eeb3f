//! The Redis data layout: every key, channel and script the hub and its workers use, in
//! one place (the habit of centrifuge's `broker_redis.go`). Anything that reads or
//! writes Redis names its keys through here; the tests do too.
//!
//! A project's keys share the hash tag `{<project>}`, so they live in one slot and the
//! scripts stay valid on a Redis Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `progress:{<p>}:history` | stream | the project's events, entries `0-<seq>`, field `frame` |
//! | `progress:{<p>}:state` | hash | epoch, seq, progress, last id, the current fence, the receipts of the last publishes without an idempotency key (`receipt`: the last one's; `receipt_0` … `receipt_9`: the last 10), and the fields the publisher patches (status, stage, ETA, ...: `contract/publish-inputs.json`) |
//! | `progress:{<p>}:fences` | set | every fence holder (job) the project has seen, so a stale one stays refused |
//! | `progress:{<p>}:units` | hash | the current holder's parallel units (a Celery group's tasks): unit → `<newest token>`, `<token> done` once counted done (`publish.lua`) |
//! | `progress:{<p>}:pub:<receipt>` | string | the id a keyed publish (a caller's idempotency key) got (10 min), so a retry never appends twice |
//! | `progress:{<p>}:watchers` | hash | hub instance → `<watchers>:<until ms>`: how many watch the project on each hub, an entry counting until its time (the presence TTL, refreshed by its live hub: `presence.lua`) |
//! | `progress:{<p>}:seen:<event id>` | string | a watcher was written this `complete` (kept for the retention) |
//! | `progress-hub:history` | hash | the hubs' history policy (len, bytes, TTLs) every publisher follows |
//! | `progress:era` | string | the run_id of the Redis incarnation the hubs last found (one node, Sentinel) |
//! | `progress:{<p>}:stalled:<event id>` | string | the project's run was told stalled (`job.stalled`) while this was its last event (as long as its state lives) |
//! | `progress-hub:webhooks:gone` | hash | webhook endpoint URL → when (ms) it answered 410: disabled for every hub until the field is removed |
//! | `progress-hub:running` | set | the channels of the runs under way, kept beside the outbox for the hubs' stall scan (one node, Sentinel) |
//! | `progress-hub:webhooks` | stream | the webhook outbox: a run's end (`channel`, then the state's fields) per entry, read by the group `webhooks` (one node, Sentinel) |
//! | `progress:{<p>}:vacancy` | string | when (ms) the project was first found with no watcher, or `told` once `project.vacated` went out (until a watcher comes back: `vacated.lua`) |
//! | `progress-hub:{vacancy}:watched` | set | project ids watched (or recently) on some hub, for the vacancy scan; written only while its marker lives |
//! | `progress-hub:{vacancy}:on` | string | a hub sends `project.vacated` (set by its scans, expiring): hubs add their watched projects to the set only then |
//! | `progress:jobs` | stream | the job queue, read by the consumer group `workers` |
//! | `{progress:jobs}:lock:<p>` | string | the id of the project's job while it exists (queued or running): one job per project |
//! | `{progress:jobs}:done:<job>` | string | what the job finished so far (JSON), until it is settled |
//! | `{progress:jobs}:clients` | hash | client → its jobs not yet settled (the per-client queue limit) |
//! | `progress:creations:{<client>}` | sorted set | project → when the client created it, within the active TTL (the per-client project quota, `quota.lua`) |
//! | `progress:{tag:<tag>}:projects` | sorted set | project → when (ms) its run was last given the tag, within the retention (the tag's index, `tag_index.rs`): one slot per tag, apart from its projects' |
//!
//! The job queue's keys are tagged `{progress:jobs}`, the slot of the stream itself, so
//! the queue's scripts take a job, keep its lock and record its progress in one atomic
//! step, on one node or a cluster.
//!
//! Channels: `progress:<p>` on one node (as the original Python publisher names it,
//! PUBLISH/SUBSCRIBE); `progress:{<p>}` on a cluster (sharded Pub/Sub in the project's
//! slot, SPUBLISH/SSUBSCRIBE). Each hub process's liveness probe (see
//! `subscriber/probe.rs`): `progress-hub:probe:<instance>` on one node,
//! `progress-hub:probe:{<instance>-<n>}` on a cluster (sharded, one per primary, `n`
//! chosen so that the tag hashes into a slot it serves); outside `progress:`, so never
//! taken for a project's channel.
//!
//! Scripts: `publish.lua` (the publish path, one atomic step; the Python SDK runs the
//! same file; its inputs are described by name in `contract/publish-inputs.json`),
//! `replay.lua` (state + history after a position, one atomic read), `quota.lua` (may
//! a client create one more project), `presence.lua` (a hub's number of a project's
//! watchers), `watchers.lua` (the sum over the hubs), `stall.lua` (`job.stalled`, once),
//! `vacancy_track.lua` and `vacated.lua` (`project.vacated`, once per vacancy).

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;

use crate::broker::Replay;
use crate::wire::{EventId, Frame, ProjectId, ProjectState, Tag};

/// Prefix of every key and channel.
const PREFIX: &str = "progress:";

/// The node's era: the `run_id` of the server incarnation the hubs last found it
/// running (see `era.rs`). A project's state written under another era may lack
/// acknowledged writes (a restart from an older save), so it begins a new epoch.
pub const ERA_KEY: &str = "progress:era";

/// The hubs' history policy (a hash: `len`, `bytes`, `active_ttl_s`, `retention_s`),
/// which every other publisher follows (see `history_policy.rs`). Outside `progress:`.
pub const HISTORY_POLICY_KEY: &str = "progress-hub:history";

/// The webhook outbox (a stream; see `outbox.rs`) and the consumer group the hubs read
/// it in. Outside `progress:`, so never taken for a project's channel or key.
pub const OUTBOX_KEY: &str = "progress-hub:webhooks";
pub const OUTBOX_GROUP: &str = "webhooks";

/// The webhook endpoints that answered 410 Gone (a hash: URL → when, ms): no hub sends
/// them anything more until an operator removes the field (`HDEL`), whatever restarts.
pub const WEBHOOKS_GONE_KEY: &str = "progress-hub:webhooks:gone";

/// The runs under way (a set of channels), kept by `publish.lua` beside the outbox: a run
/// goes in as it begins and out as it ends; the hubs' stall scan (`stall.rs`) reads it
/// and drops what it finds ended or gone.
pub const RUNNING_KEY: &str = "progress-hub:running";

/// Marks that the project's run was told stalled at its event `last` (the `job.stalled`
/// webhook goes out once per stall, whichever hub sees it first).
pub fn stall_told_key(project: &ProjectId, last: &str) -> String {
    format!("{PREFIX}{{{project}}}:stalled:{last}")
}

/// Tells a stalled run to the outbox once (see its header).
pub static STALL: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("stall.lua")));

/// The projects watched on some hub (a set of project ids), for the hubs' vacancy scan
/// (`vacancy.rs`), and the marker, kept alive by that scan, without which no hub adds
/// to it. One hash tag: `vacancy_track.lua` reads one and writes the other.
pub const WATCHED_KEY: &str = "progress-hub:{vacancy}:watched";
pub const VACANCY_ON_KEY: &str = "progress-hub:{vacancy}:on";

/// The project's vacancy: when it was first found with no watcher, or `told`.
pub fn vacancy_key(project: &ProjectId) -> String {
    format!("{PREFIX}{{{project}}}:vacancy")
}

/// Adds watched projects to [`WATCHED_KEY`] while the marker lives (see its header).
pub static VACANCY_TRACK: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("vacancy_track.lua")));

/// Tells a vacated project to the outbox once per vacancy (see its header).
pub static VACATED: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("vacated.lua")));

/// The job queue's stream, and the consumer group its workers read it in.
pub const JOB_STREAM: &str = "progress:jobs";
pub const JOB_GROUP: &str = "workers";

/// Writes the project's key `progress:{<p>}:<parts...>` into `out` (cleared first): the
/// keys the publish path names on every publish, without `format!`'s machinery (see
/// `publish_inputs.rs`, which reuses one buffer for all of them).
pub fn project_key_into(out: &mut String, project: &ProjectId, parts: &[&str]) {
    out.clear();
    out.push_str(PREFIX);
    out.push('{');
    out.push_str(project.as_str());
    out.push_str("}:");
    for part in parts {
        out.push_str(part);
    }
}

fn project_key(project: &ProjectId, parts: &[&str]) -> String {
    let mut key = String::with_capacity(PREFIX.len() + project.as_str().len() + 16);
    project_key_into(&mut key, project, parts);
    key
}

pub fn history_key(project: &ProjectId) -> String {
    project_key(project, &["history"])
}

pub fn state_key(project: &ProjectId) -> String {
    project_key(project, &["state"])
}

/// Every fence holder (job) the project has seen: a holder that is not the project's
/// current one is refused (see `publish.lua`).
pub fn fences_key(project: &ProjectId) -> String {
    project_key(project, &["fences"])
}

/// The current fence holder's parallel units: unit -> its newest token, marked done
/// once counted (see `publish.lua`).
pub fn units_key(project: &ProjectId) -> String {
    project_key(project, &["units"])
}

/// Where a publish's id is remembered under its receipt.
pub fn receipt_key(project: &ProjectId, receipt: &str) -> String {
    project_key(project, &["pub:", receipt])
}

/// How many watch the project, per hub (see `presence.lua`).
pub fn watchers_key(project: &ProjectId) -> String {
    format!("{PREFIX}{{{project}}}:watchers")
}

/// Marks that a watcher was written the project's `complete` with this id.
pub fn complete_seen_key(project: &ProjectId, complete: &EventId) -> String {
    format!("{PREFIX}{{{project}}}:seen:{complete}")
}

/// A hub's number of a project's watchers, written (see its header).
pub static PRESENCE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("presence.lua")));

/// The number of a project's watchers over every hub, read.
pub static WATCHERS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("watchers.lua")));

/// A pattern matching every key of the project (for `SCAN MATCH`, never in the hot path).
pub fn project_keys(project: &ProjectId) -> String {
    format!("{PREFIX}{{{project}}}:*")
}

/// Holds the id of the project's job from submit to settle: one job per project. In the
/// job stream's slot (its hash tag is the stream's name), not the project's.
pub fn job_lock_key(project: &ProjectId) -> String {
    format!("{{{JOB_STREAM}}}:lock:{project}")
}

/// Client → how many of its jobs are not yet settled, in the job stream's slot.
pub const JOB_CLIENTS: &str = "{progress:jobs}:clients";

/// The projects `client` (see `http::access::client_key`: an address or a token digest,
/// never with braces) created within the active TTL, tagged by the client: one slot per
/// client, whatever the projects' slots.
pub fn creations_key(client: &str) -> String {
    format!("{PREFIX}creations:{{{client}}}")
}

/// The per-client project quota's check-and-record (see its header).
pub static QUOTA: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("quota.lua")));

/// Job id → when a cancel of it was asked (unix ms), in the job stream's slot: set by
/// `cancel.lua` while the job exists, read by its worker between provider calls,
/// removed when the job is settled.
pub const JOB_CANCELLED: &str = "{progress:jobs}:cancelled";

/// What the project's last job finished when it failed or was cancelled (a retry starts
/// there), in the job stream's slot; replaced by the next job's end, expiring after
/// `RETRY_POINT_TTL`.
pub fn job_retry_point_key(project: &ProjectId) -> String {
    format!("{{{JOB_STREAM}}}:retry:{project}")
}

/// What the job finished so far, in the job stream's slot; deleted when it is settled.
pub fn job_checkpoint_key(job_id: &str) -> String {
    format!("{{{JOB_STREAM}}}:done:{job_id}")
}

/// The tag's index: the projects whose run was given `tag`, scored by when (ms since
/// the epoch). Tagged by the tag (which never holds braces), so a tag is one slot,
/// whatever its projects' slots; a project id never holds ':', so no project's keys match.
pub fn tag_index_key(tag: &Tag) -> String {
    format!("{PREFIX}{{tag:{tag}}}:projects")
}

/// The project's channel on one node: `progress:<p>`.
pub fn channel(project: &ProjectId) -> String {
    format!("{PREFIX}{project}")
}

/// A pattern matching every project channel on one node (for `PUBSUB CHANNELS`).
pub fn all_channels() -> String {
    format!("{PREFIX}*")
}

/// The project whose channel this is, if it is one of ours.
pub fn project_of_channel(channel: &str) -> Option<ProjectId> {
    channel
        .strip_prefix(PREFIX)
        .and_then(|raw| ProjectId::parse(raw).ok())
}

/// The project's sharded channel on a cluster: `progress:{<p>}`, hash-tagged like its
/// keys, so SSUBSCRIBE/SPUBLISH reach only the shard that owns the slot.
pub fn shard_channel(project: &ProjectId) -> String {
    format!("{PREFIX}{{{project}}}")
}

/// The project whose sharded channel this is, if it is one of ours.
pub fn project_of_shard_channel(channel: &str) -> Option<ProjectId> {
    channel
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('{'))
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|raw| ProjectId::parse(raw).ok())
}

/// Prefix of the hubs' probe channels.
const PROBE_PREFIX: &str = "progress-hub:probe:";

/// Hub process `instance`'s probe channel on one node.
pub fn probe_channel(instance: &str) -> String {
    format!("{PROBE_PREFIX}{instance}")
}

/// Hub process `instance`'s sharded probe channel with hash tag `{<instance>-<n>}`.
fn probe_shard_channel(instance: &str, n: u32) -> String {
    format!("{PROBE_PREFIX}{{{instance}-{n}}}")
}

/// Hub process `instance`'s sharded probe channel in one of the slot `ranges`
/// (inclusive) of a primary: the first `n` whose tag hashes there; `None` if none does
/// among the first million (the ranges cover no slot).
pub fn probe_shard_channel_in(instance: &str, ranges: &[(u16, u16)]) -> Option<String> {
    (0..1_000_000u32).find_map(|n| {
        let slot = key_slot(format!("{instance}-{n}").as_bytes());
        ranges
            .iter()
            .any(|(start, end)| (*start..=*end).contains(&slot))
            .then(|| probe_shard_channel(instance, n))
    })
}

/// The cluster slot of a hash tag's content (CRC16-XMODEM modulo 16384, as Redis
/// computes it; its source, `cluster.c`, names the check value 0x31C3 for "123456789").
pub fn key_slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in tag {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The publish path's script (its inputs: `contract/publish-inputs.json`, built into a
/// call by `publish_inputs.rs`).
pub static PUBLISH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("publish.lua")));

/// The state and history read.
static REPLAY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("replay.lua")));

/// Most entries, and most frame bytes, one `replay.lua` page carries: a read of a long
/// history is many short steps, never one that holds Redis for everyone.
const REPLAY_PAGE_COUNT: usize = 100;
const REPLAY_PAGE_BYTES: usize = 256 * 1024;

/// The project's state and the retained history after `after`, when the history holds
/// `after` (the entry at its sequence number carries exactly that id: `replay.lua`):
/// the state and the first page in one atomic read (a script: one command, whose MOVED
/// a cluster connection follows), then further pages up to the event the state named
/// as the newest (later ones reach the reader live), each checked the same way from the
/// last event of the page before. A position the history does not hold (lost, made
/// up, trimmed) costs Redis a hash field and one entry's read, and gets no events. The
/// events read may be of several epochs: sequence numbers go on across an epoch change
/// (`publish.lua`). Shared by sessions (resume) and the subscriber (gap fill).
pub async fn read_replay(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
    after: Option<&EventId>,
) -> Result<Replay, redis::RedisError> {
    let Some(after) = after else {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(state_key(project))
            .query_async(conn)
            .await?;
        return Ok(Replay {
            state: ProjectState::from_hash(&hash),
            after: Vec::new(),
        });
    };
    let (hash, mut page) = replay_page(conn, project, after, true).await?;
    let state = ProjectState::from_hash(&hash);
    let mut frames: Vec<Frame> = Vec::new();
    let Some((_, last)) = &state else {
        return Ok(Replay {
            state,
            after: frames,
        });
    };
    // Each page starts after the last entry of the one before, checked as the first
    // was; an empty page (the history changed meanwhile) ends it.
    while let Some(read_to) = page.ids.last().and_then(|e| entry_seq(&e.id)) {
        for entry in page.ids {
            if entry_seq(&entry.id).is_some_and(|seq| seq > last.seq()) {
                break;
            }
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
        if read_to >= last.seq() {
            break;
        }
        // The next page is read after the last event of this one, by its own id.
        let Some(next) = frames
            .last()
            .and_then(Frame::id)
            .filter(|id| id.seq() == read_to)
            .cloned()
        else {
            break;
        };
        (_, page) = replay_page(conn, project, &next, false).await?;
    }
    Ok(Replay {
        state,
        after: frames,
    })
}

/// One `replay.lua` page after `after` (empty if the history does not hold `after`).
async fn replay_page(
    conn: &mut (impl ConnectionLike + Send),
    project: &ProjectId,
    after: &EventId,
    with_state: bool,
) -> Result<(HashMap<String, String>, StreamRangeReply), redis::RedisError> {
    REPLAY
        .key(state_key(project))
        .key(history_key(project))
        .arg(after.epoch())
        .arg(after.seq())
        .arg(REPLAY_PAGE_COUNT)
        .arg(REPLAY_PAGE_BYTES)
        .arg(if with_state { "1" } else { "0" })
        .invoke_async(conn)
        .await
}

/// The sequence number of a history entry's id, `0-<seq>`.
fn entry_seq(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip() {
        let p = ProjectId::parse("42").unwrap();
        assert_eq!(channel(&p), "progress:42");
        assert_eq!(project_of_channel("progress:42"), Some(p.clone()));
        assert_eq!(project_of_channel("other:42"), None);
        assert_eq!(project_of_channel("progress:../x"), None);
        assert_eq!(shard_channel(&p), "progress:{42}");
        assert_eq!(project_of_shard_channel("progress:{42}"), Some(p));
        assert_eq!(project_of_shard_channel("progress:42"), None);
    }

    #[test]
    fn slots_are_computed_as_redis_does() {
        // CRC16-XMODEM's check value, and slots `CLUSTER KEYSLOT` answers (Redis 7.0).
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
    }

    #[test]
    fn a_probe_channel_is_found_in_any_primarys_slots() {
        for ranges in [vec![(0, 5460)], vec![(5461, 10922)], vec![(16383, 16383)]] {
            let channel = probe_shard_channel_in("abc", &ranges).expect("a channel");
            let tag = channel
                .strip_prefix("progress-hub:probe:{")
                .and_then(|t| t.strip_suffix('}'))
                .expect("a hash tag");
            let slot = key_slot(tag.as_bytes());
            assert!(ranges.iter().any(|(s, e)| (*s..=*e).contains(&slot)));
        }
        assert_eq!(probe_shard_channel_in("abc", &[]), None);
    }

    #[test]
    fn probe_channels_are_never_a_projects() {
        assert_eq!(probe_channel("abc"), "progress-hub:probe:abc");
        assert_eq!(probe_shard_channel("abc", 7), "progress-hub:probe:{abc-7}");
        for channel in [probe_channel("abc"), probe_shard_channel("abc", 7)] {
            assert_eq!(project_of_channel(&channel), None);
            assert_eq!(project_of_shard_channel(&channel), None);
        }
    }

    #[test]
    fn a_projects_keys_share_its_hash_tag() {
        let p = ProjectId::parse("42").unwrap();
        for key in [
            history_key(&p),
            state_key(&p),
            receipt_key(&p, "r"),
            fences_key(&p),
            units_key(&p),
            watchers_key(&p),
            complete_seen_key(&p, &EventId::new("e", 1)),
            shard_channel(&p),
        ] {
            assert!(key.starts_with("progress:{42}"), "{key}");
        }
    }

    #[test]
    fn the_publish_keys_are_spelled_as_documented() {
        let p = ProjectId::parse("42").unwrap();
        assert_eq!(history_key(&p), "progress:{42}:history");
        assert_eq!(state_key(&p), "progress:{42}:state");
        assert_eq!(fences_key(&p), "progress:{42}:fences");
        assert_eq!(units_key(&p), "progress:{42}:units");
        assert_eq!(receipt_key(&p, "r-1"), "progress:{42}:pub:r-1");
        // The buffer is cleared, not appended to.
        let mut reused = String::from("left over");
        project_key_into(&mut reused, &p, &["state"]);
        assert_eq!(reused, state_key(&p));
    }

    #[test]
    fn the_job_queues_keys_share_the_streams_slot() {
        let p = ProjectId::parse("42").unwrap();
        // A key without braces hashes whole; one with a tag hashes the tag only.
        assert!(!JOB_STREAM.contains('{'));
        for key in [
            job_lock_key(&p),
            job_checkpoint_key("job-1"),
            JOB_CANCELLED.to_string(),
            job_retry_point_key(&p),
            JOB_CLIENTS.to_string(),
        ] {
            assert!(key.starts_with(&format!("{{{JOB_STREAM}}}:")), "{key}");
        }
    }
}
