//! `progress-hub watch` against a running hub: exit codes, JSON frames, the bar's
//! lines, and reconnect + resume across a hub restart.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::support::{self, Backend, PATIENCE, RedisServer, TestHub, cli, fast_hub};

async fn generate(hub: &TestHub, project: &str, body: Value) {
    let (status, answer) = hub.generate(project, &body).await;
    assert_eq!(status, 202, "{answer}");
}

/// Starts a run of `project` and waits until it has completed.
async fn run_to_the_end(hub: &TestHub, project: &str) {
    generate(hub, project, json!({})).await;
    let path = format!("/api/v1/projects/{project}");
    support::eventually("the run completes", || async {
        let state: Value = reqwest::get(hub.http(&path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["status"] == "COMPLETED"
    })
    .await;
}

/// Reads stdout lines as JSON frames until the process exits; returns them and the code.
async fn frames_until_exit(mut child: Child, on_line: impl Fn(&Value)) -> (Vec<Value>, i32) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut frames = Vec::new();
    while let Some(line) = tokio::time::timeout(PATIENCE * 3, lines.next_line())
        .await
        .expect("watch output in time")
        .unwrap()
    {
        let frame: Value = serde_json::from_str(&line).expect("--json prints JSON frames");
        on_line(&frame);
        frames.push(frame);
    }
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    (frames, status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_prints_frames_and_exits_0_on_completed() {
    let hub = fast_hub(Backend::Memory).await;
    let child = cli::watch(&hub.ws_url("w1"), true);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reading = tokio::spawn(frames_until_exit(child, move |_| {
        let _ = seen_tx.send(());
    }));
    // The first line is `connected`: the watcher is subscribed; start the job now.
    seen_rx.recv().await.unwrap();
    generate(&hub, "w1", json!({})).await;
    let (frames, code) = reading.await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(frames[0]["event"], "connected");
    let last = frames.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["data"]["status"].as_str()),
        (Some("complete"), Some("COMPLETED"))
    );
    let images = frames
        .iter()
        .filter(|f| {
            f["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("/15]"))
        })
        .count();
    assert_eq!(images, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bar_mode_prints_lines_and_exits_1_on_failed() {
    let hub = fast_hub(Backend::Memory).await;
    generate(&hub, "w2", json!({"inject_failures": {"UPLOADING": 10}})).await;
    let mut child = cli::watch(&hub.ws_url("w2"), false);
    let stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(PATIENCE * 3, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1), "FAILED exits 1");
    let mut text = String::new();
    let mut reader = BufReader::new(stderr);
    while reader.read_line(&mut text).await.unwrap() > 0 {}
    // Joined late or early, the end is visible: the failure line at least.
    assert!(text.contains("FAILED"), "{text}");
}

// Watching a project whose run is over: the end is shown from the snapshot (status
// and link), and the exit code says how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bar_mode_on_a_finished_project_shows_how_it_ended() {
    let hub = fast_hub(Backend::Memory).await;
    run_to_the_end(&hub, "w3").await;
    let mut child = cli::watch(&hub.ws_url("w3"), false);
    let stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "COMPLETED exits 0");
    let mut text = String::new();
    let mut reader = BufReader::new(stderr);
    while reader.read_line(&mut text).await.unwrap() > 0 {}
    assert!(
        text.contains("✔ COMPLETED https://youtube.com/watch?v="),
        "{text}"
    );
}

// The URL a browser shows for the project's page (with the page's query) watches the
// project as its WebSocket URL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_url_watches_the_project() {
    let hub = fast_hub(Backend::Memory).await;
    run_to_the_end(&hub, "w4").await;
    let child = cli::watch(&hub.http("/projects/w4?lang=en"), true);
    let (frames, code) = frames_until_exit(child, |_| {}).await;
    assert_eq!(code, 0, "COMPLETED exits 0");
    let last = frames.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["data"]["status"].as_str()),
        (Some("snapshot"), Some("COMPLETED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_url_and_unreachable_hub_exit_2() {
    let out = cli::run(&["watch", "http://not-ws"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot watch http://not-ws: not a project's page or progress path"),
        "{stderr}"
    );
    let out = cli::run(&[
        "watch",
        "ws://127.0.0.1:9/api/v1/projects/x/progress",
        "--max-reconnects",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gave up"));
}

// The hub restarts mid-run: watch reconnects, resumes from its last id, and prints every
// event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resumes_across_a_hub_restart() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let listen: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = |c: &mut crate::support::HubConfig| {
        c.redis_url = Some(url.clone());
        c.listen = listen;
        c.worker = None;
    };
    let mut hub = TestHub::start_with(Backend::Memory, config).await;
    let mut worker = cli::worker(&url, &["--mock-delay", "60ms"]);
    let child = cli::watch(&hub.ws_url("w3"), true);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reading = tokio::spawn(frames_until_exit(child, move |f| {
        let _ = seen_tx.send(
            f["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }));
    // Connected frame seen → generate; third image logged → restart the hub.
    seen_rx.recv().await.unwrap();
    generate(&hub, "w3", json!({})).await;
    while let Some(message) = seen_rx.recv().await {
        if message.starts_with("[3/15]") {
            break;
        }
    }
    hub.stop().await;
    let hub = TestHub::start_with(Backend::Memory, config).await;
    let (frames, code) = reading.await.unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(code, 0);
    let ids: Vec<&str> = frames.iter().filter_map(|f| f["id"].as_str()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event printed twice");
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.split_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap: {seqs:?}"
    );
    let resumed = frames
        .iter()
        .filter(|f| f["event"] == "connected" && f["data"]["resumed"] == true)
        .count();
    assert!(resumed >= 1, "watch resumed after the restart");
    drop(hub);
}
