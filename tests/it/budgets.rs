//! What bounds the brokers' memory and a replay's cost: a project's history in bytes
//! (both brokers), the in-process broker's total with eviction of idle projects (charged
//! to the client that created each, so one client's flood evicts its own), the
//! per-client quota of new projects (both brokers; across hubs on Redis), and the Redis
//! replay read (its position checked before any history is read, in pages).

use std::sync::Arc;
use std::time::Duration;

use progress_hub::broker::HistoryConfig;
use progress_hub::broker::redis::RedisBroker;
use progress_hub::locale::Locale;
use progress_hub::publish::Publisher;
use progress_hub::wire::event::LogLevel;
use serde_json::{Value, json};

use crate::support::{Backend, TestHub, WsClient, cli, eventually, layout, log_event, project};

/// A log event whose frame weighs a little over 8 KB.
fn heavy(i: usize) -> serde_json::Value {
    log_event(&format!("{i:04}{}", "x".repeat(8000)))
}

// A project's history keeps no more bytes than `max_bytes`, however few events that is:
// 20 events of ~8 KB under a 40,000-byte budget keep the newest 4.
async fn history_is_bounded_by_bytes(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.history.max_bytes = 40_000).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(hub.publish("heavy", heavy(i)).await);
    }
    // After the 16th: the 4 newest, all retained.
    let (mut client, connected) = WsClient::resume(&hub.ws_url("heavy"), &ids[15]).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    for id in &ids[16..] {
        assert_eq!(client.next_event().await["id"], id.as_str());
    }
    // After the 15th: the 16th was trimmed for its bytes.
    let (mut client, connected) = WsClient::resume(&hub.ws_url("heavy"), &ids[14]).await;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
    assert_eq!(client.next_event().await["event"], "snapshot");
}

// Issue 22 §2: while every frame of a history weighs at most max_bytes / max_len (2,000
// bytes here: 10 events, 20,000 bytes), `publish.lua` trims it by the count without reading
// what goes; a heavier frame brings back the exact bytes, and once it has gone the count
// alone again. The history is trimmed exactly as if every frame had been weighed, on both
// brokers: light events of ~300 bytes, heavy ones of ~8 KB.
async fn history_bytes_stay_exact_across_heavy_frames(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.history.max_len = 10;
        c.history.max_bytes = 20_000;
    })
    .await;
    let recovered = async |id: &String| {
        let (_, connected) = WsClient::resume(&hub.ws_url("mixed"), id).await;
        connected["data"]["recovered"] == true
    };
    let light = |i: usize| log_event(&format!("light {i}"));
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(hub.publish("mixed", light(i)).await);
    }
    // The count: the newest 10 (ids 2..=11).
    assert!(recovered(&ids[1]).await && !recovered(&ids[0]).await);
    // 9 light and 2 heavy weigh under 20,000 bytes, a third heavy does not: the light
    // ones and the first heavy go, for their bytes.
    for i in 0..3 {
        ids.push(hub.publish("mixed", heavy(i)).await);
    }
    assert!(recovered(&ids[12]).await && !recovered(&ids[11]).await);
    // 10 light: the heavy ones go for the count, then 2 heavy again among 8 light fit, and
    // a third trims back to the last 2.
    for i in 12..22 {
        ids.push(hub.publish("mixed", light(i)).await);
    }
    assert!(recovered(&ids[14]).await && !recovered(&ids[13]).await);
    for i in 3..6 {
        ids.push(hub.publish("mixed", heavy(i)).await);
    }
    assert!(recovered(&ids[25]).await && !recovered(&ids[24]).await);
}

// In memory, beyond the total budget the least recently used project nobody watches is
// forgotten first; a watched one keeps its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_projects_are_forgotten_beyond_the_memory_budget() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.history.max_bytes = 40_000;
        c.history.memory_budget = 100_000;
    })
    .await;
    let idle = hub.publish("idle", log_event("idle")).await;
    let mut watcher = WsClient::connected(&hub.ws_url("watched")).await;
    let watched = hub.publish("watched", log_event("watched")).await;
    assert_eq!(watcher.next_event().await["id"], watched.as_str());
    // 4 projects of ~32 KB each: well over 100,000 bytes in all.
    for p in 0..4 {
        for i in 0..4 {
            hub.publish(&format!("filler-{p}"), heavy(i)).await;
        }
    }
    let (_, connected) = WsClient::resume(&hub.ws_url("watched"), &watched).await;
    assert_eq!(connected["data"]["recovered"], true, "watched: {connected}");
    let (mut client, connected) = WsClient::resume(&hub.ws_url("idle"), &idle).await;
    assert_eq!(connected["data"]["recovered"], false, "idle: {connected}");
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert!(snapshot["data"]["last_event_id"].is_null(), "{snapshot}");
}

