//! Lossless progress: the publish path, ids and epochs, late-join snapshots, resume,
//! progress rules, coalescing, the HTTP publish API and SSE — against both brokers.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Backend, PATIENCE, TestHub, WsClient, layout, log_event};

fn progress(p: u8) -> Value {
    json!({"event": "progress_update", "data": {
        "status": "RENDERING", "progress": p, "current_stage": "正在渲染影片...", "estimated_remaining": 100
    }})
}

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

// Late join: connected, then snapshot, then live; also after `complete`.
async fn late_join_gets_snapshot_then_live(b: Backend) {
    let hub = TestHub::start(b).await;
    hub.publish("p", json!({"event": "stage_change", "data": {"previous_stage": null, "current_stage": "RENDERING", "progress": 55}})).await;
    let last = hub.publish("p", progress(60)).await;
    let mut client = WsClient::connect(&hub.ws_url("p")).await;
    let connected = client.next_event().await;
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["data"]["resumed"], false);
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    let s = &snapshot["data"];
    assert_eq!(s["status"], "RENDERING");
    assert_eq!(s["progress"], 60);
    assert_eq!(s["current_stage"], "正在渲染影片...");
    assert_eq!(s["estimated_remaining"], 100);
    assert_eq!(s["last_event_id"], last.as_str());
    assert!(s["updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(s.get("youtube_url").is_none());
    let live = hub.publish("p", log_event("live")).await;
    assert_eq!(client.next_event().await["id"], live.as_str());

    hub.publish("p", json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtube.com/watch?v=abc123"}})).await;
    let mut later = WsClient::connected(&hub.ws_url("p")).await;
    let snapshot = later.next_event().await;
    assert_eq!(snapshot["data"]["status"], "COMPLETED");
    assert_eq!(snapshot["data"]["progress"], 100);
    assert_eq!(
        snapshot["data"]["youtube_url"],
        "https://youtube.com/watch?v=abc123"
    );
    let state: Value = reqwest::get(hub.http("/api/v1/projects/p"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["project_id"], "p");
    assert_eq!(state["youtube_url"], "https://youtube.com/watch?v=abc123");
}

// A client that misses 100 events gets exactly those, in order, on resume; then live.
async fn resume_after_missing_100_events(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    hub.publish("p", log_event("before")).await;
    let seen = client.next_event().await;
    let last = seen["id"].as_str().unwrap().to_string();
    client.close().await;
    let mut missed = Vec::new();
    for i in 0..100 {
        missed.push(hub.publish("p", log_event(&format!("missed {i}"))).await);
    }
    let (mut client, connected) = WsClient::resume(&hub.ws_url("p"), &last).await;
    assert_eq!(connected["data"]["resumed"], true);
    assert_eq!(connected["data"]["recovered"], true);
    for (i, id) in missed.iter().enumerate() {
        let frame = client.next_event().await;
        assert_eq!(frame["id"], id.as_str(), "event {i}");
        assert_eq!(frame["data"]["message"], format!("missed {i}"));
    }
    let live = hub.publish("p", log_event("live")).await;
    let frame = client.next_event().await;
    assert_eq!(
        frame["id"],
        live.as_str(),
        "no duplicate, no gap after the replay"
    );
}

// Resume while a publisher publishes throughout: across many reconnects, every event
// arrives exactly once, in order.
async fn resume_racing_with_live_publishing(b: Backend) {
    let hub = TestHub::start(b).await;
    const TOTAL: usize = 400;
    let publisher = hub.publisher().clone();
    let project = progress_hub::wire::ProjectId::parse("race").unwrap();
    let publishing = tokio::spawn(async move {
        for i in 0..TOTAL {
            let event = progress_hub::wire::Event::from_json(
                log_event(&format!("{i}")).to_string().as_bytes(),
            )
            .unwrap();
            publisher.publish(&project, event).await.unwrap();
            if i % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut got: Vec<usize> = Vec::new();
    let mut last: Option<String> = None;
    let mut round = 0;
    while got.len() < TOTAL {
        round += 1;
        let mut client = match &last {
            None => WsClient::connected(&hub.ws_url("race")).await,
            Some(id) => {
                let (client, connected) = WsClient::resume(&hub.ws_url("race"), id).await;
                assert_eq!(connected["data"]["recovered"], true, "round {round}");
                client
            }
        };
        // Read a few events, then drop the connection mid-stream.
        for _ in 0..(7 + round % 13) {
            if got.len() == TOTAL {
                break;
            }
            let frame = client.next_event().await;
            if frame["event"] == "snapshot" {
                // First connect joined late: the snapshot's id is the position.
                let id = frame["data"]["last_event_id"].as_str().map(str::to_string);
                if let Some(id) = id {
                    let seq: usize = id.split_once(':').unwrap().1.parse().unwrap();
                    got.extend(0..seq);
                    last = Some(id);
                }
                continue;
            }
            assert_eq!(frame["event"], "log", "{frame}");
            let n: usize = frame["data"]["message"].as_str().unwrap().parse().unwrap();
            assert_eq!(n, got.len(), "exactly once, in order (round {round})");
            got.push(n);
            last = Some(frame["id"].as_str().unwrap().to_string());
        }
        drop(client);
    }
    publishing.await.unwrap();
    assert!(round > 5, "the test reconnected many times ({round})");
}

// An id from another epoch, or from a lost history, is never "recovered".
async fn resume_into_a_lost_epoch_is_not_recovered(b: Backend) {
    let hub = TestHub::start(b).await;
    hub.publish("p", progress(40)).await;
    let (mut client, connected) = WsClient::resume(&hub.ws_url("p"), "someOtherEpoch:1").await;
    assert_eq!(connected["data"]["resumed"], true);
    assert_eq!(connected["data"]["recovered"], false);
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["data"]["recovered"], false);
    assert_eq!(snapshot["data"]["progress"], 40);
    // A project with no history at all: an empty snapshot, still not recovered.
    let (mut client, connected) = WsClient::resume(&hub.ws_url("never"), "abc:5").await;
    assert_eq!(connected["data"]["recovered"], false);
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["data"]["last_event_id"], Value::Null);
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

// Every validation rule of the HTTP publish API, with a clear error naming the field.
async fn http_publish_api_validates_everything(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.max_frame_bytes = 4096).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"event": "progress_update", "data": {"status": "RENDERING", "progress": 101, "current_stage": "x"}}),
            "data.progress",
        ),
        (
            json!({"event": "progress_update", "data": {"status": "NAPPING", "progress": 1, "current_stage": "x"}}),
            "data.status",
        ),
        (
            json!({"event": "progress_update", "data": {"status": "RENDERING", "current_stage": "x"}}),
            "data",
        ),
        (json!({"event": "log", "data": {"level": "INFO"}}), "data"),
        (
            json!({"event": "log", "data": {"level": "INFO", "message": "x", "timestamp": "noon"}}),
            "data.timestamp",
        ),
        (
            json!({"event": "error", "data": {"error_code": "MADE_UP", "message": "x", "stage": "RENDERING"}}),
            "data.error_code",
        ),
        (
            json!({"event": "complete", "data": {"status": "DONE"}}),
            "data.status",
        ),
        (
            json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "ftp://x"}}),
            "data.youtube_url",
        ),
        (json!({"event": "teleport", "data": {}}), "event"),
        (json!({"data": {}}), "event"),
        (json!({"event": 3, "data": {}}), "event"),
        (json!({"event": "log"}), "data"),
        (json!([1, 2, 3]), "body"),
        (json!("log"), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = hub.post_event("p", &body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_EVENT");
        assert!(
            answer["error"]["field"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body} → {answer}"
        );
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let client = reqwest::Client::new();
    let url = hub.http("/api/v1/projects/p/events");
    let broken = client.post(&url).body("{\"event\":").send().await.unwrap();
    assert_eq!(broken.status(), 422);
    let huge = client
        .post(&url)
        .body(format!("{{\"pad\":\"{}\"}}", "x".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    let bad_id = client
        .post(hub.http("/api/v1/projects/bad%20id/events"))
        .json(&log_event("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400);
    let missing = reqwest::get(hub.http("/api/v1/projects/nobody"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PROJECT_NOT_FOUND");
    let bad_resume = reqwest::get(hub.http("/api/v1/projects/p/events?last_event_id=nope"))
        .await
        .unwrap();
    assert_eq!(bad_resume.status(), 400);
    // Nothing invalid reached the history.
    let (status, _) = hub.post_event("p", &log_event("valid")).await;
    assert_eq!(status, 202);
    let state: Value = reqwest::get(hub.http("/api/v1/projects/p"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["last_event_id"].as_str().unwrap().ends_with(":1"),
        "{state}"
    );
}

// SSE: the same stream as text/event-stream with `id:` set; resume with Last-Event-ID.
async fn sse_streams_and_resumes_with_last_event_id(b: Backend) {
    let hub = TestHub::start(b).await;
    let first = hub.publish("p", log_event("one")).await;
    let second = hub.publish("p", log_event("two")).await;
    let third = hub.publish("p", log_event("three")).await;
    let response = reqwest::Client::new()
        .get(hub.http("/api/v1/projects/p/progress"))
        .header("accept", "text/event-stream")
        .header("last-event-id", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut sse = SseReader::new(response);
    let (_, connected) = sse.next().await;
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["data"]["recovered"], true);
    for (id, message) in [(&second, "two"), (&third, "three")] {
        let (sse_id, frame) = sse.next().await;
        assert_eq!(sse_id.as_deref(), Some(id.as_str()));
        assert_eq!(frame["data"]["message"], message);
    }
    let live = hub.publish("p", log_event("live")).await;
    assert_eq!(sse.next().await.0.as_deref(), Some(live.as_str()));
    // The /events endpoint is SSE too, and a late joiner gets the snapshot.
    let response = reqwest::get(hub.http("/api/v1/projects/p/events"))
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.1["event"], "connected");
    let (snapshot_id, snapshot) = sse.next().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(
        snapshot_id.as_deref(),
        Some(live.as_str()),
        "the snapshot moves Last-Event-ID to where it stands"
    );
    // A resume that cannot be honoured on a project with no history: the snapshot's
    // empty `id:` clears the stale Last-Event-ID, so the next reconnect is a plain join.
    let response = reqwest::Client::new()
        .get(hub.http("/api/v1/projects/fresh/progress"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "otherEpoch:7")
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.1["data"]["recovered"], false);
    let (snapshot_id, snapshot) = sse.next().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot_id.as_deref(), Some(""));
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

on_both_brokers!(
    a_retried_publish_with_an_idempotency_key_lands_once,
    publish_path_delivers_frames_with_ids,
    late_join_gets_snapshot_then_live,
    resume_after_missing_100_events,
    resume_racing_with_live_publishing,
    resume_into_a_lost_epoch_is_not_recovered,
    progress_is_monotonic_within_a_run,
    progress_updates_are_coalesced_but_the_last_is_delivered,
    http_publish_api_validates_everything,
    sse_streams_and_resumes_with_last_event_id,
);

// Redis flushed (a history lost): the epoch changes, and an old id is not recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lost_in_redis_changes_the_epoch() {
    let hub = TestHub::start(Backend::Redis).await;
    let old = hub.publish("p", progress(70)).await;
    let mut conn = hub.redis().connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let new = hub.publish("p", json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 10}})).await;
    assert_ne!(
        old.split_once(':').unwrap().0,
        new.split_once(':').unwrap().0,
        "a new epoch"
    );
    assert!(new.ends_with(":1"));
    let (mut client, connected) = WsClient::resume(&hub.ws_url("p"), &old).await;
    assert_eq!(connected["data"]["recovered"], false);
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["data"]["last_event_id"], new.as_str());
    assert_eq!(
        snapshot["data"]["progress"], 10,
        "a fresh history is a fresh run"
    );
}

// The in-process broker loses a completed project's history after the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_expires_after_retention_in_memory() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.history.retention = Duration::from_millis(200)
    })
    .await;
    let done = hub.publish("p", json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtube.com/watch?v=1"}})).await;
    assert_eq!(
        reqwest::get(hub.http("/api/v1/projects/p"))
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // the retention is a duration, nothing to await
    assert_eq!(
        reqwest::get(hub.http("/api/v1/projects/p"))
            .await
            .unwrap()
            .status(),
        404
    );
    let (_, connected) = WsClient::resume(&hub.ws_url("p"), &done).await;
    assert_eq!(connected["data"]["recovered"], false);
    let next = hub.publish("p", log_event("again")).await;
    assert_ne!(
        next.split_once(':').unwrap().0,
        done.split_once(':').unwrap().0
    );
}

// Redis's keys live for the retention after complete, and share the project hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_hash_tagged_and_expire_after_retention() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.history.retention = Duration::from_secs(120)
    })
    .await;
    hub.publish("p", log_event("x")).await;
    hub.publish(
        "p",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    let mut conn = hub.redis().connection().await;
    // The job queue's stream (`progress:jobs`) is not a project key.
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(layout::project_keys(&support::project("p")))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    // Publish receipts (for idempotent retries) live 10 minutes; the rest the retention.
    let (receipts, keys): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| k.starts_with(&layout::receipt_key(&support::project("p"), "")));
    assert_eq!(receipts.len(), 2, "one receipt per publish");
    for receipt in receipts {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&receipt)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((500..=600).contains(&ttl), "{receipt}: {ttl}");
    }
    let p = support::project("p");
    assert_eq!(keys, [layout::history_key(&p), layout::state_key(&p)]);
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((100..=120).contains(&ttl), "{key}: {ttl}");
    }
}

