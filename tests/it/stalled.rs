//! Stalled is a state (issue 25 §5): a run under way whose project published nothing
//! for longer than the configured bound (`--stall-after`) is reported `stalled: true` by
//! `GET /api/v1/projects/{id}`, and no longer once events resume. A queued run, an
//! ended one and an unknown project are different answers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::WsClient;
use crate::support::{Backend, TestHub, eventually, log_event};

on_both_brokers!(a_silent_running_job_is_stalled_until_it_publishes_again);

async fn a_silent_running_job_is_stalled_until_it_publishes_again(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.worker = None;
        c.stall_after = Duration::from_millis(300);
    })
    .await;
    hub.publish(
        "ended",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    assert_eq!(hub.generate("waiting", &json!({})).await.0, 202);
    hub.publish(
        "silent",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}}),
    )
    .await;
    assert_eq!(hub.project_state("silent").await["stalled"], false);
    eventually("the silent run to be reported stalled", || async {
        hub.project_state("silent").await["stalled"] == true
    })
    .await;
    // Older than the bound too, yet not running: never stalled.
    assert_eq!(hub.project_state("ended").await["stalled"], false);
    let waiting = hub.project_state("waiting").await;
    assert_eq!(
        (waiting["status"].as_str(), &waiting["stalled"]),
        (Some("QUEUED"), &json!(false))
    );
    hub.publish("silent", log_event("still rendering")).await;
    assert_eq!(
        hub.project_state("silent").await["stalled"],
        false,
        "events resumed"
    );
}

/// The next frame named `event`, skipping the others.
async fn next_of(client: &mut WsClient, event: &str) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame["event"] == event {
            return frame;
        }
    }
}

on_both_brokers!(live_watchers_hear_a_stall_and_its_end);

// A watcher hears `stalled: true` once the running job has been silent for the bound
// (no id: not in the history), `stalled: false` before the event that ends the silence,
// and a session that joins a stalled project hears it at once. A queued one never does.
async fn live_watchers_hear_a_stall_and_its_end(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.worker = None;
        c.stall_after = Duration::from_millis(300);
    })
    .await;
    hub.publish(
        "silent",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}}),
    )
    .await;
    let mut client = WsClient::connected(&hub.ws_url("silent")).await;
    let stalled = next_of(&mut client, "stalled").await;
    assert_eq!(stalled["data"]["stalled"], true, "{stalled}");
    assert_eq!(stalled["data"]["reason"], "silent", "{stalled}");
    assert!(stalled.get("id").is_none(), "no id: {stalled}");
    let state = hub.project_state("silent").await;
    assert_eq!(stalled["data"]["since"], state["updated_at"], "{stalled}");
    assert!(stalled["data"]["timestamp"].is_string(), "{stalled}");
    assert_eq!(state["stalled"], true);

    let mut late = WsClient::connected(&hub.ws_url("silent")).await;
    assert_eq!(next_of(&mut late, "stalled").await["data"]["stalled"], true);

    hub.publish("silent", log_event("still rendering")).await;
    for client in [&mut client, &mut late] {
        let resumed = client.next_event().await;
        assert_eq!(resumed["event"], "stalled", "{resumed}");
        assert_eq!(resumed["data"]["stalled"], false, "{resumed}");
        assert_eq!(client.next_event().await["event"], "log", "then the event");
    }
    // Silent again: stalled again, since the new last event.
    let again = next_of(&mut client, "stalled").await;
    assert_eq!(again["data"]["stalled"], true, "{again}");
    assert_ne!(again["data"]["since"], stalled["data"]["since"]);

    // A queued run silent for longer is not stalled: its watcher hears nothing of it.
    assert_eq!(hub.generate("waiting", &json!({})).await.0, 202);
    let mut queued = WsClient::connected(&hub.ws_url("waiting")).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    hub.publish("waiting", log_event("marker")).await;
    let next = queued.next_event().await;
    assert_eq!(next["event"], "snapshot", "{next}");
    let next = queued.next_event().await;
    assert_eq!(next["event"], "log", "no stalled before it: {next}");
}

/// The data of the next `stalled` frame, and how long it took to come.
async fn next_stall(client: &mut WsClient) -> (Value, Duration) {
    let asked = std::time::Instant::now();
    let frame = next_of(client, "stalled").await;
    (frame["data"].clone(), asked.elapsed())
}

