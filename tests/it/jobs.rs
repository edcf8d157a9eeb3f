//! Generation jobs end to end: REST → job queue → worker → pipeline → publish path →
//! WebSocket. Test 9 of the original task description, retries, failure, the
//! one-job-per-project rule, fencing of stale claims, and workers that die, stall, or
//! share the load.

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use progress_hub::broker::redis::RedisBroker;
use progress_hub::broker::{BrokerError, Fence, HistoryConfig};
use progress_hub::locale::Locale;
use progress_hub::publish::{PublishError, Published, Publisher};
use progress_hub::wire::ProjectId;
use progress_hub::wire::event::{CompleteStatus, LogLevel};
use progress_hub_jobs::checkpoint::Checkpoint;
use progress_hub_jobs::providers::Asset;
use progress_hub_jobs::queue::{JobQueue, Ownership, QueueError};
use progress_hub_jobs::redis_queue::RedisQueue;
use progress_hub_jobs::worker::Worker;
use progress_hub_jobs::{Job, RetryPolicy, WorkerConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{
    self, Backend, PATIENCE, RedisServer, TestHub, WsClient, call_log_path, calls_in, cli,
    eventually, fast_hub, layout, log_event, metric,
};

const STAGES: [&str; 5] = [
    "SCRIPT_GENERATING",
    "ASSETS_GENERATING",
    "RENDERING",
    "THUMBNAIL_GENERATING",
    "UPLOADING",
];

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
    let (status, body) = hub.generate(&id, &json!({"topic": "AI 科技趨勢"})).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["job_id"].as_str().unwrap().starts_with("job-"));
    let frames = client.until_complete(PATIENCE).await;
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
    let body = json!({"inject_failures": {"ASSETS_GENERATING": 2, "UPLOADING": 1}});
    let (status, _) = hub.generate("flaky", &body).await;
    assert_eq!(status, 202);
    let frames = client.until_complete(PATIENCE).await;
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
    let (status, _) = hub
        .generate("doomed", &json!({"inject_failures": {"RENDERING": 9}}))
        .await;
    assert_eq!(status, 202);
    let frames = client.until_complete(PATIENCE).await;
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
    let (status, _) = hub.generate("doomed", &json!({})).await;
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
    let (status, _) = hub.generate("busy", &json!({})).await;
    assert_eq!(status, 202);
    let (status, body) = hub.generate("busy", &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "JOB_RUNNING");
    let (status, _) = hub.generate("other", &json!({})).await;
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
        let (status, answer) = hub.generate("fresh", &body).await;
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

/// Asks for a generation from the client address `from` (a loopback address).
async fn generate_from(
    hub: &TestHub,
    from: [u8; 4],
    project: &str,
) -> (u16, Option<String>, Value) {
    hub.post_json_from(
        from,
        &format!("/api/v1/projects/{project}/generate"),
        &json!({}),
    )
    .await
}

// The generate queue is bounded: past the per-client cap a client gets 429, past the
// global cap everyone gets 503, both with Retry-After and a stable code; a job that
// waits says where it is in the queue, in its answer and in its first frames. (No worker
// runs: every accepted job waits.)
async fn the_generate_queue_is_bounded_per_client_and_in_all(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.worker = None;
        c.job_limits.max_queued = 3;
        c.job_limits.max_queued_per_client = 2;
    })
    .await;
    let (a, other) = ([127, 0, 0, 1], [127, 0, 0, 2]);
    let mut watcher = WsClient::connected(&hub.ws_url("queued-1")).await;
    for (n, project) in ["queued-0", "queued-1"].iter().enumerate() {
        let (status, _, body) = generate_from(&hub, a, project).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["queue_position"], n as u64 + 1, "{body}");
    }
    let said = loop {
        let frame = watcher.next_event().await;
        if frame["event"] == "log" {
            break frame["data"]["message"].as_str().unwrap().to_string();
        }
    };
    assert!(
        said.contains("2") && said.contains('1'),
        "the waiting job's first frame gives its position (2) and the jobs ahead (1): {said}"
    );

    let (status, retry_after, body) = generate_from(&hub, a, "queued-2").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_QUEUED_JOBS");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));

    let (status, _, body) = generate_from(&hub, other, "queued-3").await;
    assert_eq!(status, 202, "another client still gets in: {body}");
    assert_eq!(body["queue_position"], 3);
    let (status, retry_after, body) = generate_from(&hub, other, "queued-4").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "JOB_QUEUE_FULL");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));
    // A refused generate leaves nothing behind: the project is not locked.
    let (status, _, _) = generate_from(&hub, other, "queued-4").await;
    assert_eq!(status, 503, "still full, not 409");
}