/// Reads `id:`/`data:` records from an SSE response.
struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> (Option<String>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let record: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in record.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                let frame: Value = serde_json::from_str(&data).unwrap();
                if frame["event"] == "ping" {
                    continue;
                }
                return (id, frame);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("an SSE record in time")
                .expect("stream open")
                .expect("no error");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

// The hub's subscriber connection is cut while events are being published: after it
// reconnects it fills the gap from history, so a watcher gets every event exactly once,
// in order, without reconnecting itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_cut_mid_stream_loses_nothing() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("cut")).await;
    let first = hub.publish("cut", log_event("0")).await;
    assert_eq!(client.next_event().await["id"], first.as_str());
    let publisher = hub.publisher().clone();
    let project = progress_hub::wire::ProjectId::parse("cut").unwrap();
    let publishing = tokio::spawn(async move {
        for i in 1..=300 {
            let event = progress_hub::wire::Event::from_json(
                log_event(&i.to_string()).to_string().as_bytes(),
            )
            .unwrap();
            publisher.publish(&project, event).await.unwrap();
        }
    });
    // Cut the subscriber off (twice, while events flow).
    for _ in 0..2 {
        let killed = hub.redis().kill_subscribers().await;
        assert_eq!(killed, 1, "the hub holds exactly one subscriber connection");
        tokio::time::sleep(Duration::from_millis(30)).await; // let some events fall in the gap
        support::eventually("the subscriber is back", || async {
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("progress:cut")
                .query_async::<(String, i64)>(&mut hub.redis().connection().await)
                .await
                .unwrap()
                .1
                == 1
        })
        .await;
    }
    publishing.await.unwrap();
    for i in 1..=300 {
        let frame = client.next_event().await;
        assert_eq!(
            frame["data"]["message"],
            i.to_string(),
            "event {i}: exactly once, in order"
        );
    }
    let sentinel = hub.publish("cut", log_event("end")).await;
    assert_eq!(
        client.next_event().await["id"],
        sentinel.as_str(),
        "nothing doubled"
    );
}

