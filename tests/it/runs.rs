//! Runs (issue 23 §1): accepting a job starts a new run in the project's state
//! (`QUEUED`, its job id and queue position, progress 0, no link), live watchers learn
//! it, and a watcher joining while the job waits is never told the last run's end.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient, cli, log_event};

/// A hub with no worker: an accepted job waits in the queue as long as the test needs.
async fn hub_without_worker(backend: Backend) -> TestHub {
    TestHub::start_with(backend, |c| c.worker = None).await
}

fn completed() -> Value {
    json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtube.com/watch?v=old"}})
}

async fn state_of(hub: &TestHub, project: &str) -> Value {
    reqwest::get(hub.http(&format!("/api/v1/projects/{project}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

on_both_brokers!(
    an_accepted_job_starts_a_new_run,
    a_log_after_complete_does_not_keep_the_old_status
);

// The reproduction of issue 23 §1: a project that completed once is generated again
// while the job waits; the state, a late joiner's snapshot and a live watcher all say
// QUEUED with the new job, never the last run's COMPLETED and link.
async fn an_accepted_job_starts_a_new_run(backend: Backend) {
    let hub = hub_without_worker(backend).await;
    hub.publish("again", completed()).await;
    let mut live = WsClient::connected(&hub.ws_url("again")).await;
    assert_eq!(live.next_event().await["data"]["status"], "COMPLETED");

    let (status, answer) = hub.generate("again", &json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_str().unwrap().to_string();

    let state = state_of(&hub, "again").await;
    assert_eq!(state["status"], "QUEUED", "{state}");
    assert_eq!(state["job_id"], job_id.as_str(), "{state}");
    assert_eq!(state["queue_position"], 1, "{state}");
    assert_eq!(state["progress"], 0, "{state}");
    assert!(state.get("youtube_url").is_none(), "{state}");

    let update = live.next_event().await;
    assert_eq!(update["event"], "progress_update", "{update}");
    assert_eq!(update["data"]["status"], "QUEUED", "{update}");
    assert_eq!(update["data"]["progress"], 0, "{update}");
    assert_eq!(update["data"]["job_id"], job_id.as_str(), "{update}");
    assert_eq!(update["data"]["queue_position"], 1, "{update}");

    let mut late = WsClient::connected(&hub.ws_url("again")).await;
    let snapshot = late.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["data"]["status"], "QUEUED", "{snapshot}");
    assert_eq!(snapshot["data"]["job_id"], job_id.as_str(), "{snapshot}");
    assert!(snapshot["data"].get("youtube_url").is_none(), "{snapshot}");
}

// A run ends with `complete`; the next event starts a new one: its state does not keep
// the ended run's status (nor its progress or link).
async fn a_log_after_complete_does_not_keep_the_old_status(backend: Backend) {
    let hub = support::fast_hub(backend).await;
    hub.publish("after", completed()).await;
    hub.publish("after", log_event("a new run begins")).await;
    let state = state_of(&hub, "after").await;
    assert_ne!(state["status"], "COMPLETED", "{state}");
    assert_eq!(state["progress"], 0, "{state}");
    assert!(state.get("youtube_url").is_none(), "{state}");
}

// `progress-hub watch` of a project generated again while its job waits (no worker
// yet): it follows the new run to that run's `complete`, instead of exiting "completed"
// at once on the last run's snapshot (issue 23 §1: 0.00 s, then the new job failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_queued_run_to_its_own_complete() {
    let hub = TestHub::start_with(Backend::Redis, |c| c.worker = None).await;
    hub.publish("rerun", completed()).await;
    let (status, answer) = hub.generate("rerun", &json!({})).await;
    assert_eq!(status, 202, "{answer}");

    let mut watch = cli::watch(&hub.ws_url("rerun"), true);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Option<Value> {
        let line = tokio::time::timeout(PATIENCE * 3, lines.next_line())
            .await
            .expect("watch output in time")
            .unwrap()?;
        Some(serde_json::from_str(&line).expect("--json prints JSON frames"))
    };
    assert_eq!(next().await.unwrap()["event"], "connected");
    let snapshot = next().await.unwrap();
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["data"]["status"], "QUEUED", "{snapshot}");

    // Only now a worker takes the job: watch must still be there for its events.
    let _worker = cli::Killed(cli::worker(&hub.redis().url(), &["--mock-delay", "2ms"]));
    let mut frames = Vec::new();
    while let Some(frame) = next().await {
        frames.push(frame);
    }
    let code = tokio::time::timeout(PATIENCE, watch.wait())
        .await
        .unwrap()
        .unwrap()
        .code();
    assert_eq!(code, Some(0));
    assert!(
        frames.iter().any(|f| f["event"] == "stage_change"),
        "the new run's stages: {frames:?}"
    );
    let last = frames.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["data"]["status"].as_str()),
        (Some("complete"), Some("COMPLETED")),
        "{last}"
    );
    assert_ne!(
        last["data"]["youtube_url"],
        "https://youtube.com/watch?v=old"
    );
}

on_both_brokers!(a_queued_update_never_resets_a_run_under_way);

// The job's worker may publish before the hub's QUEUED update lands (it took the job at
// once): that update is refused, and the run under way keeps its state.
async fn a_queued_update_never_resets_a_run_under_way(backend: Backend) {
    use progress_hub::broker::{BrokerError, Fence};
    use progress_hub::publish::PublishError;
    use progress_hub::wire::Event;

    let hub = hub_without_worker(backend).await;
    let project = support::project("quick");
    let worker = hub.publisher().for_claim(Fence {
        holder: "job-quick".into(),
        token: 1,
    });
    let stage: Event = serde_json::from_value(json!({"event": "stage_change", "data": {
        "previous_stage": "INITIALIZED", "current_stage": "SCRIPT_GENERATING", "progress": 5
    }}))
    .unwrap();
    worker.publish(&project, stage).await.unwrap();
    let queued: Event = serde_json::from_value(json!({"event": "progress_update", "data": {
        "status": "QUEUED", "progress": 0, "current_stage": "queued",
        "job_id": "job-quick", "queue_position": 1
    }}))
    .unwrap();
    let refused = hub.publisher().publish(&project, queued).await;
    assert!(
        matches!(refused, Err(PublishError::Broker(BrokerError::Stale(_)))),
        "{refused:?}"
    );
    let state = state_of(&hub, "quick").await;
    assert_eq!(state["status"], "SCRIPT_GENERATING", "{state}");
    assert_eq!(state["progress"], 5, "{state}");
}