// With access control on, the per-client limit counts per token, not per address:
// two publishers behind one address (a proxy, a NAT) each get their own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_queue_limit_is_per_token() {
    const SECRET: &str = "test-secret-do-not-use";
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.worker = None;
        c.auth_secret = Some(SECRET.into());
        c.job_limits.max_queued_per_client = 1;
    })
    .await;
    let auth = progress_hub::auth::Auth::new(SECRET).expect("a non-empty secret");
    let ttl = Duration::from_secs(3600);
    let first = auth.mint(&["*".into()], true, ttl).unwrap();
    let second = auth.mint(&["t-1".into(), "t-2".into()], true, ttl).unwrap();
    let generate = |project: &'static str, token: String| {
        let url = hub.http(&format!("/api/v1/projects/{project}/generate"));
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    assert_eq!(generate("t-0", first.clone()).await, 202);
    assert_eq!(
        generate("t-1", first).await,
        429,
        "the first token's share is used"
    );
    assert_eq!(
        generate("t-1", second.clone()).await,
        202,
        "another token from the same address has its own share"
    );
    assert_eq!(generate("t-2", second).await, 429);
}

/// A worker that stalled and lost its job publishes under an older claim of it: its
/// events are refused (even ones sent before the stall that land late), and once the
/// job's `complete` is in, no claim of the job can publish again, not even after the
/// project has moved on to a new job.
async fn stale_claims_are_fenced_and_a_job_completes_once(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.worker = None).await;
    let project = ProjectId::parse("fenced").unwrap();
    let mut client = WsClient::connected(&hub.ws_url("fenced")).await;
    let claim = |job: &str, delivery| {
        hub.publisher().for_claim(Fence {
            holder: job.to_string(),
            token: delivery,
        })
    };
    let stale = |r: Result<Published, PublishError>| {
        matches!(r, Err(PublishError::Broker(BrokerError::Stale(_))))
    };
    let (first, second) = (claim("job-a", 1), claim("job-a", 2));
    first
        .publish_log(&project, LogLevel::Info, "first run")
        .await
        .unwrap();
    second
        .publish_log(&project, LogLevel::Info, "second run")
        .await
        .unwrap();
    let late = first.publish_log(&project, LogLevel::Info, "late from the stalled worker");
    assert!(
        stale(late.await),
        "an older claim is refused once a newer one published"
    );
    let late = first.publish_complete(
        &project,
        CompleteStatus::Completed,
        Some("https://youtu.be/stale"),
    );
    assert!(stale(late.await), "nor may it complete the job");
    second
        .publish_complete(
            &project,
            CompleteStatus::Completed,
            Some("https://youtu.be/ok"),
        )
        .await
        .unwrap();
    for (who, again) in [("same claim", &second), ("older", &first)] {
        let r = again
            .publish_complete(&project, CompleteStatus::Completed, None)
            .await;
        assert!(stale(r), "{who}: a completed job never completes twice");
    }
    assert!(
        stale(
            claim("job-a", 3)
                .publish_log(&project, LogLevel::Info, "newer")
                .await
        ),
        "a newer claim of a completed job is refused too"
    );
    // The project moves on: a new job's run, then the old job's stalled worker wakes up.
    let next = claim("job-b", 1);
    next.publish_log(&project, LogLevel::Info, "next job")
        .await
        .unwrap();
    let r = first.publish_log(
        &project,
        LogLevel::Info,
        "woke up after the next job started",
    );
    assert!(stale(r.await), "the previous job stays fenced off");
    // Publishes without a claim (HTTP API, CLI) are not fenced.
    hub.publish("fenced", log_event("from the API")).await;
    let refused = metric(&hub, "hub_stale_job_events_refused_total").await;
    assert!(refused >= 6.0, "every refusal is counted: {refused}");

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("log:from the API") {
        let frame = client.next_event().await;
        if frame["event"] == "log" {
            seen.push(format!(
                "log:{}",
                frame["data"]["message"].as_str().unwrap_or("")
            ));
        } else if frame["event"] == "complete" {
            seen.push(format!(
                "complete:{}",
                frame["data"]["youtube_url"].as_str().unwrap_or("")
            ));
        }
    }
    assert_eq!(
        seen,
        [
            "log:first run",
            "log:second run",
            "complete:https://youtu.be/ok",
            "log:next job",
            "log:from the API"
        ]
    );
}

