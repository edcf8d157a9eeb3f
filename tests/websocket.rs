//! The WebSocket endpoint, end to end: real hub, real Redis (or the in-process broker),
//! real clients. Tests 1–8 of the original task description come first.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Backend, PATIENCE, RedisServer, TestHub, WsClient, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

// Test 1: connecting succeeds and the first frame is `connected`.
async fn connect_sends_connected_first(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = hub.connect("1").await;
    let first = client.next_json().await;
    assert_eq!(first["event"], "connected");
    let data = &first["data"];
    assert_eq!(data["project_id"], "1");
    assert_eq!(data["heartbeat_interval"], 30);
    assert_eq!(data["resumed"], false);
    assert!(data["recovered"].is_boolean());
    assert!(data["timestamp"].as_str().unwrap().ends_with('Z'));
    if b == Backend::Redis {
        assert_eq!(
            hub.redis().numsub("1").await,
            1,
            "the hub subscribed progress:1"
        );
    }
}

// Test 2: a published progress_update reaches the client byte for byte.
async fn progress_update_is_forwarded_unchanged(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    let payload = json!({
        "event": "progress_update",
        "data": {
            "status": "SCRIPT_GENERATING",
            "progress": 20,
            "current_stage": "正在生成腳本...",
            "estimated_remaining": 600
        }
    })
    .to_string();
    hub.publish_raw("1", &payload).await;
    assert_eq!(client.next_text().await, payload);
}

// Test 3: stage changes arrive with their timestamps intact.
async fn stage_change_is_forwarded(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    let payload = json!({
        "event": "stage_change",
        "data": {
            "previous_stage": "SCRIPT_GENERATING",
            "current_stage": "ASSETS_GENERATING",
            "progress": 25,
            "timestamp": "2025-10-19T10:35:00Z"
        }
    });
    hub.publish_raw("1", &payload.to_string()).await;
    assert_eq!(client.next_event().await, payload);
}

// Test 4: log lines arrive all, in order.
async fn logs_arrive_in_order(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    let logs: Vec<Value> = (1..=15)
        .map(|i| {
            let level = ["INFO", "WARNING", "ERROR"][i % 3];
            json!({"event": "log", "data": {
                "level": level,
                "message": format!("[{i}/15] 正在生成圖片: 段落 {i} - 科技趨勢展望"),
                "timestamp": format!("2025-10-19T10:36:{i:02}Z"),
            }})
        })
        .collect();
    for log in &logs {
        hub.publish_raw("1", &log.to_string()).await;
    }
    for log in &logs {
        assert_eq!(&client.next_event().await, log);
    }
}

// Test 5: errors arrive with their retry information.
async fn error_is_forwarded(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    let payload = json!({"event": "error", "data": {
        "error_code": "STABILITY_AI_ERROR",
        "message": "Stability AI API 配額已用盡",
        "stage": "ASSETS_GENERATING",
        "retry_count": 2,
        "max_retries": 3,
        "timestamp": "2025-10-19T10:38:00Z"
    }});
    hub.publish_raw("1", &payload.to_string()).await;
    let got = client.next_event().await;
    assert_eq!(got, payload);
}

