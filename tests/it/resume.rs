//! Resume: late-join snapshots, resume by last id (WebSocket and SSE), lost epochs, history
//! lost or expired, and the Redis key layout with its TTLs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, Backend, SseReader, TestHub, WsClient, layout, log_event, progress};

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

// Redis's keys live for the retention after complete (at most an eighth more), and
// share the project hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_hash_tagged_and_expire_after_retention() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.history.retention = Duration::from_secs(120)
    })
    .await;
    hub.publish("p", log_event("x")).await;
    let keyed = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/p/events"))
        .header("idempotency-key", "the-end")
        .json(&json!({"event": "complete", "data": {"status": "FAILED"}}))
        .send()
        .await
        .expect("POST events");
    assert_eq!(keyed.status().as_u16(), 202);
    let mut conn = hub.redis().connection().await;
    // The job queue's stream (`progress:jobs`) is not a project key.
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(layout::project_keys(&support::project("p")))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    // A caller's idempotency key is remembered 10 minutes in its own key; a publish
    // without one leaves none (the state remembers the publisher's own receipts). The
    // rest lives the retention.
    let (receipts, keys): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| k.starts_with(&layout::receipt_key(&support::project("p"), "")));
    assert_eq!(
        receipts,
        [layout::receipt_key(&support::project("p"), "key:the-end")],
        "a receipt key for the keyed publish only"
    );
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
        // The retention at least, at most an eighth more (publish.lua).
        assert!((120..=135).contains(&ttl), "{key}: {ttl}");
    }
}

on_both_brokers!(
    late_join_gets_snapshot_then_live,
    resume_after_missing_100_events,
    resume_racing_with_live_publishing,
    resume_into_a_lost_epoch_is_not_recovered,
    sse_streams_and_resumes_with_last_event_id,
);