/// Issue 23 §8: run A of job J1 stalls; run B takes J1 over and completes it; job J2 runs
/// and completes; A wakes. Its `log` and a second `complete` of J1 are refused, and the
/// project's state stays J2's COMPLETED: a run of any job but the project's current one is
/// stale, however many jobs came after.
async fn a_stale_run_stays_fenced_after_later_jobs_complete(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.worker = None).await;
    let project = ProjectId::parse("fenced-later").unwrap();
    let claim = |job: &str, token| {
        hub.publisher().for_claim(Fence {
            holder: job.to_string(),
            token,
        })
    };
    let stale = |r: &Result<Published, PublishError>| {
        matches!(r, Err(PublishError::Broker(BrokerError::Stale(_))))
    };
    let (a, b) = (claim("j1", 1), claim("j1", 2));
    a.publish_log(&project, LogLevel::Info, "A starts")
        .await
        .unwrap();
    b.publish_log(&project, LogLevel::Info, "B took over")
        .await
        .unwrap();
    b.publish_complete(&project, CompleteStatus::Completed, None)
        .await
        .unwrap();
    for token in [1, 2] {
        let j2 = claim("j2", token);
        j2.publish_log(&project, LogLevel::Info, "J2 runs")
            .await
            .unwrap();
    }
    claim("j2", 2)
        .publish_complete(
            &project,
            CompleteStatus::Completed,
            Some("https://youtu.be/j2"),
        )
        .await
        .unwrap();
    let late = a.publish_log(&project, LogLevel::Info, "A wakes up").await;
    assert!(stale(&late), "a run of an earlier job is refused: {late:?}");
    let late = a
        .publish_complete(&project, CompleteStatus::Failed, None)
        .await;
    assert!(stale(&late), "nor may it complete its job again: {late:?}");
    let state = hub.project_state("fenced-later").await;
    assert_eq!(state["status"], "COMPLETED", "{state}");
    assert_eq!(state["job_id"], "j2", "{state}");
    assert_eq!(state["youtube_url"], "https://youtu.be/j2", "{state}");
}

