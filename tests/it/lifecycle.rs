//! Lifecycle: the binary's start line and environment configuration, a taken port,
//! health endpoints, and a graceful stop closing every client with 1012.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Backend, RedisServer, TestHub, WsClient, cli, eventually_eq};

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
    // Ready once the subscriber has connected (on Redis it stamps the era first, so
    // that is not before `start` returns): awaited, then its body read.
    eventually_eq("/readyz answers 200", 200, || async {
        let ready = reqwest::get(hub.http("/readyz")).await.unwrap();
        ready.status().as_u16()
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_announces_its_url_and_sigterm_closes_clients_with_1012() {
    let (mut child, url, lines) = cli::serve(&[], &[]);
    assert!(
        lines
            .last()
            .unwrap()
            .contains("progress-hub listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    let ws = url.replace("http://", "ws://");
    let mut client = WsClient::connected(&format!("{ws}/api/v1/projects/demo/progress")).await;
    cli::sigterm(&child);
    assert_eq!(client.expect_close().await, Some(1012));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "exits within a few seconds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_redis_and_heartbeat_from_the_environment_and_logs_json() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let (mut child, hub_url, lines) = cli::serve(
        &["--log-format", "json"],
        &[
            ("REDIS_URL", url.as_str()),
            ("HUB_HEARTBEAT_INTERVAL", "7s"),
        ],
    );
    let start: serde_json::Value =
        serde_json::from_str(lines.last().unwrap()).expect("JSON log line");
    assert_eq!(start["level"], "INFO");
    assert!(
        start["message"].as_str().unwrap().contains("broker redis"),
        "{start}"
    );
    let ws = hub_url.replace("http://", "ws://");
    let mut client = WsClient::connect(&format!("{ws}/api/v1/projects/envtest/progress")).await;
    let connected = client.next_json().await;
    assert_eq!(connected["data"]["heartbeat_interval"], 7);
    assert_eq!(
        redis.numsub("envtest").await,
        1,
        "subscribed through the REDIS_URL Redis"
    );
    cli::sigterm(&child);
    assert_eq!(client.expect_close().await, Some(1012));
    let _ = child.wait();
}

#[test]
fn listening_on_a_taken_port_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = cli::run(&["serve", "--listen", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}

on_both_brokers!(shutdown_closes_clients_with_1012, health_endpoints_answer,);
