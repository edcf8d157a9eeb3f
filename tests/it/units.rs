//! Parallel units (issue 25 §2): the hub's own worker runs its ASSETS stage's images and
//! avatar in parallel after the voice, bounded by `--asset-concurrency`. While it runs,
//! `progress_update.data`, the late joiner's `snapshot` and the state of
//! `GET /api/v1/projects/{id}` carry `units_done` of `units_total`; progress rises
//! monotonically as units end in any order; a stage change clears the count. A takeover
//! mid-ASSETS pays only for the units not recorded; a cancel mid-ASSETS starts none of
//! the queued units.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, PATIENCE, TestHub, WsClient, call_log_path, calls_in, cli};

/// Units of the mock ASSETS stage: the voice, 15 images, the avatar.
const ASSETS_UNITS: u64 = 17;

/// A hub whose in-process worker takes `unit` per unit of mock work, runs `parallel`
/// asset calls at once, publishes every progress update (no coalescing) and logs every
/// provider call it starts to `calls`.
async fn parallel_hub(b: Backend, calls: &Path, unit: Duration, parallel: usize) -> TestHub {
    let calls = calls.to_path_buf();
    TestHub::start_with(b, move |c| {
        c.coalesce_window = Duration::ZERO;
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = unit;
            w.concurrency = 1;
            w.asset_concurrency = parallel;
            w.mock_call_log = Some(calls);
            w.retry.base = Duration::from_millis(5);
        }
    })
    .await
}

fn of<'a>(frames: &'a [Value], event: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["event"] == event).collect()
}

/// The (units_done, units_total) of a frame's data, if it carries them.
fn units(f: &Value) -> Option<(u64, u64)> {
    Some((
        f["data"]["units_done"].as_u64()?,
        f["data"]["units_total"].as_u64()?,
    ))
}

/// Reads events until one matches; returns it.
async fn until(client: &mut WsClient, wanted: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let frame = client.next_event().await;
            if wanted(&frame) {
                return frame;
            }
        }
    })
    .await
    .expect("the awaited event comes")
}

on_both_brokers!(
    parallel_assets_report_k_of_n_as_units_end,
    the_count_is_in_the_state_and_snapshot_until_another_stage,
    a_cancel_mid_assets_starts_none_of_the_queued_units,
);

// ASSETS with 4 calls at once: its four first images start before any of them ends;
// every ASSETS update says k of 17, k never going back, up to 17; no other stage's
// update carries a count; progress never goes back; exactly one complete.
async fn parallel_assets_report_k_of_n_as_units_end(b: Backend) {
    let log = call_log_path("parallel");
    let hub = parallel_hub(b, &log, Duration::from_millis(20), 4).await;
    let mut client = WsClient::connected(&hub.ws_url("fan")).await;
    assert_eq!(hub.generate("fan", &json!({})).await.0, 202);
    let frames = client.until_complete(PATIENCE).await;
    assert_eq!(of(&frames, "complete").len(), 1);
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    let updates = of(&frames, "progress_update");
    let counts: Vec<(u64, u64)> = updates
        .iter()
        .filter(|f| f["data"]["status"] == "ASSETS_GENERATING")
        .map(|f| units(f).unwrap_or_else(|| panic!("an ASSETS update without a count: {f}")))
        .collect();
    assert_eq!(
        counts.iter().map(|(done, _)| *done).collect::<Vec<_>>(),
        (1..=ASSETS_UNITS).collect::<Vec<_>>(),
        "one update per unit, k rising by one whatever the order units end in"
    );
    assert!(counts.iter().all(|(_, total)| *total == ASSETS_UNITS));
    for f in updates
        .iter()
        .filter(|f| f["data"]["status"] != "ASSETS_GENERATING")
    {
        assert_eq!(units(f), None, "only a parallel stage counts units: {f}");
    }
    let progress: Vec<u64> = updates
        .iter()
        .map(|f| f["data"]["progress"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress rises with every unit: {progress:?}"
    );
    // Parallel: images 1-4 all start (their log lines) before the first image ends (the
    // update counting 2: the voice and one image).
    let position = |wanted: &dyn Fn(&Value) -> bool| frames.iter().position(wanted).unwrap();
    let first_image_done = position(&|f| units(f).is_some_and(|(done, _)| done == 2));
    for n in 1..=4 {
        let started = position(&|f| {
            f["data"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("[{n}/15] ")))
        });
        assert!(
            started < first_image_done,
            "image {n} starts before the first image ends"
        );
    }
    let calls = calls_in(&log);
    let _ = std::fs::remove_file(&log);
    assert_eq!(calls.len(), 24, "each unit paid once: {calls:?}");
    let state = hub.project_state("fan").await;
    assert_eq!(state["status"], "COMPLETED");
    assert!(
        state.get("units_done").is_none() && state.get("units_total").is_none(),
        "the end clears the count: {state}"
    );
}