/// A `progress-hub worker` process on the test's Redis.
fn spawn_worker(redis_url: &str, mock_delay: &str, concurrency: &str) -> Child {
    cli::worker(
        redis_url,
        &[
            "--mock-delay",
            mock_delay,
            "--retry-backoff",
            "5ms",
            "--claim-idle",
            "1s",
            "--concurrency",
            concurrency,
        ],
    )
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
    let (status, _) = hub.generate("orphan", &json!({})).await;
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
    let frames = client.until_complete(PATIENCE).await;
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

/// Every provider call of a whole run, as the mock providers log them
/// (`--mock-call-log`): `<stage> <step>`.
fn full_run_calls() -> Vec<String> {
    let mut calls = vec![
        "SCRIPT_GENERATING script".to_string(),
        "ASSETS_GENERATING voice".into(),
    ];
    calls.extend((1..=15).map(|n| format!("ASSETS_GENERATING image-{n:02}")));
    calls.push("ASSETS_GENERATING avatar".into());
    calls.extend((1..=4).map(|n| format!("RENDERING part-{n}")));
    calls.push("THUMBNAIL_GENERATING thumbnail".into());
    calls.push("UPLOADING upload".into());
    calls
}

/// A worker on the test's Redis whose mock providers log every call they start.
fn spawn_logging_worker(redis_url: &str, mock_delay: &str, call_log: &std::path::Path) -> Child {
    let log = call_log.to_str().unwrap();
    cli::worker(
        redis_url,
        &[
            "--mock-delay",
            mock_delay,
            "--retry-backoff",
            "5ms",
            "--claim-idle",
            "1s",
            "--concurrency",
            "1",
            "--mock-call-log",
            log,
        ],
    )
}

// A worker killed (SIGKILL) in each stage: the worker that takes the job over starts
// at the first unfinished step. Every provider call of the run is made, each once,
// except the one the kill cut short (made twice at most); the rescuer calls no provider
// of a stage finished before the kill; it says it took over, its first stage_change
// names the stage the run was in, and its progress goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_over_resumes_at_its_first_unfinished_step() {
    let hub = hub_without_worker().await;
    let url = hub.redis().url();
    for (i, stage) in STAGES.iter().enumerate() {
        let project = format!("resume-{i}");
        let (doomed_log, rescuer_log) = (call_log_path("doomed"), call_log_path("rescuer"));
        let mut doomed = spawn_logging_worker(&url, "100ms", &doomed_log);
        let mut client = WsClient::connected(&hub.ws_url(&project)).await;
        let (status, _) = hub.generate(&project, &json!({})).await;
        assert_eq!(status, 202);
        // Kill the worker once it has started a provider call of the stage.
        eventually(
            &format!("the worker calls a provider of {stage}"),
            || async {
                calls_in(&doomed_log)
                    .last()
                    .is_some_and(|c| c.starts_with(stage))
            },
        )
        .await;
        doomed.kill().unwrap();
        doomed.wait().unwrap();
        let mut rescuer = spawn_logging_worker(&url, "2ms", &rescuer_log);
        let frames = client.until_complete(PATIENCE).await;
        rescuer.kill().unwrap();
        rescuer.wait().unwrap();
        let (first, second) = (calls_in(&doomed_log), calls_in(&rescuer_log));
        let _ = std::fs::remove_file(&doomed_log);
        let _ = std::fs::remove_file(&rescuer_log);

        let all: Vec<&String> = first.iter().chain(&second).collect();
        let count = |call: &str| all.iter().filter(|c| c.as_str() == call).count();
        let per_stage: Vec<(&str, usize, usize)> = STAGES
            .iter()
            .map(|s| {
                let of_stage = |calls: &[String]| calls.iter().filter(|c| c.starts_with(s)).count();
                (*s, of_stage(&first), of_stage(&second))
            })
            .collect();
        eprintln!(
            "killed in {stage}: provider calls per stage (killed worker, rescuer): {per_stage:?}"
        );
        let twice: Vec<String> = full_run_calls()
            .into_iter()
            .filter(|c| count(c) > 1)
            .collect();
        for call in full_run_calls() {
            assert!(count(&call) >= 1, "killed in {stage}: {call} never called");
        }
        assert_eq!(
            all.len(),
            full_run_calls().len() + twice.len(),
            "killed in {stage}: no unknown calls: {all:?}"
        );
        assert!(
            twice.len() <= 1
                && twice
                    .iter()
                    .all(|c| count(c) == 2 && Some(c) == first.last()),
            "killed in {stage}: only the call the kill cut short is made again: {twice:?}; killed worker {first:?}; rescuer {second:?}"
        );
        let was_in = first.last().and_then(|c| c.split_once(' ')).map(|(s, _)| s);
        assert_eq!(
            was_in,
            Some(*stage),
            "the worker was killed inside {stage}: {first:?}"
        );
        for finished in &STAGES[..i] {
            assert!(
                !second.iter().any(|c| c.starts_with(finished)),
                "killed in {stage}: the rescuer called a provider of the finished {finished}: {second:?}"
            );
        }

        // What the client saw: one clean stream; the rescuer says it took over (every
        // frame from there on is the rescuer's: the killed worker is gone), and its first
        // stage_change goes on from the stage the run was in.
        check_stream(&frames);
        assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
        let takeover = frames
            .iter()
            .position(|f| {
                f["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("接手"))
            })
            .unwrap_or_else(|| panic!("killed in {stage}: the rescuer says it took over"));
        let (before, after) = frames.split_at(takeover);
        let changes = of(after, "stage_change");
        let resumed = changes
            .first()
            .expect("the rescuer publishes a stage_change");
        assert_eq!(
            resumed["data"]["previous_stage"], *stage,
            "killed in {stage}: {resumed}"
        );
        assert_eq!(
            resumed["data"]["current_stage"], *stage,
            "killed in {stage}: {resumed}"
        );
        let stages: Vec<&str> = changes
            .iter()
            .map(|f| f["data"]["current_stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            &STAGES[i..],
            "killed in {stage}: each later stage entered once"
        );
        let last_before = of(before, "progress_update")
            .iter()
            .filter_map(|f| f["data"]["progress"].as_u64())
            .max()
            .unwrap_or(0);
        let progress: Vec<u64> = of(after, "progress_update")
            .iter()
            .map(|f| f["data"]["progress"].as_u64().unwrap())
            .collect();
        assert!(
            progress.first().is_some_and(|p| *p > last_before)
                && progress.windows(2).all(|w| w[0] < w[1]),
            "killed in {stage}: progress goes on from {last_before}, no repeats: {progress:?}"
        );
    }
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
        let (status, _) = hub.generate(&format!("many-{i}"), &json!({})).await;
        assert_eq!(status, 202);
    }
    let runs =
        futures_util::future::join_all(clients.iter_mut().map(|c| c.until_complete(PATIENCE)))
            .await;
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
    let mut stopping = cli::worker(&url, &["--mock-delay", "40ms", "--shutdown-grace", "200ms"]);
    let mut client = WsClient::connected(&hub.ws_url("handback")).await;
    let (status, _) = hub.generate("handback", &json!({})).await;
    assert_eq!(status, 202);
    loop {
        let frame = client.next_event().await;
        if frame["event"] == "stage_change" && frame["data"]["current_stage"] == "ASSETS_GENERATING"
        {
            break;
        }
    }
    cli::sigterm(&stopping);
    let exit = tokio::task::spawn_blocking(move || stopping.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a stopped worker exits cleanly: {exit}");
    let mut successor = spawn_worker(&url, "2ms", "1");
    let frames = client.until_complete(PATIENCE).await;
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

/// Who holds a job's stream entry, per `XPENDING` (None: it is not pending).
async fn pending_owner(redis: &RedisServer, entry: &str) -> Option<String> {
    let mut conn = redis.connection().await;
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(layout::JOB_STREAM)
        .arg(layout::JOB_GROUP)
        .arg(entry)
        .arg(entry)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    pending.into_iter().next().map(|(_, owner, _, _)| owner)
}

/// The only entry of the job stream, if any (the job queue of one test).
async fn only_job_entry(redis: &RedisServer) -> Option<String> {
    let mut conn = redis.connection().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(layout::JOB_STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(entries.len() <= 1, "one job, one entry: {entries:?}");
    entries.into_iter().next().map(|(id, _)| id)
}

async fn stream_len(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("XLEN")
        .arg(layout::JOB_STREAM)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn queued_job(project: &str) -> Job {
    Job {
        id: progress_hub_jobs::new_job_id(),
        project: ProjectId::parse(project).unwrap(),
        topic: "ai trends".into(),
        inject_failures: Default::default(),
        requeued: 0,
        resume_from: None,
        client: None,
    }
}

// The queue alone: once B has reclaimed A's job, nothing A does with its old claim
// (keep-alive, finish, hand back) takes the job back, settles it, or queues it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_cannot_be_kept_alive_settled_or_handed_back() {
    let redis = RedisServer::start().await;
    let wait = Duration::from_millis(100);
    let a = RedisQueue::new(&redis.url(), Duration::from_secs(30)).unwrap();
    // B reclaims whatever is pending: to B, A has been silent longer than the claim
    // idle time (as if A had stalled that long), with no time spent waiting.
    let b = RedisQueue::new(&redis.url(), Duration::ZERO).unwrap();
    let job = queued_job("lost-claim");
    a.submit(&job).await.unwrap();
    let first = a
        .take("worker-a", wait)
        .await
        .unwrap()
        .expect("A takes the job");
    assert!(!first.reclaimed());
    let second = b
        .take("worker-b", wait)
        .await
        .unwrap()
        .expect("B reclaims it");
    assert!(second.reclaimed());
    assert_eq!(second.job, job);
    assert_eq!(second.entry, first.entry);
    assert_eq!(
        pending_owner(&redis, &first.entry).await.as_deref(),
        Some("worker-b")
    );

    // A comes back to life: its keep-alive reports the claim lost and does not take
    // the job back.
    let lost = Ownership::Lost {
        holder: Some("worker-b".into()),
    };
    assert_eq!(a.keep_alive(&first).await.unwrap(), lost);
    assert_eq!(
        pending_owner(&redis, &first.entry).await.as_deref(),
        Some("worker-b"),
        "A's keep-alive took the job back from B"
    );
    // Nor may A settle B's job, or queue it a second time.
    assert_eq!(a.finish(&first).await.unwrap(), lost);
    assert_eq!(
        pending_owner(&redis, &first.entry).await.as_deref(),
        Some("worker-b"),
        "A settled the job B runs"
    );
    assert_eq!(a.hand_back(&first).await.unwrap(), lost);
    assert_eq!(
        stream_len(&redis).await,
        1,
        "A queued the job a second time"
    );
    // Nor may A record progress for it: B's record stands.
    let b_did = Checkpoint {
        thumbnail: Some(Asset { name: "b".into() }),
        ..Checkpoint::default()
    };
    assert_eq!(b.record(&second, &b_did).await.unwrap(), Ownership::Held);
    assert_eq!(
        a.record(&first, &Checkpoint::default()).await.unwrap(),
        lost
    );
    // The project stays locked for the job B runs.
    let again = a.submit(&queued_job("lost-claim")).await;
    assert!(
        matches!(&again, Err(QueueError::Busy { job_id }) if *job_id == job.id),
        "{again:?}"
    );

    // A worker that reclaims its own job holds a new claim; the old one is over.
    assert_eq!(b.keep_alive(&second).await.unwrap(), Ownership::Held);
    let third = b
        .take("worker-b", wait)
        .await
        .unwrap()
        .expect("B reclaims it again");
    assert_eq!(third.checkpoint, b_did, "the reclaim gets what B recorded");
    assert_eq!(
        (third.entry.as_str(), third.delivery),
        (first.entry.as_str(), 3)
    );
    assert_eq!(b.keep_alive(&second).await.unwrap(), lost);
    assert_eq!(b.hand_back(&second).await.unwrap(), lost);
    assert_eq!(stream_len(&redis).await, 1, "queued once");

    // The live claim is whole: it keeps the job and settles it, which frees the project.
    assert_eq!(b.keep_alive(&third).await.unwrap(), Ownership::Held);
    assert_eq!(b.finish(&third).await.unwrap(), Ownership::Held);
    assert_eq!(pending_owner(&redis, &first.entry).await, None);
    assert_eq!(stream_len(&redis).await, 0);
    assert_eq!(
        a.keep_alive(&third).await.unwrap(),
        Ownership::Lost { holder: None },
        "a settled job is no one's"
    );
    a.submit(&queued_job("lost-claim")).await.unwrap();
}

/// Every key in Redis that expires, with its time to live (ms).
async fn expiring_keys(redis: &RedisServer) -> Vec<(String, i64)> {
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut expiring = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if ttl != -1 {
            expiring.push((key, ttl));
        }
    }
    expiring
}

// The one-job-per-project rule lasts as long as the job, however long it waits in the
// queue: nothing the queue keeps for a queued or running job expires (the old lock
// expired max(2 × claim_idle, 60 s) after submit, so a job that waited behind busy
// workers for a minute let a second `generate` of its project in, and both ran). Once
// the job is settled, the project is free and nothing of the job is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_lock_lasts_as_long_as_its_job() {
    let redis = RedisServer::start().await;
    let wait = Duration::from_millis(100);
    let q = RedisQueue::new(&redis.url(), Duration::from_secs(1)).unwrap();
    let job = queued_job("waits");
    q.submit(&job).await.unwrap();
    assert_eq!(
        expiring_keys(&redis).await,
        [],
        "a queued job's keys must not expire"
    );
    let busy = q.submit(&queued_job("waits")).await;
    assert!(
        matches!(&busy, Err(QueueError::Busy { job_id }) if *job_id == job.id),
        "{busy:?}"
    );

    let taken = q.take("worker-a", wait).await.unwrap().unwrap();
    assert_eq!(q.keep_alive(&taken).await.unwrap(), Ownership::Held);
    assert_eq!(
        expiring_keys(&redis).await,
        [],
        "a running job's keys must not expire"
    );
    assert!(matches!(
        q.submit(&queued_job("waits")).await,
        Err(QueueError::Busy { .. })
    ));

    assert_eq!(q.finish(&taken).await.unwrap(), Ownership::Held);
    let mut conn = redis.connection().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        left,
        [layout::JOB_STREAM],
        "only the (empty) stream is left"
    );
    q.submit(&queued_job("waits")).await.unwrap();
}

// Handing a job back is one step: the job is queued again exactly once, for a new taker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_is_handed_back_once() {
    let redis = RedisServer::start().await;
    let wait = Duration::from_millis(100);
    let q = RedisQueue::new(&redis.url(), Duration::from_secs(30)).unwrap();
    let job = queued_job("hand-back");
    q.submit(&job).await.unwrap();
    let first = q.take("worker-a", wait).await.unwrap().unwrap();
    let done = Checkpoint {
        youtube_url: Some("https://youtube.com/watch?v=x".into()),
        ..Checkpoint::default()
    };
    assert_eq!(q.record(&first, &done).await.unwrap(), Ownership::Held);
    assert_eq!(q.hand_back(&first).await.unwrap(), Ownership::Held);
    assert_eq!(pending_owner(&redis, &first.entry).await, None);
    assert_eq!(stream_len(&redis).await, 1);
    let next = q.take("worker-b", wait).await.unwrap().unwrap();
    assert_eq!(next.job, job.requeued_again());
    assert_eq!(next.checkpoint, done, "what the job finished goes with it");
    assert!(next.taken_over());
    assert!(!next.reclaimed(), "a handed-back job is a new delivery");
    assert!(
        next.fencing_token() > first.fencing_token(),
        "and its claim outranks the handed-back one (the broker fences events by it)"
    );
    assert_ne!(next.entry, first.entry);
    assert_eq!(
        q.keep_alive(&first).await.unwrap(),
        Ownership::Lost { holder: None }
    );
    assert_eq!(q.finish(&next).await.unwrap(), Ownership::Held);
    assert_eq!(stream_len(&redis).await, 0);
}

