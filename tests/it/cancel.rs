//! Cancel (issue 25 §3): `POST /api/v1/projects/{id}/cancel` stops the project's job
//! between provider calls (none starts after the one in flight), a queued job never
//! starts, and the run ends with exactly one `complete` of status `CANCELLED`.
//! Refusals: an ended run 409, an unknown one 404, hostile ids and bodies 400, a token
//! without the publish or control scope 403.

use std::path::Path;
use std::time::{Duration, Instant};

use progress_hub::broker::{BrokerError, Fence};
use progress_hub::publish::PublishError;
use progress_hub::wire::Stage;
use progress_hub::wire::event::LogLevel;
use serde_json::{Value, json};

use crate::support::{Backend, PATIENCE, TestHub, WsClient, call_log_path, calls_in};

const SECRET: &str = "cancel-test-secret";

/// A hub whose in-process worker takes 100 ms a provider call, one job at a time, and
/// logs every call it starts to `calls`.
async fn slow_hub(b: Backend, calls: &Path) -> TestHub {
    let calls = calls.to_path_buf();
    TestHub::start_with(b, move |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(100);
            w.concurrency = 1;
            w.mock_call_log = Some(calls);
        }
    })
    .await
}

/// `POST .../cancel` with `body` (raw) and `token`: the status and the answer.
async fn cancel_with(
    hub: &TestHub,
    project: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().post(hub.http(&format!("/api/v1/projects/{project}/cancel")));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST cancel");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn cancel(hub: &TestHub, project: &str) -> (u16, Value) {
    cancel_with(hub, project, None, None).await
}

/// Reads events until one matches.
async fn until(client: &mut WsClient, wanted: impl Fn(&Value) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if wanted(&client.next_event().await) {
                return;
            }
        }
    })
    .await
    .expect("the awaited event comes");
}

fn completes(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["event"] == "complete").collect()
}

on_both_brokers!(
    a_running_job_stops_between_provider_calls_and_ends_cancelled_once,
    a_queued_job_is_cancelled_before_it_starts,
    cancels_of_ended_unknown_and_hostile_projects_are_refused,
    a_run_no_worker_carries_is_ended_by_the_hub
);

// The job is cancelled in its assets stage: no provider call starts after the cancel
// but the one in flight, the run ends with one CANCELLED complete (the last event), the
// state says so, a second cancel is 409, and the project takes a new job.
async fn a_running_job_stops_between_provider_calls_and_ends_cancelled_once(b: Backend) {
    let log = call_log_path("running");
    let hub = slow_hub(b, &log).await;
    let mut client = hub.connect("stop-me").await;
    let (status, answer) = hub.generate("stop-me", &json!({})).await;
    assert_eq!(status, 202, "{answer}");
    until(&mut client, |f| {
        f["event"] == "stage_change" && f["data"]["current_stage"] == "ASSETS_GENERATING"
    })
    .await;
    let before = calls_in(&log).len();
    let asked = Instant::now();
    let (status, answer) = cancel(&hub, "stop-me").await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["job_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("job-")),
        "{answer}"
    );
    assert_eq!(answer["project_id"], "stop-me");
    let frames = client.until_complete(PATIENCE).await;
    let took = asked.elapsed();
    let after = calls_in(&log).len();
    eprintln!(
        "cancel → CANCELLED in {took:?}; provider calls started before the cancel: {before}, after it: {}",
        after - before
    );
    assert!(
        after <= before + 1,
        "no provider call beyond the one in flight: {before} before, {after} at the end"
    );
    let ends = completes(&frames);
    assert_eq!(ends.len(), 1, "{frames:?}");
    assert_eq!(ends[0]["data"]["status"], "CANCELLED");
    assert!(
        took < Duration::from_secs(2),
        "one 100 ms call at most is waited for: {took:?}"
    );
    let state = hub.project_state("stop-me").await;
    assert_eq!(state["status"], "CANCELLED", "{state}");
    // Nothing follows the complete: the worker made no further call either.
    let (status, answer) = cancel(&hub, "stop-me").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("JOB_ENDED")),
        "{answer}"
    );
    assert_eq!(calls_in(&log).len(), after);
    let (status, answer) = hub.generate("stop-me", &json!({})).await;
    assert_eq!(status, 202, "the project is free again: {answer}");
    let _ = std::fs::remove_file(&log);
}

// One worker slot: a second project's job waits; cancelled there, it ends CANCELLED
// when the worker reaches it, with no stage started and no provider called for it.
async fn a_queued_job_is_cancelled_before_it_starts(b: Backend) {
    let log = call_log_path("queued");
    let hub = slow_hub(b, &log).await;
    let mut first = hub.connect("first").await;
    let mut waiting = hub.connect("waiting").await;
    assert_eq!(hub.generate("first", &json!({})).await.0, 202);
    until(&mut first, |f| f["event"] == "stage_change").await;
    assert_eq!(hub.generate("waiting", &json!({})).await.0, 202);
    let (status, answer) = cancel(&hub, "waiting").await;
    assert_eq!(status, 202, "{answer}");
    let before = calls_in(&log).len();
    assert_eq!(cancel(&hub, "first").await.0, 202);
    let first_frames = first.until_complete(PATIENCE).await;
    assert_eq!(completes(&first_frames)[0]["data"]["status"], "CANCELLED");
    let frames = waiting.until_complete(PATIENCE).await;
    assert_eq!(completes(&frames).len(), 1, "{frames:?}");
    assert_eq!(frames.last().unwrap()["data"]["status"], "CANCELLED");
    assert!(
        frames.iter().all(|f| f["event"] != "stage_change"),
        "the queued job never started: {frames:?}"
    );
    assert!(
        calls_in(&log).len() <= before + 1,
        "only the first job's call in flight"
    );
    let _ = std::fs::remove_file(&log);
}

