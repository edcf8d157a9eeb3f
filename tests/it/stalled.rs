//! Stalled is a state (issue 25 §5): a run under way whose project published nothing
//! for longer than the configured bound (`--stall-after`) is reported `stalled: true` by
//! `GET /api/v1/projects/{id}`, and no longer once events resume. A queued run, an
//! ended one and an unknown project are different answers.

use std::time::Duration;

use serde_json::json;

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
