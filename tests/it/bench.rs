//! The load tool's own parts (`progress-hub-bench`, issue #16): the `floor` relay that
//! every benchmark figure is divided by, and the reconnect `storm` scenario. Both are
//! measuring instruments, so they are tested as such: the floor must speak enough of
//! the contract for the scenarios to run against it unchanged (or its figures would
//! measure a different thing), and the storm must really catch a lost, duplicated or
//! unrecovered event (or its "0 lost" would mean nothing).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use futures_util::SinkExt;
use redis::AsyncCommands;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cli::Killed;
use crate::support::{PATIENCE, RedisServer, WsClient, eventually};

fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_progress-hub-bench"));
    command.env_remove("REDIS_URL").env_remove("HUB_URL");
    command
}

/// Starts `progress-hub-bench floor` on a free port; returns it and its ws:// base URL
/// (announced on stdout once its Redis subscriber is connected).
fn start_floor(redis_url: &str) -> (Killed, String) {
    let mut child = bench()
        .args(["floor", "--listen", "127.0.0.1:0", "--redis-url", redis_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the load tool runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 line");
        if let Some(start) = line.find("ws://") {
            let url = line[start..].trim().to_string();
            std::thread::spawn(move || for _ in lines {});
            return (Killed(child), url);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the floor announced no URL; stdout was: {seen:?}");
}

fn progress_url(base: &str, project: &str) -> String {
    format!("{base}/api/v1/projects/{project}/progress")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_says_connected_first_relays_every_published_frame_to_its_project_and_answers_pings()
{
    let redis = RedisServer::start().await;
    let (_floor, base) = start_floor(&redis.url());
    let mut a = WsClient::connect(&progress_url(&base, "p1")).await;
    let first = a.next_json().await;
    assert_eq!(first["event"], "connected", "{first}");
    assert_eq!(first["data"]["project_id"], "p1");
    assert_eq!(first["data"]["heartbeat_interval"], 30);
    assert_eq!(first["data"]["resumed"], false);
    assert_eq!(first["data"]["recovered"], true);
    assert!(first["data"]["timestamp"].is_string(), "{first}");
    let mut b = WsClient::connected(&progress_url(&base, "p1")).await;
    let mut other = WsClient::connected(&progress_url(&base, "p2")).await;

    // `connected` comes after the subscription is confirmed: a publish made right
    // after it reaches the client. Payloads go out byte for byte.
    let mut conn = redis.connection().await;
    let payload = r#"{"event":"log","data":{"level":"INFO","message":"seq=1 sent_us=2","timestamp":"2026-01-01T00:00:00Z"}}"#;
    let receivers: i64 = conn.publish("progress:p1", payload).await.unwrap();
    assert_eq!(
        receivers, 1,
        "one subscriber connection for all the floor's clients"
    );
    assert_eq!(a.next_text().await, payload);
    assert_eq!(b.next_text().await, payload);
    let for_p2 = r#"{"event":"log","data":{"level":"INFO","message":"p2","timestamp":"2026-01-01T00:00:00Z"}}"#;
    let _: i64 = conn.publish("progress:p2", for_p2).await.unwrap();
    assert_eq!(
        other.next_text().await,
        for_p2,
        "p2's client got p1's frame"
    );

    a.ws.send(Message::text(r#"{"event":"ping"}"#))
        .await
        .unwrap();
    let pong = a.next_json().await;
    assert_eq!(pong["event"], "pong", "{pong}");
    assert!(pong["data"]["timestamp"].is_string(), "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_refuses_a_bad_project_id_with_400_and_unsubscribes_after_the_last_watcher() {
    let redis = RedisServer::start().await;
    let (_floor, base) = start_floor(&redis.url());
    match tokio_tungstenite::connect_async(progress_url(&base, "bad.id")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
        }
        other => panic!(
            "expected HTTP 400, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let a = WsClient::connected(&progress_url(&base, "p1")).await;
    let b = WsClient::connected(&progress_url(&base, "p1")).await;
    assert_eq!(redis.numsub("p1").await, 1);
    a.close().await;
    assert_eq!(redis.numsub("p1").await, 1, "b still watches p1");
    b.close().await;
    eventually("the floor unsubscribes p1", || async {
        redis.numsub("p1").await == 0
    })
    .await;
    // And subscribes again for the next watcher.
    let _c = WsClient::connected(&progress_url(&base, "p1")).await;
    assert_eq!(redis.numsub("p1").await, 1);
}

/// Sends a close frame and returns what came back: a close frame (true) or not.
async fn answers_close_with_close(url: &str) -> bool {
    let mut client = WsClient::connected(url).await;
    client.ws.send(Message::Close(None)).await.unwrap();
    let echo = tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut client.ws))
        .await
        .expect("an answer in time");
    matches!(echo, Some(Ok(Message::Close(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_answers_a_close_as_the_hub_does() {
    // The churn scenario closes every connection: the floor must do the same closing
    // work as the hub, or churn compares unequal work.
    let hub = crate::support::TestHub::start(crate::support::Backend::Redis).await;
    let (_floor, base) = start_floor(&hub.redis().url());
    let by_hub = answers_close_with_close(&hub.ws_url("p1")).await;
    let by_floor = answers_close_with_close(&progress_url(&base, "p1")).await;
    assert_eq!(
        by_floor, by_hub,
        "close frame back: hub {by_hub}, floor {by_floor}"
    );
}

/// Runs the storm at a small size against the real hub binary and returns its RESULT
/// fields and its whole output.
async fn storm(redis: &RedisServer, extra: &[&str]) -> (HashMap<String, String>, String) {
    let mut command = tokio::process::Command::from(bench());
    command
        .args(["storm", "--redis-url", &redis.url()])
        .args(["--hub-bin", env!("CARGO_BIN_EXE_progress-hub")])
        .args(extra)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE * 6, command.output())
        .await
        .expect("the storm ends by itself")
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "storm failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in: {stdout}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (result, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_restarts_the_hub_and_every_client_resumes_recovered_with_every_event_once() {
    let redis = RedisServer::start().await;
    let (r, stdout) = storm(
        &redis,
        &[
            "-c", "40", "-p", "4", "--rate", "10", "--warmup", "1", "--tail", "1", "--drain", "30",
        ],
    )
    .await;
    assert_eq!(r["clients"], "40", "{r:?}");
    assert_eq!(r["resumed"], "40", "every client came back: {r:?}");
    assert_eq!(r["unrecovered"], "0", "{r:?}");
    assert_eq!(r["lost"], "0", "{r:?}");
    assert_eq!(r["duplicates"], "0", "{r:?}");
    // Events flowed before, during and after the restart, to every client.
    let published: u64 = r["published"].parse().unwrap();
    let expected: u64 = r["expected"].parse().unwrap();
    assert!(published >= 4 * 10 * 2, "{r:?}");
    assert_eq!(
        expected,
        published * 10,
        "40 clients over 4 projects: {r:?}"
    );
    assert_eq!(r["received"], r["expected"], "{r:?}");
    // Nothing missed, and the drain ended once every delivery was in, not at its limit.
    assert_eq!(r["missed_events"], "0", "{r:?}");
    assert!(!stdout.contains("missed:"), "{stdout}");
    let drain_s: f64 = r["drain_s"].parse().unwrap();
    assert!(drain_s < 30.0, "{r:?}");
    for key in [
        "storm_s",
        "resumes_per_s",
        "redis_cmds_per_resume",
        "hub_cpu_s",
        "redis_cpu_s",
    ] {
        let value: f64 = r[key].parse().unwrap_or_else(|_| panic!("{key}: {r:?}"));
        assert!(value >= 0.0, "{key}: {r:?}");
    }
}

/// A storm that loses events must say which: with one event of history kept, the
/// events published while the clients were away cannot be resumed (`recovered: false`),
/// so they are lost, counted, and listed by project, seq and event id; the drain gives
/// up at its limit instead of waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_that_loses_events_lists_them() {
    let redis = RedisServer::start().await;
    let (r, stdout) = storm(
        &redis,
        &[
            "-c",
            "8",
            "-p",
            "2",
            "--rate",
            "50",
            "--warmup",
            "1",
            "--tail",
            "1",
            "--drain",
            "1",
            "--hub-arg=--history-len=1",
        ],
    )
    .await;
    let lost: u64 = r["lost"].parse().unwrap();
    assert!(lost > 0, "{stdout}");
    assert_ne!(r["unrecovered"], "0", "{r:?}");
    let missed: usize = r["missed_events"].parse().unwrap();
    assert!(missed > 0, "{r:?}");
    let drain_s: f64 = r["drain_s"].parse().unwrap();
    assert!(
        drain_s >= 1.0,
        "the drain waited its second for them: {r:?}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with(&format!("missed: {missed} events, {lost} deliveries")))
        .unwrap_or_else(|| panic!("no summary of the loss: {stdout}"));
    assert!(summary.contains("holes"), "{summary}");
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("missed: project storm-"))
        .collect();
    assert_eq!(listed.len(), missed.min(20), "{stdout}");
    for line in &listed {
        // `missed: project storm-R-P seq S id E by K of W (holes H)`: the id the hub
        // answered the publish with, so the event can be looked up.
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[3], "seq", "{line}");
        assert_eq!(words[5], "id", "{line}");
        assert!(words[6].contains(':'), "an event id: {line}");
        assert_eq!(words[7], "by", "{line}");
        assert_eq!(words[9], "of", "{line}");
        assert_eq!(words[10], "4", "4 clients per project: {line}");
    }
    if missed > 20 {
        assert!(
            stdout.contains(&format!("missed: ... and {} more events", missed - 20)),
            "{stdout}"
        );
    }
}

/// The soak at a tiny size (8 s, a storm at 2 s and 6 s, a Redis restart at 4 s): the
/// instrument behind BENCHMARKS.md's soak figures must sample what it says, do the
/// storms and restarts it says, and still catch a lost or duplicated event. Its restart
/// races the publishing (SIGTERM while events are published): an event Redis saved but
/// did not deliver as it shut down reaches the watchers from the history, before the
/// restarted server's new epoch (`lost_writes::an_event_saved_as_redis_shuts_down_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_samples_the_hub_through_storms_and_redis_restarts_and_checks_every_event() {
    let csv = std::env::temp_dir().join(format!(
        "progress-hub-soak-{}-{:08x}.csv",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut command = tokio::process::Command::from(bench());
    command
        .arg("soak")
        .args(["--hub-bin", env!("CARGO_BIN_EXE_progress-hub")])
        .args(["-d", "8", "--sample", "1"])
        .args(["--redis-restart-every", "4", "--storm-every", "4"])
        .args(["-p", "4", "-r", "20", "-w", "20", "--churners", "2"])
        .arg("--csv")
        .arg(&csv)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE * 6, command.output())
        .await
        .expect("the soak ends by itself")
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "soak failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r: HashMap<String, String> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in: {stdout}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(r["storms"], "2", "{r:?}");
    assert_eq!(r["redis_restarts"], "1", "{r:?}");
    // Every watcher came back after each storm, recovered, with every event once.
    let reconnects: u64 = r["reconnects"].parse().unwrap();
    assert!(reconnects >= 40, "{r:?}");
    assert_eq!(r["unrecovered"], "0", "{r:?}");
    assert_eq!(r["lost"], "0", "{r:?}");
    assert_eq!(r["duplicates"], "0", "{r:?}");
    assert_eq!(r["received"], r["expected"], "{r:?}");
    let published: u64 = r["published"].parse().unwrap();
    assert!(published >= 20 * 6, "{r:?}");
    let churned: u64 = r["churn_cycles"].parse().unwrap();
    assert!(churned > 0, "{r:?}");

    // One row per second, t = 0..=8, with the hub's figures in every one.
    let text = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 9, "{text}");
    for (t, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len(), "{text}");
        assert_eq!(row[0], t.to_string(), "{text}");
        for column in ["hub_rss_kib", "hub_fds", "hub_threads", "hub_connections"] {
            let i = header.iter().position(|h| *h == column).unwrap();
            let value: u64 = row[i]
                .parse()
                .unwrap_or_else(|_| panic!("{column}: {text}"));
            assert!(value > 0, "{column} at {t}s: {text}");
        }
    }
}
