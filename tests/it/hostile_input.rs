//! Hostile input: client frames, oversized frames (1009), bad project ids and invalid
//! events on the HTTP publish API are refused or ignored; the hub keeps serving.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient, log_event};

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
    let broken = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"event\":")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 422);
    let huge = client
        .post(&url)
        .header("content-type", "application/json")
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

on_both_brokers!(
    hostile_client_frames_are_ignored,
    oversized_client_frame_closes_with_1009,
    hostile_project_ids_are_refused_before_upgrade,
    http_publish_api_validates_everything,
);
