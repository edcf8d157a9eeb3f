//! The generation job end to end: REST → job queue → worker → pipeline → publish path
//! → WebSocket. Test 9 of the original task description, retries, failure, the
//! one-job-per-project rule, and workers that die or share the load.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Backend, TestHub, WsClient, log_event};

const STAGES: [&str; 5] = [
    "SCRIPT_GENERATING",
    "ASSETS_GENERATING",
    "RENDERING",
    "THUMBNAIL_GENERATING",
    "UPLOADING",
];

/// A hub whose in-process worker runs jobs fast.
async fn fast_hub(b: Backend) -> TestHub {
    TestHub::start_with(b, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(2);
            w.retry.base = Duration::from_millis(5);
            w.retry.cap = Duration::from_millis(20);
        }
    })
    .await
}

async fn generate(hub: &TestHub, project: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(hub.http(&format!("/api/v1/projects/{project}/generate")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads frames until `complete` (inclusive), skipping pings and the opening frames.
async fn until_complete(client: &mut WsClient) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.next_event().await;
        if matches!(frame["event"].as_str(), Some("connected" | "snapshot")) {
            continue;
        }
        let done = frame["event"] == "complete";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn of<'a>(frames: &'a [Value], event: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["event"] == event).collect()
}

/// The invariants of one recorded run, whatever its outcome.
fn check_stream(frames: &[Value]) {
    // Ids: unique and contiguous (no duplicate, no gap).
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| {
            f["id"]
                .as_str()
                .expect("every job event has an id")
                .split_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ids contiguous: {seqs:?}");
    }
    // Timestamps: ISO 8601 UTC, never going back.
    let stamps: Vec<chrono::DateTime<chrono::FixedOffset>> = frames
        .iter()
        .map(|f| {
            let ts = f["data"]["timestamp"].as_str().unwrap();
            assert!(ts.ends_with('Z'), "{ts}");
            chrono::DateTime::parse_from_rfc3339(ts).unwrap()
        })
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "timestamps ordered"
    );
    // Progress never decreases.
    let progress: Vec<u64> = frames
        .iter()
        .filter_map(|f| f["data"]["progress"].as_u64())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    // Exactly one complete, at the end.
    assert_eq!(of(frames, "complete").len(), 1);
    assert_eq!(frames.last().unwrap()["event"], "complete");
}