// Test 6a: pings come every interval; answering keeps the connection open well past the
// timeout; the client's own ping is answered with pong.
async fn heartbeat_keeps_an_answering_client(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(1000);
    })
    .await;
    let mut client = WsClient::connect(&hub.ws_url("1")).await;
    let connected = client.next_json().await;
    assert_eq!(
        connected["data"]["heartbeat_interval"], 0,
        "whole seconds, rounded down"
    );
    let start = tokio::time::Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        let frame = client.next_json().await;
        assert_eq!(frame["event"], "ping", "{frame}");
        assert!(frame["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
        pings += 1;
        client.send_text(r#"{"event":"pong"}"#).await;
    }
    assert!(pings >= 10, "pings every interval, got {pings}");
    client.send_text(r#"{"event":"ping"}"#).await;
    loop {
        let frame = client.next_json().await;
        if frame["event"] == "pong" {
            assert!(frame["data"]["timestamp"].is_string());
            break;
        }
        assert_eq!(frame["event"], "ping");
    }
}

// Test 6b: a client that never answers is closed with 4408 after the timeout.
async fn heartbeat_closes_a_silent_client_with_4408(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(300);
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    let start = tokio::time::Instant::now();
    let mut close = None;
    while close.is_none() {
        match client.next_seen().await {
            support::Seen::Frame(f) => assert_eq!(f["event"], "ping"),
            support::Seen::Close(c) => close = Some(c),
        }
    }
    assert!(start.elapsed() >= Duration::from_millis(250));
    let (code, reason) = close.unwrap().expect("a close frame");
    assert_eq!((code, reason.as_str()), (4408, "heartbeat timeout"));
}

// A live client on a busy project: a backlog of 1,500 frames of 24 KB (far more than
// the socket buffers hold) keeps the session sending for longer than the heartbeat
// timeout while the client reads steadily, but slowly. Its taking frames off a full
// socket is life: it is not closed 4408.
async fn a_busy_session_still_hears_its_client(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_secs(1);
        c.queue_capacity = 4096;
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("busy")).await;
    const FRAMES: usize = 1500;
    let padding = "x".repeat(24 * 1024);
    let publishing = async {
        for i in 0..FRAMES {
            hub.publish_raw(
                "busy",
                &format!(r#"{{"event":"log","data":{{"message":"{i} {padding}"}}}}"#),
            )
            .await;
        }
    };
    let started = tokio::time::Instant::now();
    let reading = async {
        let mut next = 0;
        while next < FRAMES {
            match client.next_seen().await {
                support::Seen::Frame(f) if f["event"] == "ping" => {
                    client.send_text(r#"{"event":"pong"}"#).await;
                }
                support::Seen::Frame(f) => {
                    let message = f["data"]["message"].as_str().unwrap();
                    assert!(message.starts_with(&format!("{next} ")), "in order");
                    next += 1;
                    // The client's reading pace: slow on purpose, not a wait for an event.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                support::Seen::Close(close) => {
                    panic!("closed after {next} frames, while reading: {close:?}")
                }
            }
        }
    };
    tokio::join!(publishing, reading);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the backlog outlasted the heartbeat timeout (the case under test)"
    );
}

// Test 6c: protocol-level pings are answered, and count as life.
async fn protocol_pings_are_answered(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    client
        .ws
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, client.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"hi".to_vec().into()));
}

// Test 7: two clients of one project both get the message.
async fn two_clients_both_receive(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut ws1 = WsClient::connected(&hub.ws_url("1")).await;
    let mut ws2 = WsClient::connected(&hub.ws_url("1")).await;
    let msg = json!({"event": "progress_update", "data": {"progress": 50}}).to_string();
    hub.publish_raw("1", &msg).await;
    assert_eq!(ws1.next_text().await, msg);
    assert_eq!(ws2.next_text().await, msg);
}

// Test 8: disconnecting cleans the subscription up; reconnecting works.
async fn disconnect_cleans_up_and_reconnect_receives(b: Backend) {
    let hub = TestHub::start(b).await;
    let client = WsClient::connected(&hub.ws_url("1")).await;
    client.close().await;
    if b == Backend::Redis {
        eventually("PUBSUB NUMSUB progress:1 returns to 0", || async {
            hub.redis().numsub("1").await == 0
        })
        .await;
    }
    let mut client = WsClient::connected(&hub.ws_url("1")).await;
    if b == Backend::Redis {
        assert_eq!(hub.redis().numsub("1").await, 1);
    }
    let msg = json!({"event": "progress_update", "data": {"progress": 75}}).to_string();
    hub.publish_raw("1", &msg).await;
    assert_eq!(client.next_event().await["data"]["progress"], 75);
}

// One subscription per process, however many clients; other projects see nothing.
async fn projects_are_isolated_and_share_one_subscription(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut a1 = WsClient::connected(&hub.ws_url("a")).await;
    let _a2 = WsClient::connected(&hub.ws_url("a")).await;
    let mut other = WsClient::connected(&hub.ws_url("b")).await;
    if b == Backend::Redis {
        assert_eq!(
            hub.redis().numsub("a").await,
            1,
            "one subscriber connection per hub"
        );
    }
    hub.publish_raw("a", r#"{"event":"log","data":{"message":"for a"}}"#)
        .await;
    hub.publish_raw("b", r#"{"event":"log","data":{"message":"for b"}}"#)
        .await;
    assert_eq!(a1.next_event().await["data"]["message"], "for a");
    assert_eq!(other.next_event().await["data"]["message"], "for b");
}

async fn two_hundred_clients_all_receive(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(WsClient::connected(&hub.ws_url("crowd")).await);
    }
    let msg = r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=x"}}"#;
    hub.publish_raw("crowd", msg).await;
    let received =
        futures_util::future::join_all(clients.iter_mut().map(|c| async { c.next_text().await }))
            .await;
    assert!(received.iter().all(|t| t == msg));
}

async fn two_thousand_messages_arrive_complete_and_in_order(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(WsClient::connected(&hub.ws_url("burst")).await);
    }
    let publish = async {
        for i in 0..2000 {
            let msg =
                json!({"event": "log", "data": {"level": "INFO", "message": format!("line {i}")}});
            hub.publish_raw("burst", &msg.to_string()).await;
        }
    };
    let receive = futures_util::future::join_all(clients.iter_mut().map(|c| async {
        for i in 0..2000 {
            let frame = c.next_event().await;
            assert_eq!(frame["data"]["message"], format!("line {i}"));
        }
    }));
    tokio::join!(publish, receive);
}

