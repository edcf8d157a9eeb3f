//! Retry from the failure (issue 25 §4): `POST /api/v1/projects/{id}/retry` starts a
//! failed or cancelled job again from its last finished step, as a new run of the
//! project: providers are called only from the failed step onward, injected failures
//! are not carried over, and the old run's events stay fenced.

use std::path::Path;
use std::time::Duration;

use progress_hub::broker::{BrokerError, Fence};
use progress_hub::publish::PublishError;
use progress_hub::wire::event::LogLevel;
use serde_json::{Value, json};

use crate::support::{Backend, PATIENCE, TestHub, call_log_path, calls_in};

/// A hub whose worker takes `unit` a unit of mock work, retries at once, and logs every
/// provider call it starts to `calls`.
async fn logging_hub(b: Backend, calls: &Path, unit: Duration) -> TestHub {
    let calls = calls.to_path_buf();
    TestHub::start_with(b, move |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = unit;
            w.retry.base = Duration::from_millis(5);
            w.retry.cap = Duration::from_millis(20);
            w.mock_call_log = Some(calls);
        }
    })
    .await
}

async fn retry(hub: &TestHub, project: &str, body: Option<&str>) -> (u16, Value) {
    post_with(hub, &format!("/api/v1/projects/{project}/retry"), body).await
}

async fn post_with(hub: &TestHub, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(hub.http(path));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("POST retry");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

on_both_brokers!(
    a_failed_job_is_retried_from_its_failed_step,
    a_cancelled_job_is_retried_from_where_it_stopped,
    retries_of_running_completed_unknown_and_hostile_projects_are_refused
);

// The job fails for good in RENDERING (its first part); the retry calls no provider of
// the script or assets stages, starts a new run (QUEUED, a new job id) that completes,
// and the old job's events stay refused.
async fn a_failed_job_is_retried_from_its_failed_step(b: Backend) {
    let log = call_log_path("failed");
    let hub = logging_hub(b, &log, Duration::from_millis(2)).await;
    let mut client = hub.connect("again").await;
    let (status, answer) = hub
        .generate("again", &json!({"inject_failures": {"RENDERING": 10}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let old_job = answer["job_id"].as_str().unwrap().to_string();
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(frames.last().unwrap()["data"]["status"], "FAILED");
    let before = calls_in(&log).len();
    let failed_progress = hub.project_state("again").await["progress"]
        .as_u64()
        .unwrap();

    let (status, answer) = retry(&hub, "again", None).await;
    assert_eq!(status, 202, "{answer}");
    let new_job = answer["job_id"].as_str().unwrap().to_string();
    assert_ne!(new_job, old_job);
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(
        frames[0]["data"]["status"], "QUEUED",
        "a new run: {}",
        frames[0]
    );
    assert_eq!(frames[0]["data"]["job_id"], new_job.as_str());
    let end = frames.last().unwrap();
    assert_eq!(end["data"]["status"], "COMPLETED", "{end}");
    let stages: Vec<&str> = frames
        .iter()
        .filter(|f| f["event"] == "stage_change")
        .map(|f| f["data"]["current_stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["RENDERING", "THUMBNAIL_GENERATING", "UPLOADING"]);
    let first_progress = frames
        .iter()
        .find(|f| f["event"] == "stage_change")
        .unwrap()["data"]["progress"]
        .as_u64()
        .unwrap();
    assert_eq!(
        first_progress, failed_progress,
        "goes on from the work done"
    );
    let retried = calls_in(&log)[before..].to_vec();
    eprintln!("provider calls of the retry: {retried:?}");
    assert_eq!(
        retried,
        [
            "RENDERING part-1",
            "RENDERING part-2",
            "RENDERING part-3",
            "RENDERING part-4",
            "THUMBNAIL_GENERATING thumbnail",
            "UPLOADING upload",
        ],
        "only the failed step onward, once each: injected failures are not carried over"
    );
    let stale = hub
        .publisher()
        .for_claim(Fence {
            holder: old_job,
            token: 1,
        })
        .publish_log(&crate::support::project("again"), LogLevel::Info, "old run")
        .await;
    assert!(
        matches!(stale, Err(PublishError::Broker(BrokerError::Stale(_)))),
        "{stale:?}"
    );
    let (status, answer) = retry(&hub, "again", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("NOT_RETRYABLE")),
        "a completed run is not retried: {answer}"
    );
    let _ = std::fs::remove_file(&log);
}

// Cancelled in its assets stage, the job is retried: no script is written again, and
// the new run completes.
async fn a_cancelled_job_is_retried_from_where_it_stopped(b: Backend) {
    let log = call_log_path("cancelled");
    // Slow enough that the cancel lands in the assets stage (about 30 units remain).
    let hub = logging_hub(b, &log, Duration::from_millis(50)).await;
    let mut client = hub.connect("stopped").await;
    assert_eq!(hub.generate("stopped", &json!({})).await.0, 202);
    tokio::time::timeout(PATIENCE, async {
        while client.next_event().await["data"]["current_stage"] != "ASSETS_GENERATING" {}
    })
    .await
    .expect("the assets stage");
    let (status, answer) = post_with(&hub, "/api/v1/projects/stopped/cancel", None).await;
    assert_eq!(status, 202, "{answer}");
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(frames.last().unwrap()["data"]["status"], "CANCELLED");
    let before = calls_in(&log).len();
    assert_eq!(retry(&hub, "stopped", None).await.0, 202);
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    let retried = calls_in(&log)[before..].to_vec();
    assert!(
        retried.iter().all(|c| !c.starts_with("SCRIPT_GENERATING")),
        "the script is not written again: {retried:?}"
    );
    assert_eq!(retried.last().map(String::as_str), Some("UPLOADING upload"));
    let _ = std::fs::remove_file(&log);
}

// 404 for a project with no run, 409 while a job runs or after one completed, 400 for
// hostile ids, 422 for a bad body (as generate's).
async fn retries_of_running_completed_unknown_and_hostile_projects_are_refused(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.worker = None).await;
    let (status, answer) = retry(&hub, "never-seen", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("NO_JOB")),
        "{answer}"
    );
    assert_eq!(hub.generate("queued", &json!({})).await.0, 202);
    let (status, answer) = retry(&hub, "queued", None).await;
    assert_eq!(status, 409, "{answer}");
    hub.publish(
        "done",
        json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtube.com/watch?v=x"}}),
    )
    .await;
    let (status, answer) = retry(&hub, "done", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("NOT_RETRYABLE")),
        "{answer}"
    );
    for id in ["bad%20id", "..%2F..", &"x".repeat(65)] {
        assert_eq!(retry(&hub, id, None).await.0, 400, "{id}");
    }
    hub.publish(
        "failed",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    for body in [
        "[]",
        "{\"topic\": 3}",
        "{\"nope\": 1}",
        "{\"inject_failures\": {\"RENDERING\": 99}}",
        "{",
    ] {
        let (status, answer) = retry(&hub, "failed", Some(body)).await;
        assert_eq!(status, 422, "{body}: {answer}");
    }
    assert_eq!(
        hub.project_state("failed").await["status"],
        "FAILED",
        "nothing changed"
    );
    let (status, answer) = retry(&hub, "failed", Some("{\"topic\": \"again\"}")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(hub.project_state("failed").await["status"], "QUEUED");
}