// Any publisher's count: a progress_update with units_done/units_total sets the state's,
// a late joiner's snapshot carries it, an update of the same stage without one keeps
// it, a stage change to another stage clears it. Malformed counts are refused.
async fn the_count_is_in_the_state_and_snapshot_until_another_stage(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.coalesce_window = Duration::ZERO).await;
    let update = |done: Value, total: Value| {
        json!({"event": "progress_update", "data": {"status": "ASSETS_GENERATING", "progress": 40,
            "current_stage": "assets", "estimated_remaining": null, "units_done": done, "units_total": total}})
    };
    hub.publish(
        "count",
        json!({"event": "stage_change", "data": {"previous_stage": "SCRIPT_GENERATING", "current_stage": "ASSETS_GENERATING", "progress": 10}}),
    )
    .await;
    hub.publish("count", update(json!(37), json!(120))).await;
    let state = hub.project_state("count").await;
    assert_eq!(
        (state["units_done"].as_u64(), state["units_total"].as_u64()),
        (Some(37), Some(120)),
        "{state}"
    );
    let mut late = hub.connect("count").await;
    let snapshot = until(&mut late, |f| f["event"] == "snapshot").await;
    assert_eq!(units(&snapshot), Some((37, 120)), "{snapshot}");
    hub.publish(
        "count",
        json!({"event": "progress_update", "data": {"status": "ASSETS_GENERATING", "progress": 41, "current_stage": "still assets"}}),
    )
    .await;
    let state = hub.project_state("count").await;
    assert_eq!(units(&json!({"data": state})), Some((37, 120)), "{state}");
    // A run taking the job over re-enters its stage: the count stands.
    hub.publish(
        "count",
        json!({"event": "stage_change", "data": {"previous_stage": "ASSETS_GENERATING", "current_stage": "ASSETS_GENERATING", "progress": 41}}),
    )
    .await;
    let state = hub.project_state("count").await;
    assert_eq!(units(&json!({"data": state})), Some((37, 120)), "{state}");
    hub.publish(
        "count",
        json!({"event": "stage_change", "data": {"previous_stage": "ASSETS_GENERATING", "current_stage": "RENDERING", "progress": 60}}),
    )
    .await;
    let state = hub.project_state("count").await;
    assert!(
        state.get("units_done").is_none() && state.get("units_total").is_none(),
        "another stage clears the count: {state}"
    );
    let mut later = hub.connect("count").await;
    let snapshot = until(&mut later, |f| f["event"] == "snapshot").await;
    assert_eq!(units(&snapshot), None, "{snapshot}");

    for (done, total) in [
        (json!(3), json!(2)),
        (json!(0), json!(0)),
        (json!(-1), json!(2)),
        (json!(1), json!(4_294_967_296u64)),
        (json!("1"), json!(2)),
        (json!(1.5), json!(2)),
        (json!(1), Value::Null),
        (Value::Null, json!(2)),
    ] {
        let (status, answer) = hub
            .post_event("count", &update(done.clone(), total.clone()))
            .await;
        assert_eq!(status, 422, "{done}/{total}: {answer}");
        assert!(
            answer["error"]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("data.units_")),
            "{done}/{total}: the error names the field: {answer}"
        );
    }
    let queued = json!({"event": "progress_update", "data": {"status": "QUEUED", "progress": 0,
        "current_stage": "q", "units_done": 1, "units_total": 2}});
    assert_eq!(hub.post_event("count", &queued).await.0, 422);
}

// A cancel once ASSETS runs units in parallel: the units in flight end, none of the
// queued ones starts (beyond one burst that had passed its check as the cancel came),
// the run ends CANCELLED once, and not every image was made.
async fn a_cancel_mid_assets_starts_none_of_the_queued_units(b: Backend) {
    let log = call_log_path("cancel-units");
    let hub = parallel_hub(b, &log, Duration::from_millis(100), 4).await;
    let mut client = hub.connect("halt").await;
    assert_eq!(hub.generate("halt", &json!({})).await.0, 202);
    // The voice and an image are done: four images are in flight.
    until(&mut client, |f| units(f).is_some_and(|(done, _)| done >= 2)).await;
    let response = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/halt/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    // The cancel is recorded: a unit that starts from now on had passed its cancel
    // check before (a burst of starts logs its calls when the units are first polled,
    // up to the 4 a burst has).
    let before = calls_in(&log).len();
    let frames = client.until_complete(PATIENCE).await;
    let calls = calls_in(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "cancel mid-ASSETS: {before} calls started before it, {} after",
        calls.len() - before
    );
    assert!(
        calls.len() <= before + 4,
        "no queued unit starts after the cancel (a burst that passed its check may): {before} before, {calls:?}"
    );
    let images = calls.iter().filter(|c| c.contains(" image-")).count();
    assert!(images < 15, "the queued images never started: {calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("RENDERING")));
    assert_eq!(of(&frames, "complete").len(), 1);
    assert_eq!(frames.last().unwrap()["data"]["status"], "CANCELLED");
    let state = hub.project_state("halt").await;
    assert_eq!(state["status"], "CANCELLED");
    assert!(state.get("units_done").is_none(), "{state}");
}

/// A worker on `redis_url` making 4 asset calls at once, logging its calls to `log`.
fn parallel_worker(redis_url: &str, mock_delay: &str, log: &Path) -> Child {
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
            "--asset-concurrency",
            "4",
            "--coalesce-window",
            "0s",
            "--mock-call-log",
            log.to_str().unwrap(),
        ],
    )
}

