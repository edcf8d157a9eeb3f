//! Heartbeat: live clients are kept (also when busy), silent ones closed with 4408, even
//! behind a stuck opening replay.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient};

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
        // Room for the whole backlog, in frames and in bytes.
        c.queue_capacity = 4096;
        c.queue_bytes = 64 * 1024 * 1024;
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
    // The client is a task of its own, as a real one is a process of its own: joined
    // with the publishing loop in one task it read only between two polls of that
    // loop, so under CPU load (each in-process publish of 24 KB then takes ms) it stopped
    // reading for over a second, and the hub rightly took it for dead.
    let reading = tokio::spawn(async move {
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
    });
    publishing.await;
    if let Err(failed) = reading.await {
        std::panic::resume_unwind(failed.into_panic());
    }
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

// A resume whose replay the client never reads: the opening write sticks on a full
// socket, and the heartbeat must still end the session and free its slot (found by
// review: the opening write was raced against shutdown only, so such a session held
// its connection slot until a restart). The hub admits one connection at a time, so a
// second client gets in only once the stuck session is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_opening_replay_still_ends_with_the_heartbeat() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.heartbeat_interval = std::time::Duration::from_millis(200);
        c.heartbeat_timeout = std::time::Duration::from_millis(600);
        c.max_connections = 1;
    })
    .await;
    // Published through the hub's publisher (the HTTP API's path): with one connection
    // slot per hub, every HTTP request would need the last one's slot back first.
    let publisher = hub.publisher().clone();
    let publish = |event: serde_json::Value| {
        let publisher = publisher.clone();
        async move {
            let event = progress_hub::wire::Event::from_json(event.to_string().as_bytes()).unwrap();
            match publisher.publish(&support::project("stuck"), event).await {
                Ok(progress_hub::publish::Published::Sent(id)) => id.to_string(),
                other => panic!("{other:?}"),
            }
        }
    };
    let first = publish(support::log_event("first")).await;
    let pad = "x".repeat(8_000);
    for i in 0..990 {
        publish(support::log_event(&format!("{i} {pad}"))).await;
    }
    // 8 MB of replay, more than loopback socket buffers hold; the client never reads.
    let url = format!("{}?last_event_id={first}", hub.ws_url("stuck"));
    let (silent, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    support::eventually(
        "a second client gets in once the stuck session ended",
        || async {
            let mut next = WsClient::connect(&hub.ws_url("other")).await;
            matches!(next.next_seen().await, support::Seen::Frame(f) if f["event"] == "connected")
        },
    )
    .await;
    drop(silent);
}

on_both_brokers!(
    heartbeat_keeps_an_answering_client,
    heartbeat_closes_a_silent_client_with_4408,
    a_busy_session_still_hears_its_client,
    protocol_pings_are_answered,
);
