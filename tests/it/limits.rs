//! Limits: connection, project and process limits refuse clearly; slow and idle HTTP
//! connections are closed. (Ten thousand connect/close cycles leaving no leak is
//! `tests/leak.rs`: it measures its whole process.)

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient};

// Connections over a limit are refused with a clear close code (1013) or HTTP 503, and
// the slot comes back when a connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_project_limits_refuse_clearly() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.max_connections_per_ip = 2;
        c.max_projects = 2;
    })
    .await;
    let url = hub.ws_url("limited");
    let first = WsClient::connected(&url).await;
    let _second = WsClient::connected(&url).await;
    let mut third = WsClient::connect(&url).await;
    assert_eq!(third.expect_close().await, Some(1013), "per-address limit");
    let sse = reqwest::get(hub.http("/api/v1/projects/limited/events"))
        .await
        .unwrap();
    assert_eq!(sse.status(), 503);
    let body: serde_json::Value = sse.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOO_MANY_CONNECTIONS");
    first.close().await;
    support::eventually("a slot is free again", || async {
        let mut c = WsClient::connect(&hub.ws_url("limited")).await;
        matches!(c.next_seen().await, support::Seen::Frame(f) if f["event"] == "connected")
    })
    .await;

    let hub = TestHub::start_with(Backend::Memory, |c| c.max_projects = 1).await;
    let _watching = WsClient::connected(&hub.ws_url("one")).await;
    let mut other = WsClient::connect(&hub.ws_url("two")).await;
    assert_eq!(other.expect_close().await, Some(1013), "project limit");
    let _same = WsClient::connected(&hub.ws_url("one")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_connection_limit_refuses_clearly() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.max_connections = 1).await;
    let _only = WsClient::connected(&hub.ws_url("a")).await;
    let mut refused = WsClient::connect(&hub.ws_url("b")).await;
    assert_eq!(refused.expect_close().await, Some(1013));
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen))
        .await
        .expect("the server closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&seen).into_owned()
}

// Slowloris and idle connections: a connection that never finishes its request head,
// and a kept-alive one that sends nothing more, are closed after the handshake
// timeout; a request whose body never finishes gets a JSON 408. Upgraded WebSocket
// connections are not subject to either (they have the heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_http_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let timeout = std::time::Duration::from_millis(300);
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.handshake_timeout = timeout;
        c.request_timeout = timeout;
        c.heartbeat_interval = std::time::Duration::from_millis(150);
    })
    .await;
    // Connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    // Sends half a request head.
    let mut partial = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
        .await
        .unwrap();
    // One full request on a kept-alive connection, then nothing.
    let mut idle = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    // A publish whose body never arrives in full.
    let mut slow_body = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /api/v1/projects/p/events HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\":",
        )
        .await
        .unwrap();
    // A WebSocket client outlives all of them.
    let mut ws = WsClient::connected(&hub.ws_url("p")).await;

    assert_eq!(read_until_closed(&mut silent).await, "");
    assert_eq!(read_until_closed(&mut partial).await, "");
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let refused = read_until_closed(&mut slow_body).await;
    assert!(refused.starts_with("HTTP/1.1 408"), "{refused}");
    let body = &refused[refused.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
    // Three heartbeats (450 ms) later the WebSocket is still served.
    for _ in 0..3 {
        assert_eq!(ws.next_json().await["event"], "ping");
    }
    let fresh = reqwest::get(hub.http("/healthz")).await.unwrap();
    assert_eq!(fresh.status(), 200, "the hub still serves new requests");
}