// A worker killed (SIGKILL) mid-ASSETS, four units in flight: the worker that takes the
// job over makes only the units not recorded. Every call of the run is made; a call
// made twice is one the killed worker had in flight (among the last four it started);
// the rescuer writes no script and makes no more ASSETS calls than the units the client
// had not yet seen done; its count goes on from there, and one complete ends the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_mid_assets_makes_only_the_unfinished_units() {
    let hub = TestHub::start_with(Backend::Redis, |c| c.worker = None).await;
    let url = hub.redis().url();
    let (doomed_log, rescuer_log) = (
        call_log_path("units-doomed"),
        call_log_path("units-rescuer"),
    );
    let mut doomed = parallel_worker(&url, "100ms", &doomed_log);
    let mut client = WsClient::connected(&hub.ws_url("resume-units")).await;
    assert_eq!(hub.generate("resume-units", &json!({})).await.0, 202);
    let seen = until(&mut client, |f| units(f).is_some_and(|(done, _)| done >= 5)).await;
    let (seen_done, _) = units(&seen).unwrap();
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let mut rescuer = parallel_worker(&url, "2ms", &rescuer_log);
    let frames = client.until_complete(PATIENCE).await;
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();
    let (first, second) = (calls_in(&doomed_log), calls_in(&rescuer_log));
    let _ = std::fs::remove_file(&doomed_log);
    let _ = std::fs::remove_file(&rescuer_log);
    eprintln!(
        "killed mid-ASSETS after {seen_done} units seen done: killed worker {first:?}; rescuer {second:?}"
    );

    let mut full = vec![
        "SCRIPT_GENERATING script".to_string(),
        "ASSETS_GENERATING voice".into(),
    ];
    full.extend((1..=15).map(|n| format!("ASSETS_GENERATING image-{n:02}")));
    full.push("ASSETS_GENERATING avatar".into());
    full.extend((1..=4).map(|n| format!("RENDERING part-{n}")));
    full.push("THUMBNAIL_GENERATING thumbnail".into());
    full.push("UPLOADING upload".into());
    let all: Vec<&String> = first.iter().chain(&second).collect();
    let count = |call: &str| all.iter().filter(|c| c.as_str() == call).count();
    for call in &full {
        assert!(count(call) >= 1, "{call} never called");
    }
    let in_flight: Vec<&String> = first.iter().rev().take(4).collect();
    let twice: Vec<&String> = full.iter().filter(|c| count(c) > 1).collect();
    assert!(
        twice.len() <= 4 && twice.iter().all(|c| count(c) == 2 && in_flight.contains(c)),
        "only calls in flight at the kill are made again: {twice:?}"
    );
    assert_eq!(
        all.len(),
        full.len() + twice.len(),
        "no unknown calls: {all:?}"
    );
    assert!(!second.iter().any(|c| c.starts_with("SCRIPT_GENERATING")));
    let assets_again = second
        .iter()
        .filter(|c| c.starts_with("ASSETS_GENERATING"))
        .count() as u64;
    assert!(
        assets_again <= ASSETS_UNITS - seen_done,
        "the rescuer made {assets_again} ASSETS calls; {seen_done} of {ASSETS_UNITS} were done"
    );

    assert_eq!(of(&frames, "complete").len(), 1);
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    let takeover = frames
        .iter()
        .position(|f| {
            f["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("接手"))
        })
        .expect("the rescuer says it took over");
    let after = &frames[takeover..];
    let resumed = of(after, "stage_change")[0];
    assert_eq!(resumed["data"]["previous_stage"], "ASSETS_GENERATING");
    assert_eq!(resumed["data"]["current_stage"], "ASSETS_GENERATING");
    let counts: Vec<u64> = of(after, "progress_update")
        .iter()
        .filter_map(|f| units(f).map(|(done, _)| done))
        .collect();
    assert!(
        counts.first().is_some_and(|k| *k > seen_done)
            && counts.windows(2).all(|w| w[0] < w[1])
            && counts.last() == Some(&ASSETS_UNITS),
        "the count goes on from {seen_done} up to {ASSETS_UNITS}: {counts:?}"
    );
}