/// A worker on a runtime of its own, on a thread of its own, that the test can freeze
/// whole — every task and timer of it stops, as in a stopped process or a long pause
/// of its host — and thaw.
struct ThreadWorker {
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Thaws a frozen worker when dropped.
struct Frozen {
    _thaw: std::sync::mpsc::Sender<()>,
}

impl ThreadWorker {
    fn start(redis_url: &str, name: &str, locale: Locale, config: WorkerConfig) -> Self {
        let (runtime_tx, runtime_rx) = std::sync::mpsc::channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let url = redis_url.to_string();
        let worker_name = name.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime_tx.send(runtime.handle().clone()).unwrap();
            runtime.block_on(async move {
                let broker =
                    Arc::new(RedisBroker::connect(&url, HistoryConfig::default()).unwrap());
                let queue = Arc::new(RedisQueue::new(&url, config.claim_idle).unwrap());
                let publisher = Publisher::retrying(
                    broker.clone(),
                    locale,
                    Duration::from_millis(500),
                    config.publish_retry,
                );
                let mut worker = Worker::new(queue, broker, publisher, config);
                worker.name = worker_name;
                worker.run(stop).await;
            });
        });
        Self {
            runtime: runtime_rx.recv().unwrap(),
            shutdown,
            thread: Some(thread),
        }
    }

    /// Freezes the worker's runtime (its only thread blocks) until the guard is dropped.
    async fn freeze(&self) -> Frozen {
        let (frozen_tx, frozen_rx) = tokio::sync::oneshot::channel();
        let (thaw_tx, thaw_rx) = std::sync::mpsc::channel::<()>();
        self.runtime.spawn(async move {
            let _ = frozen_tx.send(());
            let _ = thaw_rx.recv(); // blocks the runtime's thread: nothing else runs
        });
        tokio::time::timeout(PATIENCE, frozen_rx)
            .await
            .expect("the worker freezes in time")
            .unwrap();
        Frozen { _thaw: thaw_tx }
    }

    /// Stops the worker (running jobs get the config's grace period) and waits for it.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
}