fn check_completed_run(frames: &[Value]) {
    check_stream(frames);
    let stages: Vec<&str> = of(frames, "stage_change")
        .iter()
        .map(|f| f["data"]["current_stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, STAGES, "a stage_change for every stage, in order");
    let progress: Vec<u64> = of(frames, "progress_update")
        .iter()
        .map(|f| f["data"]["progress"].as_u64().unwrap())
        .collect();
    assert!(progress[0] <= 10, "starts at ≤ 10: {progress:?}");
    assert_eq!(*progress.last().unwrap(), 100);
    assert!(
        of(frames, "progress_update")
            .iter()
            .any(|f| f["data"]["estimated_remaining"].is_u64())
    );
    for n in 1..=15 {
        let line = format!("[{n}/15] 正在生成圖片: 段落 {n} - ");
        let logs = of(frames, "log");
        assert_eq!(
            logs.iter()
                .filter(|f| f["data"]["message"].as_str().unwrap().starts_with(&line))
                .count(),
            1,
            "{line}"
        );
    }
    let complete = &frames.last().unwrap()["data"];
    assert_eq!(complete["status"], "COMPLETED");
    assert!(
        complete["youtube_url"]
            .as_str()
            .unwrap()
            .starts_with("https://youtube.com/watch?v=")
    );
}

// Test 9: a whole generation, watched over WebSocket.
async fn whole_generation_is_pushed_step_by_step(b: Backend) {
    let hub = fast_hub(b).await;
    let created = reqwest::Client::new()
        .post(hub.http("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = WsClient::connected(&hub.ws_url(&id)).await;
    let (status, body) = generate(&hub, &id, json!({"topic": "AI 科技趨勢"})).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["job_id"].as_str().unwrap().starts_with("job-"));
    let frames = until_complete(&mut client).await;
    check_completed_run(&frames);
    assert_eq!(of(&frames, "error").len(), 0);
    let state: Value = reqwest::get(hub.http(&format!("/api/v1/projects/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["progress"], 100);
    assert_eq!(
        state["youtube_url"],
        frames.last().unwrap()["data"]["youtube_url"]
    );
}

// Transient failures: an error per failed attempt, retry_count rising, then success.
async fn transient_failures_are_retried_then_succeed(b: Backend) {
    let hub = fast_hub(b).await;
    let mut client = WsClient::connected(&hub.ws_url("flaky")).await;
    let (status, _) = generate(
        &hub,
        "flaky",
        json!({"inject_failures": {"ASSETS_GENERATING": 2, "UPLOADING": 1}}),
    )
    .await;
    assert_eq!(status, 202);
    let frames = until_complete(&mut client).await;
    check_completed_run(&frames);
    let errors = of(&frames, "error");
    let summary: Vec<(&str, u64)> = errors
        .iter()
        .map(|e| {
            (
                e["data"]["stage"].as_str().unwrap(),
                e["data"]["retry_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ASSETS_GENERATING", 0),
            ("ASSETS_GENERATING", 1),
            ("UPLOADING", 0)
        ]
    );
    for e in &errors {
        let d = &e["data"];
        assert_eq!(d["max_retries"], 3);
        assert_eq!(d["is_retryable"], true);
        assert!(!d["solutions"].as_array().unwrap().is_empty());
        assert_eq!(d["trace_id"].as_str().unwrap().len(), 16);
        assert_eq!(d["details"]["will_retry"], true);
        assert_eq!(e["error"]["code"], d["error_code"]);
    }
    assert_eq!(errors[0]["data"]["error_code"], "TTS_API_ERROR");
    assert_eq!(errors[2]["data"]["error_code"], "YOUTUBE_API_ERROR");
}

// Retries spent: the job ends FAILED, with exactly one complete.
async fn exhausted_retries_end_failed_with_one_complete(b: Backend) {
    let hub = fast_hub(b).await;
    let mut client = WsClient::connected(&hub.ws_url("doomed")).await;
    let (status, _) = generate(&hub, "doomed", json!({"inject_failures": {"RENDERING": 9}})).await;
    assert_eq!(status, 202);
    let frames = until_complete(&mut client).await;
    check_stream(&frames);
    let errors = of(&frames, "error");
    let counts: Vec<u64> = errors
        .iter()
        .map(|e| e["data"]["retry_count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [0, 1, 2, 3],
        "four attempts: the first and three retries"
    );
    assert_eq!(
        errors.last().unwrap()["data"]["details"]["will_retry"],
        false
    );
    assert_eq!(errors.last().unwrap()["data"]["error_code"], "RENDER_ERROR");
    let complete = &frames.last().unwrap()["data"];
    assert_eq!(complete["status"], "FAILED");
    assert_eq!(complete["youtube_url"], Value::Null);
    let stages: Vec<&str> = of(&frames, "stage_change")
        .iter()
        .map(|f| f["data"]["current_stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, &STAGES[..3], "stops at the failed stage");
    // Nothing more comes: the next frame is a sentinel published now.
    hub.publish("doomed", log_event("sentinel")).await;
    assert_eq!(client.next_event().await["data"]["message"], "sentinel");
    // The project may be generated again once the job is over.
    let (status, _) = generate(&hub, "doomed", json!({})).await;
    assert_eq!(status, 202);
}

// One job per project at a time; bad requests are refused clearly.
async fn second_generate_while_running_is_409_and_bad_requests_are_refused(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(200);
        }
    })
    .await;
    let (status, _) = generate(&hub, "busy", json!({})).await;
    assert_eq!(status, 202);
    let (status, body) = generate(&hub, "busy", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "JOB_RUNNING");
    let (status, _) = generate(&hub, "other", json!({})).await;
    assert_eq!(status, 202, "other projects are not blocked");
    let cases = [
        (json!({"topic": "x".repeat(201)}), "topic"),
        (json!({"topic": ""}), "topic"),
        (
            json!({"inject_failures": {"DANCING": 1}}),
            "inject_failures",
        ),
        (
            json!({"inject_failures": {"RENDERING": -1}}),
            "inject_failures",
        ),
        (
            json!({"inject_failures": {"RENDERING": 99}}),
            "inject_failures.RENDERING",
        ),
        (json!({"colour": "blue"}), "colour"),
        (json!([1]), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = generate(&hub, "fresh", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(
            answer["error"]["field"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body} → {answer}"
        );
    }
    let bad_id = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/a%2Fb/generate"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400);
    let empty = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/empty-body/generate"))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 202, "the body is optional");
}

on_both_brokers!(
    whole_generation_is_pushed_step_by_step,
    transient_failures_are_retried_then_succeed,
    exhausted_retries_end_failed_with_one_complete,
    second_generate_while_running_is_409_and_bad_requests_are_refused,
);

/// A `progress-hub worker` process on the test's Redis.
fn spawn_worker(redis_url: &str, mock_delay: &str, concurrency: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .args([
            "worker",
            "--redis-url",
            redis_url,
            "--mock-delay",
            mock_delay,
        ])
        .args([
            "--retry-backoff",
            "5ms",
            "--claim-idle",
            "1s",
            "--concurrency",
            concurrency,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker binary runs")
}

/// A Redis-backed hub that runs no jobs itself.
async fn hub_without_worker() -> TestHub {
    TestHub::start_with(Backend::Redis, |c| c.worker = None).await
}

// A worker killed mid-job: another takes the job over and finishes it; the client sees
// one complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_finished_by_another_with_one_complete() {
    let hub = hub_without_worker().await;
    let url = hub.redis().url();
    let mut doomed = spawn_worker(&url, "20ms", "1");
    let mut client = WsClient::connected(&hub.ws_url("orphan")).await;
    let (status, _) = generate(&hub, "orphan", json!({})).await;
    assert_eq!(status, 202);
    // Wait until the first worker is inside the assets stage, then kill it.
    loop {
        let frame = client.next_event().await;
        if frame["event"] == "stage_change" && frame["data"]["current_stage"] == "ASSETS_GENERATING"
        {
            break;
        }
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let mut rescuer = spawn_worker(&url, "2ms", "1");
    let frames = until_complete(&mut client).await;
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();
    check_stream(&frames);
    let took_over = of(&frames, "log")
        .iter()
        .any(|f| f["data"]["message"].as_str().unwrap().contains("接手"));
    assert!(took_over, "the new worker says it took over");
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    hub.publish("orphan", log_event("sentinel")).await;
    assert_eq!(
        client.next_event().await["data"]["message"],
        "sentinel",
        "no second complete"
    );
}

// Two workers, ten projects at once: every project's stream is whole and correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_ten_projects_at_once() {
    let hub = hub_without_worker().await;
    let url = hub.redis().url();
    let mut workers = [
        spawn_worker(&url, "3ms", "5"),
        spawn_worker(&url, "3ms", "5"),
    ];
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(WsClient::connected(&hub.ws_url(&format!("many-{i}"))).await);
    }
    for i in 0..10 {
        let (status, _) = generate(&hub, &format!("many-{i}"), json!({})).await;
        assert_eq!(status, 202);
    }
    let runs = futures_util::future::join_all(clients.iter_mut().map(until_complete)).await;
    for worker in &mut workers {
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    for frames in &runs {
        check_completed_run(frames);
    }
}

// SIGTERM to a worker mid-job: it stops taking jobs, hands the running one back after
// its grace period, and exits; another worker finishes the job, with one complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_hands_its_job_back() {
    let hub = hub_without_worker().await;
    let url = hub.redis().url();
    let mut stopping = Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .args([
            "worker",
            "--redis-url",
            &url,
            "--mock-delay",
            "40ms",
            "--shutdown-grace",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = WsClient::connected(&hub.ws_url("handback")).await;
    let (status, _) = generate(&hub, "handback", json!({})).await;
    assert_eq!(status, 202);
    loop {
        let frame = client.next_event().await;
        if frame["event"] == "stage_change" && frame["data"]["current_stage"] == "ASSETS_GENERATING"
        {
            break;
        }
    }
    let term = Command::new("kill")
        .args(["-TERM", &stopping.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = tokio::task::spawn_blocking(move || stopping.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a stopped worker exits cleanly: {exit}");
    let mut successor = spawn_worker(&url, "2ms", "1");
    let frames = until_complete(&mut client).await;
    successor.kill().unwrap();
    successor.wait().unwrap();
    check_stream(&frames);
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    hub.publish("handback", log_event("sentinel")).await;
    assert_eq!(
        client.next_event().await["data"]["message"],
        "sentinel",
        "one complete"
    );
}