/// `cmdstat_<command>` calls since the last `CONFIG RESETSTAT` (0 if never called).
async fn calls(hub: &TestHub, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut hub.redis().connection().await)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

async fn reset_stats(hub: &TestHub) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut hub.redis().connection().await)
        .await
        .unwrap();
}

// A resume from a made-up epoch costs Redis no history read, only the check of the one
// entry its position names (the attack: `<any epoch>:0` made the replay script read the
// whole history before Rust compared epochs; read whole, these 50 events are 4 steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_made_up_epoch_reads_no_history() {
    let hub = TestHub::start(Backend::Redis).await;
    for i in 0..50 {
        hub.publish("big", log_event(&format!("{i}"))).await;
    }
    reset_stats(&hub).await;
    let (mut client, connected) = WsClient::resume(&hub.ws_url("big"), "madeup:0").await;
    assert_eq!(connected["data"]["recovered"], false);
    assert_eq!(client.next_event().await["event"], "snapshot");
    assert_eq!(
        calls(&hub, "xrange").await,
        1,
        "no history read, one entry checked"
    );
}

// A project's first watcher costs Redis one state read, not two: the subscriber reads
// the state just after it subscribes (the topic's origin), and that read is the
// snapshot of every session that joined before it. A later watcher reads its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_watcher_is_served_by_the_subscribers_read() {
    let hub = TestHub::start(Backend::Redis).await;
    let stage = json!({"event": "stage_change", "data": {"previous_stage": null, "current_stage": "RENDERING", "progress": 40}});
    let last = hub.publish("first", stage).await;
    reset_stats(&hub).await;
    let mut first = WsClient::connected(&hub.ws_url("first")).await;
    let snapshot = first.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["data"]["progress"], 40);
    assert_eq!(snapshot["data"]["last_event_id"], last.as_str());
    assert_eq!(
        calls(&hub, "hgetall").await,
        1,
        "one read for the first watcher"
    );
    let live = hub.publish("first", log_event("live")).await;
    assert_eq!(first.next_event().await["id"], live.as_str());

    let mut later = WsClient::connected(&hub.ws_url("first")).await;
    let snapshot = later.next_event().await;
    assert_eq!(snapshot["data"]["progress"], 40, "{snapshot}");
    assert_eq!(snapshot["data"]["last_event_id"], live.as_str());
    assert_eq!(
        calls(&hub, "hgetall").await,
        2,
        "a later watcher reads its own"
    );
}

