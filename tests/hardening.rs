//! Hardening: slow consumers, limits, hostile peers — the hub keeps its promises to
//! everyone else.

mod support;

use serde_json::json;
use support::{Backend, PATIENCE, TestHub, WsClient};

/// A client that connects, reads `connected`, then never reads again.
async fn stalled_client(url: &str) -> WsClient {
    WsClient::connected(url).await
}

// One client stops reading during a burst: it is closed as a slow consumer (4429, or
// dropped when not even the close frame fits), and every other client still gets every
// event, in order.
async fn slow_consumer_is_closed_and_others_get_everything(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.queue_capacity = 256).await;
    let url = hub.ws_url("burst");
    let mut slow = stalled_client(&url).await;
    let mut normal = Vec::new();
    for _ in 0..20 {
        normal.push(WsClient::connected(&url).await);
    }
    let before = metric(&hub, "hub_slow_consumer_closes_total").await;
    const EVENTS: usize = 3000;
    let padding = "進度".repeat(300); // ~1.8 KB per frame: far more than socket buffers hold
    // Published over HTTP, back to back: a burst at the pace of the publish path.
    let publish_url = hub.http("/api/v1/projects/burst/events");
    let publishing = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0..EVENTS {
            let event = json!({"event": "log", "data": {"level": "INFO", "message": format!("{i} {padding}")}});
            let status = http
                .post(&publish_url)
                .json(&event)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 202);
        }
    });
    let readers = futures_util::future::join_all(normal.iter_mut().map(|c| async {
        for i in 0..EVENTS {
            let frame = c.next_event().await;
            let message = frame["data"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("{i} ")),
                "in order, none missing"
            );
        }
    }));
    tokio::time::timeout(PATIENCE * 6, readers)
        .await
        .expect("normal clients kept up");
    publishing.await.unwrap();
    support::eventually("the slow consumer was closed", || async {
        metric(&hub, "hub_slow_consumer_closes_total").await >= before + 1.0
    })
    .await;
    // Now read what reached the stalled client: fewer than all events, then the end.
    let mut logs = 0;
    loop {
        match slow.next_seen().await {
            support::Seen::Frame(f) if f["event"] == "log" => logs += 1,
            support::Seen::Frame(_) => {}
            support::Seen::Close(close) => {
                if let Some((code, _)) = close {
                    assert_eq!(code, 4429);
                }
                break;
            }
        }
    }
    assert!(
        logs < EVENTS,
        "the stalled client was cut off ({logs} of {EVENTS})"
    );
}

on_both_brokers!(slow_consumer_is_closed_and_others_get_everything);

async fn metric(hub: &TestHub, name: &str) -> f64 {
    let text = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