// A published payload that is not a JSON object with a string `event` is dropped and
// counted; what follows still flows.
async fn invalid_published_payloads_are_dropped_and_counted(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    let before = support::metric(&hub, "hub_published_invalid_total").await;
    for bad in [
        "not json",
        "[1,2]",
        r#"{"event":7}"#,
        r#"{"data":{}}"#,
        "",
        "\u{0}",
    ] {
        hub.publish_raw("p", bad).await;
    }
    let good = r#"{"event":"log","data":{"message":"still here"}}"#;
    hub.publish_raw("p", good).await;
    assert_eq!(client.next_text().await, good);
    let after = support::metric(&hub, "hub_published_invalid_total").await;
    assert!(after >= before + 6.0, "before {before}, after {after}");
}

// Bad JSON, binary frames and unknown events are ignored; the connection stays useful.
async fn hostile_client_frames_are_ignored(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    let before = support::metric(&hub, "hub_client_frames_ignored_total").await;
    for text in [
        "{",
        "null",
        "[]",
        r#"{"event":42}"#,
        r#"{"event":"subscribe","data":{"project":"other"}}"#,
        "🙂",
    ] {
        client.send_text(text).await;
    }
    client
        .ws
        .send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    client.send_text(r#"{"event":"ping"}"#).await;
    assert_eq!(client.next_event().await["event"], "pong");
    let after = support::metric(&hub, "hub_client_frames_ignored_total").await;
    assert!(after >= before + 7.0, "before {before}, after {after}");
}

// A frame over the limit closes that one connection with 1009; others are untouched.
async fn oversized_client_frame_closes_with_1009(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.max_frame_bytes = 1024).await;
    let mut victim = WsClient::connected(&hub.ws_url("p")).await;
    let mut bystander = WsClient::connected(&hub.ws_url("p")).await;
    victim
        .send_text(&format!(
            r#"{{"event":"pong","pad":"{}"}}"#,
            "x".repeat(2000)
        ))
        .await;
    assert_eq!(victim.expect_close().await, Some(1009));
    let msg = r#"{"event":"log","data":{"message":"after"}}"#;
    hub.publish_raw("p", msg).await;
    assert_eq!(bystander.next_text().await, msg);
}

// Shutdown stops accepting, sends every client a Close frame with 1012 ("service
// restart") and finishes promptly.
async fn shutdown_closes_clients_with_1012(b: Backend) {
    let mut hub = TestHub::start(b).await;
    let mut c1 = WsClient::connected(&hub.ws_url("p")).await;
    let mut c2 = WsClient::connected(&hub.ws_url("q")).await;
    let stopping = tokio::time::Instant::now();
    hub.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(3));
    assert_eq!(c1.expect_close().await, Some(1012));
    assert_eq!(c2.expect_close().await, Some(1012));
    assert!(
        tokio::net::TcpStream::connect(hub.addr).await.is_err(),
        "a stopped hub accepts no new connection"
    );
}