impl Drop for ThreadWorker {
    fn drop(&mut self) {
        // A failed test does not leave the worker running jobs.
        self.shutdown.cancel();
    }
}

fn thread_worker_config(mock_delay: Duration) -> WorkerConfig {
    WorkerConfig {
        mock_delay,
        retry: RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        },
        concurrency: 1,
        asset_concurrency: WorkerConfig::default().asset_concurrency,
        claim_idle: Duration::from_secs(2),
        // Long enough that a job still running when the worker stops runs to its end.
        shutdown_grace: Duration::from_secs(60),
        publish_retry: Duration::from_secs(5),
        mock_call_log: None,
    }
}

/// The frames of a project's history, oldest first, as the hub stored them.
async fn history(redis: &RedisServer, project: &str) -> Vec<Value> {
    let mut conn = redis.connection().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(layout::history_key(&support::project(project)))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| serde_json::from_str(&fields[0].1).unwrap())
        .collect()
}

// Worker A stalls mid-job longer than the claim idle time; worker B reclaims the job
// and goes on at A's first unfinished step. When A comes back, its keep-alive finds the claim lost: A drops its
// run at once (publishing nothing more), does not take the job back, and the project
// sees exactly one complete — B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_worker_loses_its_claim_and_the_job_completes_once() {
    let hub = hub_without_worker().await;
    let redis = hub.redis();
    // A speaks English, B Chinese: every event says which worker published it.
    let a = ThreadWorker::start(
        &redis.url(),
        "worker-a",
        Locale::En,
        thread_worker_config(Duration::from_millis(150)),
    );
    let mut client = WsClient::connected(&hub.ws_url("stalled")).await;
    let (status, _) = hub
        .generate("stalled", &json!({"topic": "ai trends"}))
        .await;
    assert_eq!(status, 202);
    // A is synthesizing the voice (a 300 ms provider call): freeze it there.
    let mut frames = Vec::new();
    loop {
        let frame = client.next_event().await;
        if matches!(frame["event"].as_str(), Some("connected" | "snapshot")) {
            continue;
        }
        let voice = frame["data"]["message"] == "Synthesizing the voice...";
        frames.push(frame);
        if voice {
            break;
        }
    }
    let frozen_a = a.freeze().await;
    let entry = only_job_entry(redis).await.expect("the job is queued");
    assert_eq!(
        pending_owner(redis, &entry).await.as_deref(),
        Some("worker-a")
    );

    // B reclaims the job once A has been silent for the claim idle time.
    let b = ThreadWorker::start(
        &redis.url(),
        "worker-b",
        Locale::ZhTw,
        thread_worker_config(Duration::from_millis(20)),
    );
    eventually("B reclaims A's job", || async {
        pending_owner(redis, &entry).await.as_deref() == Some("worker-b")
    })
    .await;
    // Hold B still while A wakes up, so that what A's keep-alive does is what we see.
    let frozen_b = b.freeze().await;
    drop(frozen_a);
    let claim_lost = "hub_jobs_total{outcome=\"claim_lost\"}";
    eventually(
        "A's keep-alive runs (A reports the claim lost, or takes the job)",
        || async {
            metric(&hub, claim_lost).await >= 1.0
                || pending_owner(redis, &entry).await.as_deref() != Some("worker-b")
        },
    )
    .await;
    let owner_after_a_woke = pending_owner(redis, &entry).await;
    drop(frozen_b);

    frames.extend(client.until_complete(PATIENCE).await);
    a.stop().await;
    b.stop().await;

    let stored = history(redis, "stalled").await;
    let completes = of(&stored, "complete");
    assert_eq!(completes.len(), 1, "exactly one complete: {completes:?}");
    assert_eq!(
        stored.last().unwrap()["event"],
        "complete",
        "nothing after it"
    );
    assert_eq!(
        owner_after_a_woke.as_deref(),
        Some("worker-b"),
        "A's keep-alive must not take the job back"
    );
    assert_eq!(
        metric(&hub, claim_lost).await,
        1.0,
        "A counted its lost claim"
    );
    // The job was settled once, by B.
    assert_eq!(stream_len(redis).await, 0);
    // What the client saw: one clean stream; after B took over, only B's events (in
    // Chinese), a whole run of every stage.
    check_stream(&frames);
    let takeover = frames
        .iter()
        .position(|f| {
            f["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("接手"))
        })
        .expect("B says it took over");
    let after = &frames[takeover..];
    for f in after {
        if let Some(m) = f["data"]["message"].as_str() {
            assert!(!m.is_ascii(), "an event of A after B took over: {f}");
        }
    }
    let changes = of(after, "stage_change");
    let stages: Vec<&str> = changes
        .iter()
        .map(|f| f["data"]["current_stage"].as_str().unwrap())
        .collect();
    // A had written the script: B goes on in the assets stage A was in, and enters
    // every later stage once.
    assert_eq!(stages, &STAGES[1..], "B goes on where A was");
    assert_eq!(changes[0]["data"]["previous_stage"], "ASSETS_GENERATING");
    assert_eq!(after.last().unwrap()["data"]["status"], "COMPLETED");
}

on_both_brokers!(
    whole_generation_is_pushed_step_by_step,
    transient_failures_are_retried_then_succeed,
    exhausted_retries_end_failed_with_one_complete,
    second_generate_while_running_is_409_and_bad_requests_are_refused,
    stale_claims_are_fenced_and_a_job_completes_once,
    a_stale_run_stays_fenced_after_later_jobs_complete,
    the_generate_queue_is_bounded_per_client_and_in_all,
);
