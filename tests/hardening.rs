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