async fn health_endpoints_answer(b: Backend) {
    let hub = TestHub::start(b).await;
    let health = reqwest::get(hub.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(hub.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let metrics = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hub_connections"), "{metrics}");
    let missing = reqwest::get(hub.http("/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}

// Ids outside ^[A-Za-z0-9_-]{1,64}$ are refused before the upgrade; the hub keeps serving.
async fn hostile_project_ids_are_refused_before_upgrade(b: Backend) {
    let hub = TestHub::start(b).await;
    let long = "a".repeat(300);
    let hostile = [
        "..%2Fx",
        "..",
        "1;DROP%20TABLE",
        "1%3BDROP%20TABLE%20projects",
        long.as_str(),
        "%00",
        "a%00b",
        "%E5%B0%88%E6%A1%88",
        "%C3%A9",
        "%FF",
        "p*",
        "progress%3A1",
    ];
    for id in hostile {
        let (status, body) = raw_upgrade(&hub, &format!("/api/v1/projects/{id}/progress")).await;
        assert_eq!(status, 400, "{id}: {body}");
        let json: Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|_| panic!("{id}: JSON body, got {body}"));
        assert_eq!(json["error"]["code"], "INVALID_PROJECT_ID", "{id}");
        assert!(json["error"]["message"].is_string());
    }
    // A literal `../x` path never reaches a project at all.
    let (status, _) = raw_upgrade(&hub, "/api/v1/projects/../x/progress").await;
    assert!(status == 400 || status == 404, "{status}");
    // Not an upgrade: a clear JSON error, not a socket.
    let plain = reqwest::get(hub.http("/api/v1/projects/ok/progress"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    // And the hub still serves.
    let mut client = WsClient::connected(&hub.ws_url("still-fine")).await;
    hub.publish_raw("still-fine", r#"{"event":"log","data":{}}"#)
        .await;
    assert_eq!(client.next_event().await["event"], "log");
}

on_both_brokers!(
    connect_sends_connected_first,
    progress_update_is_forwarded_unchanged,
    stage_change_is_forwarded,
    logs_arrive_in_order,
    error_is_forwarded,
    heartbeat_keeps_an_answering_client,
    heartbeat_closes_a_silent_client_with_4408,
    a_busy_session_still_hears_its_client,
    protocol_pings_are_answered,
    two_clients_both_receive,
    disconnect_cleans_up_and_reconnect_receives,
    projects_are_isolated_and_share_one_subscription,
    two_hundred_clients_all_receive,
    two_thousand_messages_arrive_complete_and_in_order,
    invalid_published_payloads_are_dropped_and_counted,
    hostile_client_frames_are_ignored,
    oversized_client_frame_closes_with_1009,
    shutdown_closes_clients_with_1012,
    health_endpoints_answer,
    hostile_project_ids_are_refused_before_upgrade,
);

// Redis dies while clients watch; they stay connected, and once Redis is back (empty)
// the hub has resubscribed and messages flow again. /readyz follows the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_clients_stay_and_messages_flow_again() {
    let mut hub = TestHub::start(Backend::Redis).await;
    let mut a = WsClient::connected(&hub.ws_url("p")).await;
    let mut b = WsClient::connected(&hub.ws_url("q")).await;
    hub.redis.as_mut().unwrap().kill();
    let ready = hub.http("/readyz");
    eventually("/readyz says not ready", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 503)
            .unwrap_or(false)
    })
    .await;
    hub.redis.as_mut().unwrap().restart().await;
    eventually("/readyz is ready again", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    let redis = hub.redis.as_ref().unwrap();
    eventually("the hub resubscribed both channels", || async {
        redis.numsub("p").await == 1 && redis.numsub("q").await == 1
    })
    .await;
    let mut conn = redis.connection().await;
    for (project, client) in [("p", &mut a), ("q", &mut b)] {
        let msg = format!(r#"{{"event":"log","data":{{"message":"back for {project}"}}}}"#);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("progress:{project}"))
            .arg(&msg)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(client.next_text().await, msg);
    }
    hub.stop().await;
}

// A hub started while Redis is down comes up not ready, then serves once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_started_before_redis_becomes_ready_when_redis_arrives() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    redis.kill();
    let hub = TestHub::start_with(Backend::Memory, |c| c.redis_url = Some(url)).await;
    let ready = hub.http("/readyz");
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 503);
    redis.restart().await;
    eventually("/readyz is ready once Redis is up", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
}

// The keep-alive PING on the subscribed connection must not itself break the connection
// (Redis answers PING differently in subscribed mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_keepalive_does_not_drop_the_connection() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.redis_keepalive = Duration::from_millis(20)
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("alive")).await;
    let id_before = subscriber_client_id(&hub).await;
    // Many keep-alive rounds go by while messages flow.
    for i in 0..50 {
        let msg = format!(r#"{{"event":"log","data":{{"message":"{i}"}}}}"#);
        hub.publish_raw("alive", &msg).await;
        assert_eq!(client.next_text().await, msg);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        subscriber_client_id(&hub).await,
        id_before,
        "the subscriber connection was never replaced"
    );
}

/// The Redis client id of the hub's subscriber connection (the one in subscribed mode).
async fn subscriber_client_id(hub: &TestHub) -> String {
    let mut conn = hub.redis().connection().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let subscribers: Vec<&str> = list.lines().filter(|l| l.contains(" sub=1 ")).collect();
    assert_eq!(
        subscribers.len(),
        1,
        "exactly one subscriber connection: {list}"
    );
    subscribers[0]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Sends a WebSocket upgrade request with the path exactly as given (no client-side
/// normalisation) and returns the status code and body.
async fn raw_upgrade(hub: &TestHub, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Connection: close\r\n\r\n",
        hub.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
