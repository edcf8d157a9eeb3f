//! Presence (issue 27 §2): how many connections watch a project, over every hub, and
//! whether a watcher was written a run's `complete`. A single-project WebSocket or SSE
//! stream counts one, and so does each subscription of a multiplexed connection; two
//! hubs on one Redis add up; a hub that is SIGKILLed stops counting within its presence
//! TTL; the project's state says `watchers`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use progress_hub::broker::redis::RedisBroker;
use progress_hub::broker::{Broker, HistoryConfig};
use progress_hub::wire::EventId;
use serde_json::{Value, json};

use crate::support::{
    self, Backend, RedisServer, SseReader, TestHub, WsClient, eventually_eq, log_event, progress,
};

on_both_brokers!(
    watchers_rise_and_fall_as_clients_join_and_leave,
    a_complete_is_seen_only_once_a_watcher_was_written_it,
    unknown_and_hostile_project_ids,
);

fn broker(hub: &TestHub) -> &Arc<dyn Broker> {
    hub.hub.as_ref().expect("a running hub").broker()
}

async fn watchers(broker: &Arc<dyn Broker>, project: &str) -> u64 {
    broker
        .watchers(&support::project(project))
        .await
        .expect("watchers read")
}

async fn seen(broker: &Arc<dyn Broker>, project: &str, id: &str) -> bool {
    let id: EventId = id.parse().expect("an event id");
    broker
        .complete_seen(&support::project(project), &id)
        .await
        .expect("complete_seen read")
}

fn complete() -> Value {
    json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtu.be/x"}})
}

/// An SSE stream of the project, past its `connected`.
async fn sse(hub: &TestHub, project: &str) -> SseReader {
    let response = reqwest::Client::new()
        .get(hub.http(&format!("/api/v1/projects/{project}/progress")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("an SSE stream");
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    assert_eq!(reader.next().await.1["event"], "connected");
    reader
}

/// A multiplexed connection, past its `connected`.
async fn multiplexed(hub: &TestHub) -> WsClient {
    WsClient::connected(&format!("ws://{}/api/v1/progress", hub.addr)).await
}

/// Subscribes a multiplexed connection to `project` and reads its `subscribed`.
async fn subscribe(client: &mut WsClient, project: &str) {
    let frame = json!({"event": "subscribe", "data": {"project_id": project}});
    client.send_text(&frame.to_string()).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "subscribed", "{answer}");
}

/// The project's `watchers` as `GET /api/v1/projects/{id}` says.
async fn state_watchers(hub: &TestHub, project: &str) -> Value {
    hub.project_state(project).await["watchers"].clone()
}

async fn watchers_rise_and_fall_as_clients_join_and_leave(b: Backend) {
    let hub = TestHub::start(b).await;
    let broker = broker(&hub);
    hub.publish("p", log_event("history")).await;
    assert_eq!(watchers(broker, "p").await, 0);
    assert_eq!(state_watchers(&hub, "p").await, 0);

    let ws = hub.connect("p").await;
    eventually_eq("a WebSocket counts", 1, || watchers(broker, "p")).await;
    let sse = sse(&hub, "p").await;
    eventually_eq("an SSE stream counts", 2, || watchers(broker, "p")).await;
    let mut mux = multiplexed(&hub).await;
    subscribe(&mut mux, "p").await;
    assert_eq!(mux.next_event().await["event"], "snapshot");
    subscribe(&mut mux, "q").await;
    eventually_eq("a subscription counts", 3, || watchers(broker, "p")).await;
    eventually_eq("once per project", 1, || watchers(broker, "q")).await;
    eventually_eq("the state says so", json!(3), || state_watchers(&hub, "p")).await;

    let unsubscribe = json!({"event": "unsubscribe", "data": {"project_id": "p"}});
    mux.send_text(&unsubscribe.to_string()).await;
    assert_eq!(mux.next_event().await["event"], "unsubscribed");
    eventually_eq("an unsubscribe leaves", 2, || watchers(broker, "p")).await;
    ws.close().await;
    eventually_eq("a closed WebSocket leaves", 1, || watchers(broker, "p")).await;
    drop(sse);
    eventually_eq("a dropped SSE stream leaves", 0, || watchers(broker, "p")).await;
    assert_eq!(
        watchers(broker, "q").await,
        1,
        "the other project is still watched"
    );
    drop(mux);
    eventually_eq("a closed connection leaves", 0, || watchers(broker, "q")).await;
    eventually_eq("the state says so", json!(0), || state_watchers(&hub, "p")).await;
}

async fn a_complete_is_seen_only_once_a_watcher_was_written_it(b: Backend) {
    let hub = TestHub::start(b).await;
    let broker = broker(&hub);

    // Nobody watches: the complete is not seen.
    let before = hub.publish("unseen", progress(50)).await;
    let unseen = hub.publish("unseen", complete()).await;

    // A watcher gets it live.
    let mut live = WsClient::connected(&hub.ws_url("live")).await;
    let live_id = hub.publish("live", complete()).await;
    assert_eq!(live.until_complete(support::PATIENCE).await.len(), 1);
    eventually_eq("a live complete is seen", true, || {
        seen(broker, "live", &live_id)
    })
    .await;
    // Every frame of "live" was recorded by now; nothing marked the other one.
    assert!(!seen(broker, "unseen", &unseen).await, "nobody watched it");
    assert!(
        !seen(broker, "live", &before).await,
        "not a complete of that project"
    );

    // A subscription of a multiplexed connection gets one.
    let mut mux = multiplexed(&hub).await;
    subscribe(&mut mux, "mux").await;
    let mux_id = hub.publish("mux", complete()).await;
    let frame = mux.next_event().await;
    assert_eq!(
        (frame["event"].as_str(), frame["project_id"].as_str()),
        (Some("complete"), Some("mux"))
    );
    eventually_eq("a multiplexed complete is seen", true, || {
        seen(broker, "mux", &mux_id)
    })
    .await;

    // A watcher that resumes from before it gets it in its replay: seen now.
    assert!(!seen(broker, "unseen", &unseen).await);
    let (mut resumed, _) = WsClient::resume(&hub.ws_url("unseen"), &before).await;
    let replayed = resumed.next_event().await;
    assert_eq!(replayed["event"], "complete", "{replayed}");
    assert_eq!(replayed["id"], unseen.as_str());
    eventually_eq("a replayed complete is seen", true, || {
        seen(broker, "unseen", &unseen)
    })
    .await;
}

async fn unknown_and_hostile_project_ids(b: Backend) {
    let hub = TestHub::start(b).await;
    let broker = broker(&hub);
    assert_eq!(watchers(broker, "never-seen").await, 0);
    assert!(!seen(broker, "never-seen", "abc:1").await);
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(hub.http(&format!("/api/v1/projects/{path}")))
            .send()
    };
    let status = |path: String| async { get(path).await.expect("an answer").status().as_u16() };
    assert_eq!(
        status("never-seen".into()).await,
        404,
        "no history, no state"
    );
    for hostile in [
        "%7Bx%7D",
        "a%3Ab",
        "..%2F..",
        &"x".repeat(65),
        "%00",
        "%F0%9F%98%80",
    ] {
        assert_eq!(status(hostile.to_string()).await, 400, "{hostile}");
    }
    // Watched but never published to: still no state; the watcher still counts.
    let _ws = hub.connect("watched-only").await;
    eventually_eq("counted", 1, || watchers(broker, "watched-only")).await;
    assert_eq!(status("watched-only".into()).await, 404);
}

