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