// A failover to a replica that missed the latest writes keeps the epoch but takes the
// sequence back, so new events reuse ids the hub already delivered. They are still
// delivered (not dropped as duplicates), and a client resuming from a lost id is told
// `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_that_goes_back_in_a_failover_still_delivers_new_events() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("fo")).await;
    let mut conn = hub.redis().connection().await;
    for i in 0..5 {
        let id = hub.publish("fo", log_event(&i.to_string())).await;
        assert_eq!(client.next_event().await["id"], id.as_str());
    }
    // What the replica holds: the project as of the fifth event.
    let fo = support::project("fo");
    let keys = [layout::state_key(&fo), layout::history_key(&fo)];
    let mut replica = Vec::new();
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        replica.push(dump);
    }
    let mut lost = String::new();
    for i in 5..10 {
        lost = hub.publish("fo", log_event(&i.to_string())).await;
        assert_eq!(client.next_event().await["id"], lost.as_str());
    }
    // The failover: the last five writes vanish and connections drop.
    for (key, dump) in keys.iter().zip(&replica) {
        let () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let killed = hub.redis().kill_subscribers().await;
    assert_eq!(killed, 1);
    support::eventually("the subscriber is back", || async {
        hub.redis().numsub("fo").await == 1
    })
    .await;
    let after = hub.publish("fo", log_event("after failover")).await;
    assert_eq!(
        after.split_once(':').map(|(e, _)| e),
        lost.split_once(':').map(|(e, _)| e),
        "the epoch survived the failover (the case under test)"
    );
    let frame = client.next_event().await;
    assert_eq!(frame["data"]["message"], "after failover", "{frame}");
    assert_eq!(frame["id"], after.as_str());
    let (mut resumed, connected) = WsClient::resume(&hub.ws_url("fo"), &lost).await;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
    let snapshot = resumed.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["data"]["last_event_id"], after.as_str());
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

// The same cut on a project with no history yet: what is published while the
// subscriber is away is still filled in, from the start of the new history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_cut_before_the_first_event_loses_nothing() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("fresh")).await;
    let killed = hub.redis().kill_subscribers().await;
    assert_eq!(killed, 1);
    for i in 1..=50 {
        hub.publish("fresh", log_event(&i.to_string())).await;
    }
    for i in 1..=50 {
        let frame = client.next_event().await;
        assert_eq!(
            frame["data"]["message"],
            i.to_string(),
            "event {i}: exactly once, in order"
        );
    }
    let sentinel = hub.publish("fresh", log_event("end")).await;
    assert_eq!(client.next_event().await["id"], sentinel.as_str());
}
