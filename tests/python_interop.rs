//! The original Python `ProgressService` (redis-py, unchanged) publishing to a hub: a
//! WebSocket client receives every frame exactly as Redis carried it.

mod support;

use futures_util::StreamExt;
use support::{Backend, PATIENCE, TestHub, WsClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_python_publisher_reaches_websocket_clients_unchanged() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("py-1")).await;

    // A witness subscriber records the exact bytes Redis carried.
    let witness = redis::Client::open(hub.redis().url()).unwrap();
    let mut witness = witness.get_async_pubsub().await.unwrap();
    witness.subscribe("progress:py-1").await.unwrap();

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