// 404 for a project with no run, 409 for one whose run ended, 400 for hostile ids and
// bodies, 413 for an oversized body: none of them changes the project.
async fn cancels_of_ended_unknown_and_hostile_projects_are_refused(b: Backend) {
    // A small body limit, so the oversized body below fits in the socket's buffers: the
    // hub answers 413 without reading it, and a body of megabytes would still be being
    // written when the hub closes (a broken pipe, not an answer, seen under load).
    let hub = TestHub::start_with(b, |c| {
        c.worker = None;
        c.max_frame_bytes = 4096;
    })
    .await;
    let (status, answer) = cancel(&hub, "never-seen").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("NO_JOB")),
        "{answer}"
    );
    hub.publish(
        "done",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    let (status, answer) = cancel(&hub, "done").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("JOB_ENDED")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FAILED"),
        "{answer}"
    );
    for id in ["bad%20id", "..%2F..", &"x".repeat(65), "%00"] {
        let (status, answer) = cancel(&hub, id).await;
        assert_eq!(status, 400, "{id}: {answer}");
    }
    for body in ["[]", "{\"force\":true}", "null", "{", "\"yes\""] {
        let (status, answer) = cancel_with(&hub, "done", Some(body), None).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let huge = format!("{{\"x\":\"{}\"}}", "x".repeat(5000));
    assert_eq!(cancel_with(&hub, "done", Some(&huge), None).await.0, 413);
    assert_eq!(cancel_with(&hub, "done", Some(" {} "), None).await.0, 409);
    assert_eq!(hub.project_state("done").await["status"], "FAILED");
}

// A run the hub's workers do not carry (a backend publishing its own job under a fence,
// as a Celery task does) is ended by the hub with the one CANCELLED complete, as that
// job: the job's later events are refused as stale, even under a newer claim (the next
// task of its chain); a second cancel is 409.
async fn a_run_no_worker_carries_is_ended_by_the_hub(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.worker = None).await;
    let claim = |token| Fence {
        holder: "celery-root".into(),
        token,
    };
    let task = hub.publisher().for_claim(claim(1));
    let project = crate::support::project("celery");
    task.publish_stage_change(&project, None, Stage::Rendering, 40)
        .await
        .unwrap();
    let mut client = hub.connect("celery").await;
    let (status, answer) = cancel(&hub, "celery").await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["job_id"], Value::Null);
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(completes(&frames).len(), 1);
    assert_eq!(frames.last().unwrap()["data"]["status"], "CANCELLED");
    assert_eq!(hub.project_state("celery").await["status"], "CANCELLED");
    for token in [1, 2] {
        let refused = hub
            .publisher()
            .for_claim(claim(token))
            .publish_log(&project, LogLevel::Info, "still rendering")
            .await;
        assert!(
            matches!(refused, Err(PublishError::Broker(BrokerError::Stale(_)))),
            "{refused:?}"
        );
    }
    assert_eq!(cancel(&hub, "celery").await.0, 409);
    // A run published without a fence is ended too.
    hub.publish(
        "plain",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}}),
    )
    .await;
    assert_eq!(cancel(&hub, "plain").await.0, 202);
    assert_eq!(hub.project_state("plain").await["status"], "CANCELLED");
}

fn token(projects: &[&str], scope: Option<&str>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"projects": projects, "exp": exp});
    if let Some(scope) = scope {
        claims["scope"] = scope.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

// With access control on, a cancel needs a token covering the project with the publish
// scope (the backend) or the control scope (a watcher allowed to stop the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_needs_the_publish_or_control_scope() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.worker = None;
        c.auth_secret = Some(SECRET.into());
    })
    .await;
    let publish = token(&["a", "b"], Some("publish"));
    let running =
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}});
    for project in ["a", "b"] {
        let response = reqwest::Client::new()
            .post(hub.http(&format!("/api/v1/projects/{project}/events")))
            .bearer_auth(&publish)
            .json(&running)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    assert_eq!(cancel_with(&hub, "a", None, None).await.0, 401);
    let watch = token(&["a"], None);
    assert_eq!(cancel_with(&hub, "a", None, Some(&watch)).await.0, 403);
    let control_b = token(&["b"], Some("control"));
    assert_eq!(cancel_with(&hub, "a", None, Some(&control_b)).await.0, 403);
    let control_a = token(&["a"], Some("control"));
    assert_eq!(cancel_with(&hub, "a", None, Some(&control_a)).await.0, 202);
    assert_eq!(cancel_with(&hub, "b", None, Some(&publish)).await.0, 202);
    assert_eq!(cancel_with(&hub, "a", None, Some(&publish)).await.0, 409);
}

// `progress-hub watch` exits 3 on a cancelled run, whether it saw the complete live or
// joined after it (a snapshot of a CANCELLED run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_3_on_a_cancelled_run() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.worker = None).await;
    hub.publish(
        "w-cancel",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}}),
    )
    .await;
    let mut live = crate::support::cli::watch(&hub.ws_url("w-cancel"), true);
    let stdout = live.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    // Once the watcher has its snapshot, it is watching live.
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("\"snapshot\"") {
                return;
            }
        }
    })
    .await
    .expect("the watcher's snapshot");
    assert_eq!(cancel(&hub, "w-cancel").await.0, 202);
    let status = tokio::time::timeout(PATIENCE, live.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3), "CANCELLED exits 3");
    let late = crate::support::cli::watch(&hub.ws_url("w-cancel"), false)
        .wait_with_output()
        .await
        .unwrap();
    assert_eq!(late.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&late.stderr).contains("CANCELLED"));
}