/// Two hubs on one Redis, their watchers added up; one SIGKILLed stops counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_redis_add_up() {
    let a = TestHub::start(Backend::Redis).await;
    let b = TestHub::start_on(a.redis().url(), |_| {}).await;
    a.publish("shared", log_event("history")).await;
    let one = a.connect("shared").await;
    let _two = a.connect("shared").await;
    let _three = sse(&b, "shared").await;
    for hub in [&a, &b] {
        eventually_eq("both hubs count", 3, || watchers(broker(hub), "shared")).await;
        eventually_eq("in the state", json!(3), || state_watchers(hub, "shared")).await;
    }
    one.close().await;
    eventually_eq("a leave on one hub", 2, || watchers(broker(&b), "shared")).await;
    let mut b = b;
    b.stop().await;
    eventually_eq("a stopped hub takes its share away", 1, || {
        watchers(broker(&a), "shared")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hubs_watchers_expire_within_its_presence_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let redis = RedisServer::start().await;
    let (mut child, url, _) =
        support::cli::serve(&["--redis-url", &redis.url(), "--presence-ttl", "2s"], &[]);
    let reader = RedisBroker::connect(&redis.url(), HistoryConfig::default()).expect("a broker");
    let reader: Arc<dyn Broker> = Arc::new(reader);
    let ws_url = format!(
        "{}/api/v1/projects/doomed/progress",
        url.replacen("http", "ws", 1)
    );
    let _watcher = WsClient::connected(&ws_url).await;
    let _other = WsClient::connected(&ws_url).await;
    eventually_eq("the spawned hub's watchers count", 2, || {
        watchers(&reader, "doomed")
    })
    .await;
    // Past two refreshes: a live hub's entry outlives its TTL.
    tokio::time::sleep(TTL + TTL / 2).await;
    assert_eq!(
        watchers(&reader, "doomed").await,
        2,
        "refreshed while alive"
    );

    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    child.wait().expect("reaped");
    eventually_eq("a dead hub's watchers expire", 0, || {
        watchers(&reader, "doomed")
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(1),
        "expired after {took:?}, TTL {TTL:?}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_watchers() {
    let hub = TestHub::start(Backend::Memory).await;
    let api: Value = reqwest::get(hub.http("/api/v1/openapi.json"))
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    let answer = &api["paths"]["/api/v1/projects/{project_id}"]["get"]["responses"]["200"];
    let reference = answer["content"]["application/json"]["schema"]["$ref"].as_str();
    assert_eq!(
        reference,
        Some("#/components/schemas/ProjectStateBody"),
        "{answer}"
    );
    let body = api["components"]["schemas"]["ProjectStateBody"].to_string();
    for field in [
        "watchers",
        "project_id",
        "#/components/schemas/ProjectState",
    ] {
        assert!(body.contains(field), "{field} in {body}");
    }
}