// The hub's own job queue knows a worker died: its job's lease (`--claim-idle`) ran out
// without renewal. A `progress-hub worker` SIGKILLed mid-job, no other worker: watchers
// hear `stalled` with reason `worker_lost` within about the lease, long before the
// silence bound; the state and the `job.stalled` webhook say so. A new worker takes
// the job over: `stalled: false` before its first event, and the job completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_stalled_worker_lost_until_another_takes_it_over() {
    let lease = Duration::from_secs(2);
    let silence = Duration::from_secs(60);
    let receiver = crate::support::receiver::Receiver::start().await;
    let webhooks = crate::webhooks::webhooks_to(&receiver);
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.worker = None;
        c.claim_idle = lease;
        c.stall_after = silence;
        c.webhooks = Some(webhooks);
    })
    .await;
    let url = hub.redis().url();
    let worker = |delay: &str| {
        crate::support::cli::worker(
            &url,
            &[
                "--mock-delay",
                delay,
                "--retry-backoff",
                "5ms",
                "--claim-idle",
                "2s",
                "--concurrency",
                "1",
            ],
        )
    };
    let mut doomed = worker("50ms");
    let mut client = WsClient::connected(&hub.ws_url("orphan")).await;
    assert_eq!(hub.generate("orphan", &json!({})).await.0, 202);
    loop {
        let frame = client.next_event().await;
        assert_ne!(frame["event"], "stalled", "alive: {frame}");
        if frame["data"]["current_stage"] == "ASSETS_GENERATING" {
            break;
        }
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let (stalled, took) = next_stall(&mut client).await;
    assert_eq!(stalled["stalled"], true, "{stalled}");
    assert_eq!(stalled["reason"], "worker_lost", "{stalled}");
    // The lease, a tick of the checker (a quarter lease) and slack for a loaded machine:
    // far below the silence bound.
    assert!(
        took < lease * 3,
        "told {took:?} after the kill, lease {lease:?}"
    );
    let state = hub.project_state("orphan").await;
    assert_eq!(
        (&state["stalled"], &state["stall_reason"]),
        (&json!(true), &json!("worker_lost")),
        "{state}"
    );
    assert_eq!(stalled["since"], state["updated_at"], "{stalled}");
    let told = receiver
        .until("a job.stalled", |got| {
            got.iter().any(|g| g.body["type"] == "job.stalled")
        })
        .await;
    let told: Vec<&Value> = told
        .iter()
        .filter(|g| g.body["type"] == "job.stalled")
        .map(|g| &g.body["data"])
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["reason"], "worker_lost", "{told:?}");
    assert_eq!(told[0]["project_id"], "orphan", "{told:?}");

    let mut rescuer = worker("2ms");
    let frames = client.until_complete(crate::support::PATIENCE).await;
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();
    assert_eq!(frames[0]["event"], "stalled", "{:?}", frames[0]);
    assert_eq!(
        (&frames[0]["data"]["stalled"], &frames[0]["data"]["reason"]),
        (&json!(false), &json!("worker_lost")),
        "ended before the rescuer's first event"
    );
    assert!(
        frames[1..].iter().all(|f| f["event"] != "stalled"),
        "{frames:?}"
    );
    let completes: Vec<&Value> = frames.iter().filter(|f| f["event"] == "complete").collect();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0]["data"]["status"], "COMPLETED");
    let state = hub.project_state("orphan").await;
    assert_eq!(state["stalled"], false, "{state}");
    assert!(state.get("stall_reason").is_none(), "{state}");
    hub.publish("orphan", log_event("sentinel")).await;
    assert_eq!(
        client.next_event().await["data"]["message"],
        "sentinel",
        "no second complete"
    );
}

on_both_brokers!(each_stage_is_stalled_by_its_own_past_runs);