// A herd of resumers of one project (a restarted hub's clients coming back) shares
// its history reads: while one read is in flight, the readers that ask wait for the
// next, which serves them all, each from its own position. Redis is held busy while
// they arrive, so all but the first ask during one read: two reads, not 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumers_of_a_project_share_one_history_read() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(hub.publish("herd", log_event(&format!("{i}"))).await);
    }
    // The project stays subscribed (a session's subscription is then confirmed at
    // once) and the replay script is loaded.
    let _watcher = WsClient::connected(&hub.ws_url("herd")).await;
    let _ = WsClient::resume(&hub.ws_url("herd"), &ids[19]).await;
    reset_stats(&hub).await;
    let mut busy = hub.redis().connection().await;
    let hold = tokio::spawn(async move {
        let script = "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] \
            repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 1200000 return 1";
        // Its answer may come after the client's own response timeout: Redis is busy
        // for the whole 1.2 s either way.
        let _: Result<i64, _> = redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .query_async(&mut busy)
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let resumes = (0..50).map(|i| {
        let url = hub.ws_url("herd");
        let from = i % 10;
        let at = ids[from].clone();
        let want: Vec<String> = ids[from + 1..].to_vec();
        tokio::spawn(async move {
            let (mut client, connected) = WsClient::resume(&url, &at).await;
            assert_eq!(connected["data"]["recovered"], true, "{connected}");
            for id in want {
                assert_eq!(client.next_event().await["id"], id.as_str(), "from {at}");
            }
        })
    });
    for resume in futures_util::future::join_all(resumes).await {
        resume.unwrap();
    }
    hold.await.unwrap();
    // Each replay read (`replay.lua`) checks the state with one HGET (its XRANGEs come
    // in steps); counted by that command, as other scripts run meanwhile (presence
    // writes the joins).
    let reads = calls(&hub, "hget").await;
    assert!(
        (1..=3).contains(&reads),
        "50 concurrent resumers: {reads} replay reads"
    );
}

// A long resume is read in pages (many short steps, never one long read), and the
// pages join up: every event once, in order, then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_resume_is_read_in_pages() {
    let hub = TestHub::start(Backend::Redis).await;
    let first = hub.publish("long", log_event("first")).await;
    let mut ids = Vec::new();
    for i in 0..250 {
        let event = if i % 50 == 0 {
            heavy(i)
        } else {
            log_event(&format!("{i}"))
        };
        ids.push(hub.publish("long", event).await);
    }
    // The replay script loaded (a first call of it is an EVALSHA refused, then EVAL).
    let _ = WsClient::resume(&hub.ws_url("long"), &ids[249]).await;
    reset_stats(&hub).await;
    let (mut client, connected) = WsClient::resume(&hub.ws_url("long"), &first).await;
    assert_eq!(connected["data"]["recovered"], true);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(client.next_event().await["id"], id.as_str(), "event {i}");
    }
    let scripts = calls(&hub, "evalsha").await + calls(&hub, "eval").await;
    assert!(
        scripts >= 3,
        "250 events read in pages of 100: {scripts} script calls"
    );
    let live = hub
        .publish(
            "long",
            json!({"event": "log", "data": {"level": "INFO", "message": "live"}}),
        )
        .await;
    assert_eq!(client.next_event().await["id"], live.as_str());
}

// An error frame's message and details are stored once (its `error` compatibility
// object repeated them, doubling what history held), and clients still get both
// shapes, live and on resume.
async fn error_frames_are_stored_once_and_delivered_in_both_shapes(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut live = WsClient::connected(&hub.ws_url("err")).await;
    let before = hub.publish("err", log_event("before")).await;
    let message = "unique-message-4711";
    let error = json!({"event": "error", "data": {
        "error_code": "STABILITY_AI_ERROR", "message": message, "stage": "ASSETS_GENERATING",
        "details": {"prompt": "unique-details-4712"}}});
    let id = hub.publish("err", error).await;
    let check = |frame: serde_json::Value| {
        assert_eq!(frame["id"], id.as_str(), "{frame}");
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["project_id"], "err");
        let (data, compat) = (&frame["data"], &frame["error"]);
        assert_eq!(compat["code"], "STABILITY_AI_ERROR");
        for key in [
            "message",
            "stage",
            "is_retryable",
            "details",
            "solutions",
            "trace_id",
            "timestamp",
        ] {
            assert_eq!(compat[key], data[key], "{key}");
        }
        assert_eq!(compat["message"], message);
    };
    assert_eq!(live.next_event().await["id"], before.as_str());
    check(live.next_event().await);
    let (mut resumed, _) = WsClient::resume(&hub.ws_url("err"), &before).await;
    check(resumed.next_event().await);
    if b == Backend::Redis {
        let history: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(layout::history_key(&project("err")))
            .arg("-")
            .arg("+")
            .query_async(&mut hub.redis().connection().await)
            .await
            .unwrap();
        let Some(redis::Value::BulkString(stored)) = history.ids[1].map.get("frame") else {
            panic!("no frame");
        };
        let stored = String::from_utf8_lossy(stored);
        assert_eq!(stored.matches(message).count(), 1, "{stored}");
        assert_eq!(stored.matches("unique-details-4712").count(), 1, "{stored}");
    }
}

/// `POST` an event to `project` from the client address `from`: the status, the
/// `Retry-After` in seconds and the answer.
async fn post_as(
    from: [u8; 4],
    hub: &TestHub,
    project: &str,
    event: &Value,
) -> (u16, Option<u64>, Value) {
    let path = format!("/api/v1/projects/{project}/events");
    let (status, retry_after, body) = hub.post_json_from(from, &path, event).await;
    (status, retry_after.and_then(|s| s.parse().ok()), body)
}

