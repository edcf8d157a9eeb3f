//! Delivery: what is published reaches every watcher of its project, unchanged, in order,
//! and only them — forwarding, ordering, isolation, fan-out, invalid payloads dropped, and
//! the original Python `ProgressService` publishing through Redis.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient, eventually, layout};

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
    // The burst is larger than a session's default queue (1024 frames), and the
    // in-process publisher can hand it over faster than any socket is written, so with
    // the default the slow-consumer rule (slow_consumer.rs tests it) would rightly close
    // a reader that fell 1024 behind. Here the point is order and completeness: the
    // queue holds the whole burst.
    let hub = TestHub::start_with(b, |c| c.queue_capacity = 4096).await;
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

// A legacy PUBLISH whose payload carries a made-up `id` far ahead in the project's own
// epoch (which every watcher sees) is forwarded unchanged, but its id moves nothing:
// the events the hub publishes next all reach the watchers. Before, the hub took the id
// for a position and dropped the next real events as duplicates (issue 23 §4: 1 of 6).
async fn a_forged_id_on_a_legacy_publish_blinds_nobody(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = WsClient::connected(&hub.ws_url("p")).await;
    let first = hub.publish("p", support::log_event("real 0")).await;
    assert_eq!(client.next_event().await["id"], first.as_str());
    let epoch = first.split_once(':').unwrap().0;
    for forged_seq in [1_000_000, 2] {
        let forged = format!(
            r#"{{"event":"log","id":"{epoch}:{forged_seq}","data":{{"level":"INFO","message":"forged"}}}}"#
        );
        hub.publish_raw("p", &forged).await;
        assert_eq!(client.next_text().await, forged, "forwarded unchanged");
    }
    for n in 1..=5 {
        let id = hub
            .publish("p", support::log_event(&format!("real {n}")))
            .await;
        let frame = client.next_event().await;
        assert_eq!(frame["id"], id.as_str(), "{frame}");
        assert_eq!(frame["data"]["message"], format!("real {n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_python_publisher_reaches_websocket_clients_unchanged() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("py-1")).await;

    // A witness subscriber records the exact bytes Redis carried.
    let witness = redis::Client::open(hub.redis().url()).unwrap();
    let mut witness = witness.get_async_pubsub().await.unwrap();
    witness
        .subscribe(layout::channel(&support::project("py-1")))
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/publish_all.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg("py-1")
        .env("REDIS_URL", format!("{}/0", hub.redis().url()))
        .output()
        .await
        .expect("python3 runs (the test command installs redis-py)");
    assert!(
        output.status.success(),
        "ProgressService failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut carried = Vec::new();
    let mut messages = witness.on_message();
    for _ in 0..5 {
        let msg = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .unwrap()
            .unwrap();
        carried.push(msg.get_payload::<String>().unwrap());
    }
    let mut received = Vec::new();
    for _ in 0..5 {
        received.push(client.next_text().await);
    }
    assert_eq!(received, carried, "byte for byte, in order");

    let events: Vec<serde_json::Value> = received
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "stage_change",
            "progress_update",
            "log",
            "error",
            "complete"
        ]
    );
    assert_eq!(events[0]["data"]["current_stage"], "ASSETS_GENERATING");
    assert_eq!(events[1]["data"]["progress"], 30);
    assert_eq!(events[1]["data"]["estimated_remaining"], 600);
    assert_eq!(
        events[2]["data"]["message"],
        "[1/15] 正在生成圖片: 段落 1 - 科技趨勢展望"
    );
    assert_eq!(events[3]["data"]["retry_count"], 2);
    assert_eq!(
        events[4]["data"]["youtube_url"],
        "https://youtube.com/watch?v=interop"
    );
    for event in &events {
        let ts = event["data"]["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
    }
}

on_both_brokers!(
    connect_sends_connected_first,
    progress_update_is_forwarded_unchanged,
    stage_change_is_forwarded,
    logs_arrive_in_order,
    error_is_forwarded,
    two_clients_both_receive,
    disconnect_cleans_up_and_reconnect_receives,
    projects_are_isolated_and_share_one_subscription,
    two_hundred_clients_all_receive,
    two_thousand_messages_arrive_complete_and_in_order,
    invalid_published_payloads_are_dropped_and_counted,
    a_forged_id_on_a_legacy_publish_blinds_nobody,
);