// Bounds per stage, measured from past runs (issue 25 §5): after three runs in which
// RENDERING took about 2.2 s (silent throughout) and SCRIPT_GENERATING a moment, a
// run silent in RENDERING for longer than the global bound (2 s) is not stalled (its
// bound is three times its longest run), while a run silent in SCRIPT_GENERATING is
// stalled once silent for the floor (200 ms; its runs took two publishes' time, under
// a third of the global bound even on a loaded machine), long before the global bound.
async fn each_stage_is_stalled_by_its_own_past_runs(b: Backend) {
    let global = Duration::from_secs(2);
    let floor = Duration::from_millis(200);
    let hub = TestHub::start_with(b, |c| {
        c.worker = None;
        c.stall_after = global;
        c.stall_floor = floor;
    })
    .await;
    let stage = |current: &str, previous: Option<&str>| json!({"event": "stage_change", "data": {"current_stage": current, "previous_stage": previous, "progress": 10}});
    // The hub times the stages of the runs it fans out: they need watchers.
    let past = ["past-1", "past-2", "past-3"];
    let mut watching = Vec::new();
    for project in past {
        watching.push(WsClient::connected(&hub.ws_url(project)).await);
    }
    hub.await_watched_projects(past.len()).await;
    for project in past {
        hub.publish(project, stage("SCRIPT_GENERATING", None)).await;
        hub.publish(project, stage("RENDERING", Some("SCRIPT_GENERATING")))
            .await;
    }
    tokio::time::sleep(global + Duration::from_millis(200)).await;
    for project in past {
        hub.publish(
            project,
            json!({"event": "complete", "data": {"status": "COMPLETED"}}),
        )
        .await;
    }

    let mut long = WsClient::connected(&hub.ws_url("long")).await;
    let mut short = WsClient::connected(&hub.ws_url("short")).await;
    hub.publish("long", stage("SCRIPT_GENERATING", None)).await;
    hub.publish("long", stage("RENDERING", Some("SCRIPT_GENERATING")))
        .await;
    let rendering = std::time::Instant::now();
    hub.publish("short", stage("SCRIPT_GENERATING", None)).await;
    let (stalled, took) = next_stall(&mut short).await;
    assert_eq!(
        (&stalled["stalled"], &stalled["reason"]),
        (&json!(true), &json!("silent")),
        "{stalled}"
    );
    assert!(
        took < global,
        "the quick stage is stalled at its own bound, {took:?}, not the global {global:?}"
    );
    assert_eq!(hub.project_state("short").await["stalled"], true);

    // RENDERING silent for longer than the global bound: within its own.
    tokio::time::sleep_until((rendering + global + Duration::from_millis(500)).into()).await;
    assert_eq!(hub.project_state("long").await["stalled"], false);
    hub.publish("long", log_event("marker")).await;
    loop {
        let next = long.next_event().await;
        assert_ne!(next["event"], "stalled", "{next}");
        if next["event"] == "log" {
            break;
        }
    }
}

// A run told stalled `silent` (a silence bound shorter than the lease) is told again
// once its worker's lease ran out: `stalled: true` with `worker_lost`, to the watchers
// and to the webhook (`stall.lua` tells a silent stall once more as worker_lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stall_is_told_again_when_its_worker_turns_out_lost() {
    let receiver = crate::support::receiver::Receiver::start().await;
    let webhooks = crate::webhooks::webhooks_to(&receiver);
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.worker = None;
        c.claim_idle = Duration::from_secs(2);
        c.stall_after = Duration::from_millis(500);
        c.webhooks = Some(webhooks);
    })
    .await;
    let mut doomed = crate::support::cli::worker(
        &hub.redis().url(),
        &["--mock-delay", "50ms", "--claim-idle", "2s"],
    );
    let mut client = WsClient::connected(&hub.ws_url("orphan")).await;
    assert_eq!(hub.generate("orphan", &json!({})).await.0, 202);
    while client.next_event().await["data"]["current_stage"] != "ASSETS_GENERATING" {}
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    // The stalled frames until the worker_lost one (a slow step may have been told
    // silent before the kill too).
    let mut told = Vec::new();
    loop {
        let stalled = next_of(&mut client, "stalled").await["data"].clone();
        let lost = stalled["reason"] == "worker_lost";
        told.push(stalled);
        if lost {
            break;
        }
    }
    let [.., silent, lost] = told.as_slice() else {
        panic!("told silent first: {told:?}");
    };
    assert_eq!(
        (&silent["stalled"], &silent["reason"]),
        (&json!(true), &json!("silent")),
        "{told:?}"
    );
    assert_eq!(lost["stalled"], true, "{told:?}");
    assert_eq!(silent["since"], lost["since"], "one stall: {told:?}");
    // The same stall, told silent then worker_lost (delivered in either order).
    let told_as = |got: &[crate::support::receiver::Got], reason: &str| {
        got.iter().any(|g| {
            g.body["type"] == "job.stalled"
                && g.body["data"]["reason"] == reason
                && g.body["data"]["since"] == lost["since"]
        })
    };
    let got = receiver
        .until("job.stalled silent, then worker_lost", |got| {
            told_as(got, "silent") && told_as(got, "worker_lost")
        })
        .await;
    let lost_told = got
        .iter()
        .filter(|g| g.body["data"]["reason"] == "worker_lost")
        .count();
    assert_eq!(lost_told, 1, "told worker_lost once: {got:?}");
}
