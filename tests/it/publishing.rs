//! Publishing: the publish path's ids, monotonic progress, coalescing, idempotency keys
//! and held updates (flushed after a failure and at shutdown) — against both brokers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, Backend, TestHub, WsClient, layout, log_event, progress};

// Published events reach watchers with an id; the state follows.
async fn publish_path_delivers_frames_with_ids(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    let id1 = hub.publish("p", log_event("one")).await;
    let id2 = hub.publish("p", log_event("two")).await;
    let f1 = client.next_event().await;
    let f2 = client.next_event().await;
    assert_eq!(
        (f1["id"].as_str(), f1["data"]["message"].as_str()),
        (Some(id1.as_str()), Some("one"))
    );
    assert_eq!(f2["id"], id2.as_str());
    let (epoch1, seq1) = id1.split_once(':').unwrap();
    let (epoch2, seq2) = id2.split_once(':').unwrap();
    assert_eq!(epoch1, epoch2);
    assert_eq!(
        seq2.parse::<u64>().unwrap(),
        seq1.parse::<u64>().unwrap() + 1
    );
    assert!(f1["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
}

// Progress never goes backwards within a run: a lower value is clamped to the highest
// so far. A new run (after complete) starts again from the bottom.
async fn progress_is_monotonic_within_a_run(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    hub.publish("p", progress(50)).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the coalescing window
    hub.publish("p", progress(30)).await;
    assert_eq!(client.next_event().await["data"]["progress"], 50);
    let clamped = client.next_event().await;
    assert_eq!(
        clamped["data"]["progress"], 50,
        "30 after 50 is clamped to 50"
    );
    assert_eq!(clamped["data"]["status"], "RENDERING");
    hub.publish("p", json!({"event": "stage_change", "data": {"previous_stage": "RENDERING", "current_stage": "UPLOADING", "progress": 10}})).await;
    assert_eq!(client.next_event().await["data"]["progress"], 50);
    hub.publish(
        "p",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    client.next_event().await;
    // A new run.
    hub.publish("p", json!({"event": "stage_change", "data": {"current_stage": "SCRIPT_GENERATING", "progress": 5}})).await;
    assert_eq!(client.next_event().await["data"]["progress"], 5);
    let state: Value = reqwest::get(hub.http("/api/v1/projects/p"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["progress"], 5);
    assert_eq!(state["status"], "SCRIPT_GENERATING");
}

// 200 progress updates within a second become a few frames; the newest is always
// delivered, and nothing else is ever coalesced.
async fn progress_updates_are_coalesced_but_the_last_is_delivered(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    let publisher = hub.publisher();
    let project = progress_hub::wire::ProjectId::parse("p").unwrap();
    let started = tokio::time::Instant::now();
    let mut coalesced = 0;
    for i in 1..=200u32 {
        let p = (i / 2) as u8;
        let published = publisher
            .publish_progress(
                &project,
                progress_hub::wire::Stage::Rendering,
                p,
                &format!("step {i}"),
                Some(10),
            )
            .await
            .unwrap();
        if published.id().is_none() {
            coalesced += 1;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let elapsed = started.elapsed();
    assert!(coalesced > 150, "most updates were held ({coalesced})");
    // The window's survivor goes out at the end of the window, without any other event.
    let mut frames = Vec::new();
    loop {
        let frame = client.next_event().await;
        let last = frame["data"]["current_stage"] == "step 200";
        frames.push(frame);
        if last {
            break;
        }
    }
    let allowed = (elapsed.as_millis() / 500 + 2) as usize;
    assert!(
        frames.len() <= allowed,
        "{} frames in {elapsed:?}",
        frames.len()
    );
    let progresses: Vec<u64> = frames
        .iter()
        .map(|f| f["data"]["progress"].as_u64().unwrap())
        .collect();
    assert!(
        progresses.windows(2).all(|w| w[0] <= w[1]),
        "{progresses:?}"
    );
    assert_eq!(*progresses.last().unwrap(), 100);
    // Logs are never held, and a held update goes out before the log that follows it.
    publisher
        .publish_progress(
            &project,
            progress_hub::wire::Stage::Uploading,
            100,
            "held",
            None,
        )
        .await
        .unwrap();
    publisher
        .publish_log(&project, progress_hub::wire::event::LogLevel::Info, "after")
        .await
        .unwrap();
    let first = client.next_event().await;
    let second = client.next_event().await;
    assert_eq!(first["data"]["current_stage"], "held");
    assert_eq!(second["data"]["message"], "after");
}

// A publisher that did not hear the answer (timeout, 503 during a failover) retries
// with the same Idempotency-Key: the event is in the history once, and the retry gets
// the first publish's id. A key is scoped to its project; a malformed key is a 400.
async fn a_retried_publish_with_an_idempotency_key_lands_once(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("retry")).await;
    let post = |project: &'static str, key: &'static str, message: &'static str| {
        let url = hub.http(&format!("/api/v1/projects/{project}/events"));
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("idempotency-key", key)
                .json(&log_event(message))
                .send()
                .await
                .expect("POST events");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, first) = post("retry", "order-42", "once").await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post("retry", "order-42", "once").await;
    assert_eq!(
        (status, &again["id"]),
        (202, &first["id"]),
        "the retry gets the same id"
    );
    let (_, other_project) = post("elsewhere", "order-42", "once").await;
    assert_ne!(
        other_project["id"],
        Value::Null,
        "a key is scoped to its project"
    );
    let (_, next) = post("retry", "order-43", "next").await;
    assert_ne!(next["id"], first["id"]);
    for key in ["", "has space", "slash/key", &"k".repeat(129)] {
        let response = reqwest::Client::new()
            .post(hub.http("/api/v1/projects/retry/events"))
            .header("idempotency-key", key)
            .json(&log_event("refused"))
            .send()
            .await
            .expect("POST events");
        assert_eq!(response.status().as_u16(), 400, "key {key:?}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            body["error"]["code"], "INVALID_IDEMPOTENCY_KEY",
            "key {key:?}"
        );
    }
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let frame = client.next_event().await;
        if frame["event"] == "log" {
            messages.push(frame["data"]["message"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        messages,
        ["once", "next"],
        "the retried event is delivered once"
    );
}

fn progress_event(p: u8, text: &str) -> progress_hub::wire::Event {
    progress_hub::wire::Event::from_json(
        json!({"event": "progress_update", "data": {"status": "RENDERING", "progress": p, "current_stage": text}})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
}

// A held progress_update whose flush fails (Redis down at the end of the window) is
// kept and published once Redis is back: `coalesced` is a promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_update_survives_a_failed_flush() {
    let mut hub = TestHub::start_with(Backend::Redis, |c| {
        c.coalesce_window = Duration::from_millis(300);
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("held")).await;
    let project = progress_hub::wire::ProjectId::parse("held").unwrap();
    let publisher = hub.publisher().clone();
    let first = publisher
        .publish(&project, progress_event(10, "first"))
        .await
        .unwrap();
    assert!(first.id().is_some());
    assert_eq!(client.next_event().await["data"]["current_stage"], "first");
    let retries = support::metric(&hub, "hub_progress_flush_retries_total").await;
    let held = publisher
        .publish(&project, progress_event(20, "held"))
        .await
        .unwrap();
    assert!(held.id().is_none(), "held by coalescing");
    hub.redis.as_mut().unwrap().kill();
    support::eventually("the flush failed and will be retried", || async {
        support::metric(&hub, "hub_progress_flush_retries_total").await > retries
    })
    .await;
    hub.redis.as_mut().unwrap().restart().await;
    loop {
        let frame = client.next_event().await;
        if frame["event"] == "progress_update" {
            assert_eq!(frame["data"]["current_stage"], "held", "{frame}");
            assert_eq!(frame["data"]["progress"], 20);
            break;
        }
    }
}

// Shutdown waits for held updates: one answered `coalesced` is in Redis when the hub
// has stopped, though its window had not ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_held_updates() {
    let mut hub = TestHub::start_with(Backend::Redis, |c| {
        c.coalesce_window = Duration::from_secs(2);
    })
    .await;
    let project = progress_hub::wire::ProjectId::parse("drain").unwrap();
    let publisher = hub.publisher().clone();
    publisher
        .publish(&project, progress_event(10, "first"))
        .await
        .unwrap();
    let held = publisher
        .publish(&project, progress_event(30, "held"))
        .await
        .unwrap();
    assert!(held.id().is_none(), "held by coalescing");
    let redis = hub.redis.take().unwrap();
    hub.stop().await;
    let stage: String = redis::cmd("HGET")
        .arg(layout::state_key(&support::project("drain")))
        .arg("current_stage")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(stage, "held", "flushed before the hub stopped");
}

on_both_brokers!(
    publish_path_delivers_frames_with_ids,
    progress_is_monotonic_within_a_run,
    progress_updates_are_coalesced_but_the_last_is_delivered,
    a_retried_publish_with_an_idempotency_key_lands_once,
);