// Issue 23 §5, at small scale: a victim's run completes; an attacker (another address)
// floods projects of its own, ~8 times the in-process budget. The victim's project is
// the least recently used and nobody watches it, so before, it was the first evicted
// (state 404, resume `recovered: false`); now the flood is charged to the attacker and
// evicts the attacker's own projects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_client_does_not_evict_another_clients_finished_run() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.history.max_bytes = 40_000;
        c.history.memory_budget = 200_000;
    })
    .await;
    let stage = json!({"event": "stage_change", "data": {"previous_stage": null, "current_stage": "RENDERING", "progress": 40}});
    let first = hub.publish("victim", stage).await;
    let middle = hub.publish("victim", log_event("rendering")).await;
    let done = hub
        .publish(
            "victim",
            json!({"event": "complete", "data": {"status": "COMPLETED"}}),
        )
        .await;
    let attacker = [127, 0, 0, 2];
    for p in 0..40 {
        for i in 0..4 {
            let (status, _, body) = post_as(attacker, &hub, &format!("flood-{p}"), &heavy(i)).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let state = hub.project_state("victim").await;
    assert_eq!(state["status"], "COMPLETED", "{state}");
    assert_eq!(state["last_event_id"], done.as_str(), "{state}");
    let (mut client, connected) = WsClient::resume(&hub.ws_url("victim"), &first).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    assert_eq!(client.next_event().await["id"], middle.as_str());
    assert_eq!(client.next_event().await["id"], done.as_str());
    // The attacker paid with its own: its oldest project is gone.
    let (_, connected) = WsClient::resume(&hub.ws_url("flood-0"), "x:1").await;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
}

// Issue 23 §6: one client creates at most `max_per_client` projects (on Redis, across
// every hub on it); the next gets 429 TOO_MANY_NEW_PROJECTS with Retry-After. Its
// existing projects stay publishable, and another client is not affected.
async fn new_projects_are_bounded_per_client(b: Backend) {
    let quota = |c: &mut crate::support::HubConfig| {
        c.history.project_quota.max_per_client = 3;
        c.history.project_quota.per_minute = 0;
    };
    let hub = TestHub::start_with(b, quota).await;
    let limited = [127, 0, 0, 2];
    for p in ["a1", "a2", "a3"] {
        let (status, _, body) = post_as(limited, &hub, p, &log_event(p)).await;
        assert_eq!(status, 202, "{p}: {body}");
    }
    let (status, retry_after, body) = post_as(limited, &hub, "a4", &log_event("a4")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_NEW_PROJECTS", "{body}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // A job creates its project too.
    let (status, _, body) = hub
        .post_json_from(limited, "/api/v1/projects/a4/generate", &json!({}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_NEW_PROJECTS", "{body}");
    let state = reqwest::get(hub.http("/api/v1/projects/a4")).await.unwrap();
    assert_eq!(state.status().as_u16(), 404, "nothing of a4 was kept");
    for p in ["a1", "a2", "a3"] {
        let (status, _, body) = post_as(limited, &hub, p, &log_event("again")).await;
        assert_eq!(status, 202, "an existing project: {p}: {body}");
    }
    let other = [127, 0, 0, 3];
    let (status, _, body) = post_as(other, &hub, "b1", &log_event("b1")).await;
    assert_eq!(status, 202, "another client: {body}");
    if b == Backend::Redis {
        // A second hub on the same Redis: the count is Redis's, not the process's.
        let second = TestHub::start_on(hub.redis().url(), quota).await;
        let (status, _, body) = post_as(limited, &second, "a5", &log_event("a5")).await;
        assert_eq!(status, 429, "across hubs: {body}");
        let (status, _, body) = post_as(limited, &second, "a1", &log_event("a1")).await;
        assert_eq!(status, 202, "{body}");
    }
}

// The rate: at most `per_minute` new projects of one client in any minute; the refusal
// says when the oldest of them leaves the minute.
async fn new_projects_are_bounded_per_minute(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.history.project_quota.max_per_client = 0;
        c.history.project_quota.per_minute = 2;
    })
    .await;
    let client = [127, 0, 0, 2];
    for p in ["r1", "r2"] {
        let (status, _, body) = post_as(client, &hub, p, &log_event(p)).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, retry_after, body) = post_as(client, &hub, "r3", &log_event("r3")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_NEW_PROJECTS", "{body}");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    let (status, _, body) = post_as(client, &hub, "r1", &log_event("again")).await;
    assert_eq!(status, 202, "{body}");
}

on_both_brokers!(
    new_projects_are_bounded_per_client,
    new_projects_are_bounded_per_minute,
    history_is_bounded_by_bytes,
    history_bytes_stay_exact_across_heavy_frames,
    error_frames_are_stored_once_and_delivered_in_both_shapes,
);

// Issue 23 §7: a publisher configured for a far larger history (a worker's, the CLI's
// `publish`) keeps the one the hub announces in Redis, not its own: the project's history
// stays within the hub's 5 events / 20,000 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_keeps_the_history_the_hub_announces() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.history.max_len = 5;
        c.history.max_bytes = 20_000;
    })
    .await;
    let url = hub.redis().url();
    let mut conn = hub.redis().connection().await;
    eventually("the hub announces its history policy", || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(layout::HISTORY_POLICY_KEY)
                .query_async::<bool>(&mut conn)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    let own = HistoryConfig {
        max_len: 20_000,
        max_bytes: 1 << 30,
        ..HistoryConfig::default()
    };
    let broker = RedisBroker::connect(&url, own)
        .unwrap()
        .following_the_hubs();
    let publisher = Publisher::new(Arc::new(broker), Locale::En, Duration::ZERO);
    let p = project("announced");
    for i in 0..12 {
        let message = format!("{i:03}{}", "x".repeat(3000));
        publisher
            .publish_log(&p, LogLevel::Info, &message)
            .await
            .unwrap();
    }
    let history = layout::history_key(&p);
    let len: usize = redis::cmd("XLEN")
        .arg(&history)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 5, "the hub's length, not the publisher's 20,000");
    for _ in 0..3 {
        let out = cli::run(&[
            "publish",
            "--project",
            "announced",
            "--redis-url",
            &url,
            "--history-len",
            "20000",
            "--history-bytes",
            "1073741824",
            "log",
            "--level",
            "INFO",
            &"y".repeat(8000),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let frames: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&history)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let bytes: usize = frames
        .iter()
        .flat_map(|(_, f)| f.iter())
        .map(|(_, v)| v.len())
        .sum();
    assert!(
        bytes <= 20_000,
        "the hub's bytes: {bytes} in {} frames",
        frames.len()
    );
    assert!(frames.len() >= 2, "{} frames", frames.len());
}

// Nonsense history settings (nothing kept, keys that expire at once) are refused at
// start with a clear error, by the hub, the worker and the CLI alike, from flags or the
// environment: `HUB_HISTORY_LEN=0` used to be taken and left every history empty.
#[test]
fn nonsense_history_settings_are_refused_at_start() {
    /// Flags, environment, and the flag the error names.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (&["--history-len", "0"], &[], "history-len"),
        (&[], &[("HUB_HISTORY_LEN", "0")], "history-len"),
        (&["--history-bytes", "0"], &[], "history-bytes"),
        (&["--retention", "0s"], &[], "retention"),
    ];
    for (flags, envs, named) in cases {
        // Each command, and what follows its flags.
        let commands: [(&[&str], &[&str]); 3] = [
            (&["serve", "--listen", "127.0.0.1:0"], &[]),
            (&["worker", "--redis-url", "redis://127.0.0.1:1"], &[]),
            (
                &[
                    "publish",
                    "--project",
                    "p",
                    "--redis-url",
                    "redis://127.0.0.1:1",
                ],
                &["log", "m"],
            ),
        ];
        for (command, after) in commands {
            let out = cli::command()
                .args(command)
                .args(flags)
                .args(after)
                .envs(envs.iter().copied())
                .output()
                .expect("binary runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{command:?} {flags:?} {envs:?} started"
            );
            assert!(
                stderr.contains(&format!("(--{named}) must be more than 0")),
                "{command:?} {flags:?} {envs:?}: {stderr}"
            );
        }
    }
}
