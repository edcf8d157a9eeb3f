//! Slow consumers: a client that stops reading is closed; everyone else gets everything.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient};

/// A client that connects, reads `connected`, then never reads again, but says it is
/// alive every second (the hub counts any client frame as life, no ping needed): only
/// the slow-consumer rule may close it, however long the burst takes. (Silent, it was
/// closed by the heartbeat instead when a busy machine made the burst outlast the
/// timeout.) Sending on `stop` hands the client back.
async fn stalled_client(url: &str) -> (oneshot::Sender<()>, JoinHandle<WsClient>) {
    let mut client = WsClient::connected(url).await;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return client,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    let pong = Message::text(r#"{"event":"pong"}"#);
                    if client.ws.send(pong).await.is_err() {
                        // Closed by the hub: nothing more to say.
                        let _ = stopped.await;
                        return client;
                    }
                }
            }
        }
    });
    (stop, task)
}

// One client stops reading during a burst of 20,000 events (every tenth a 4 KB log,
// the rest progress updates), while 100 others read: each of the 100 gets every log,
// in order, and progress that never goes back and ends at the newest; the stalled one
// is closed as a slow consumer (4429, or dropped when not even the close frame fits)
// and what reached it before that is a gap-free prefix of the logs.
//
// On Redis: its round trips pace the burst as a worker's would. (In-process, a tight
// loop publishes faster than any client reads, and every client is rightly a slow one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_others_get_everything() {
    let b = Backend::Redis;
    const EVENTS: usize = 20_000;
    const NORMAL: usize = 100;
    let hub = TestHub::start_with(b, |c| c.queue_capacity = 256).await;
    let url = hub.ws_url("burst");
    let (stop_pongs, stalled) = stalled_client(&url).await;
    let mut normal = Vec::new();
    for _ in 0..NORMAL {
        normal.push(WsClient::connected(&url).await);
    }
    let before = support::metric(&hub, "hub_slow_consumer_closes_total").await;
    let padding = "進度".repeat(680); // ~4 KB: the logs alone far exceed socket buffers
    // Written out by hand so that each frame starts with its event name.
    let frames: Vec<String> = (0..EVENTS)
        .map(|i| {
            if i % 10 == 0 {
                format!(r#"{{"event":"log","data":{{"level":"INFO","message":"{i} {padding}"}}}}"#)
            } else {
                let progress = i * 100 / EVENTS;
                format!(r#"{{"event":"progress_update","data":{{"status":"RENDERING","progress":{progress},"current_stage":"{i}"}}}}"#)
            }
        })
        .collect();
    let publishing = async {
        for frame in &frames {
            hub.publish_raw("burst", frame).await;
        }
    };
    // Frames are forwarded unchanged, so a reader compares text: each frame it gets is
    // the next one published, or a later one with only progress updates skipped.
    let frames = &frames;
    let readers = futures_util::future::join_all(normal.iter_mut().map(|c| async move {
        let mut next = 0;
        while next < EVENTS {
            let text = c.next_text().await;
            if text.starts_with(r#"{"event":"ping""#) {
                // Alive, as a real client says: the burst may outlast a heartbeat
                // timeout on a busy machine (it used to be raised to 120 s instead,
                // which the burst outlasted with the suite in parallel).
                c.send_text(r#"{"event":"pong"}"#).await;
                continue;
            }
            let at = frames[next..]
                .iter()
                .position(|f| *f == text)
                .expect("a frame that was published, not seen before");
            let skipped_log = frames[next..next + at]
                .iter()
                .position(|f| !f.starts_with(r#"{"event":"progress_update""#));
            assert!(
                skipped_log.is_none(),
                "only progress updates may be skipped (superseded): expected frame {next}, got {}, first skipped log at {:?}",
                next + at,
                skipped_log.map(|i| next + i)
            );
            next += at + 1;
        }
    }));
    // No bound on the whole: the burst is ~70 CPU-seconds of work in a debug build (2
    // million deliveries), so its wall-clock time measures the machine's load, not the
    // hub (a 120 s bound failed with the suite in parallel beside two CPU burners, and
    // alone on a busy machine). A stall is still caught: every read waits at most
    // PATIENCE for its frame, and a reader that falls behind is closed as a slow
    // consumer, which fails its read.
    tokio::join!(publishing, readers);
    support::eventually("the slow consumer was closed", || async {
        support::metric(&hub, "hub_slow_consumer_closes_total").await >= before + 1.0
    })
    .await;
    let _ = stop_pongs.send(());
    let mut slow = stalled.await.expect("the stalled client's task");
    // Now read what reached the stalled client: a prefix of the logs, then the end.
    let mut next_log = 0;
    loop {
        match slow.next_seen().await {
            support::Seen::Frame(f) if f["event"] == "log" => {
                let message = f["data"]["message"].as_str().unwrap();
                assert!(message.starts_with(&format!("{next_log} ")), "no gap");
                next_log += 10;
            }
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
        next_log < EVENTS,
        "the stalled client was cut off ({} of {} logs)",
        next_log / 10,
        EVENTS / 10
    );
}

/// Opens the SSE stream at `path` on a raw socket with a small receive buffer, which
/// the test then never reads: a reader that stalled.
async fn stalled_sse_reader(addr: &str, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = addr.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: hub\r\naccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads what reached `stream` until the hub closes it (EOF or reset); panics if the
/// connection is still open after `PATIENCE`.
async fn closed_by_the_hub(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0; 64 * 1024];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the hub closed the connection");
}

/// The scenario of issue 23 §3 on the `progress-hub` binary (so that it can be run
/// against an older build too): a hub on Redis with `envs`, one SSE reader of `project`
/// that never reads, then 300 `log` frames of ~24 KB (7 MB) published as a legacy
/// publisher does. Returns the hub's URL, the process and the reader.
async fn stalled_sse_reader_under_big_logs(
    redis: &support::RedisServer,
    project: &str,
    envs: &[(&str, &str)],
) -> (String, support::cli::Killed, tokio::net::TcpStream) {
    let path = format!("/api/v1/projects/{project}/events");
    stalled_reader_under_big_logs(redis, project, &path, envs).await
}

/// The same, the reader's stream at `path` (which must watch `project`).
async fn stalled_reader_under_big_logs(
    redis: &support::RedisServer,
    project: &str,
    path: &str,
    envs: &[(&str, &str)],
) -> (String, support::cli::Killed, tokio::net::TcpStream) {
    let mut envs = envs.to_vec();
    let redis_url = redis.url();
    envs.push(("REDIS_URL", &redis_url));
    // An idle kept-alive connection is closed after this: not what these tests see.
    envs.push(("HUB_HANDSHAKE_TIMEOUT", "60s"));
    let (child, url, _) = support::cli::serve(&["--no-worker"], &envs);
    let child = support::cli::Killed(child);
    let stalled = stalled_sse_reader(&url, path).await;
    let sessions = || support::metric_at(&url, SSE_SESSIONS);
    support::eventually_eq("the SSE session is open", 1.0, sessions).await;
    let mut conn = redis.connection().await;
    let padding = "x".repeat(24_000);
    for i in 0..300 {
        let frame =
            format!(r#"{{"event":"log","data":{{"level":"INFO","message":"{i} {padding}"}}}}"#);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(support::layout::channel(&support::project(project)))
            .arg(frame)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    (url, child, stalled)
}

const SSE_SESSIONS: &str = r#"hub_connections{transport="sse"}"#;

// An SSE reader that never reads (issue 23 §3: 1,000 of them, 200 logs of ~24 KB, held
// ~1 MB each, indefinitely; a WebSocket one is closed by the heartbeat timeout): SSE
// has the same liveness bound. A write that has not gone through for the heartbeat
// timeout ends the session (as a silent WebSocket client's, counted in
// `hub_heartbeat_timeouts_total`), and the hub drops the connection with whatever it
// still held for it. The byte cap is set out of the way here: liveness alone ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_is_ended_by_the_heartbeat_timeout() {
    let redis = support::RedisServer::start().await;
    let envs = [
        ("HUB_HEARTBEAT_INTERVAL", "300ms"),
        ("HUB_HEARTBEAT_TIMEOUT", "1s"),
        ("HUB_QUEUE_BYTES", "268435456"),
    ];
    let (url, _hub, mut stalled) = stalled_sse_reader_under_big_logs(&redis, "stall", &envs).await;
    let sessions = || support::metric_at(&url, SSE_SESSIONS);
    support::eventually_eq("the stalled session ended", 0.0, sessions).await;
    assert!(support::metric_at(&url, "hub_heartbeat_timeouts_total").await >= 1.0);
    closed_by_the_hub(&mut stalled).await;
}

// What an SSE session holds is capped in bytes as well as frames: with the default
// frame cap (1,024) and 24 KB logs, a stalled reader is a slow consumer once its queue
// holds `--queue-bytes` (here 1 MiB; 4 MiB by default), well before the heartbeat
// timeout (the default minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_is_a_slow_consumer_beyond_its_byte_cap() {
    let redis = support::RedisServer::start().await;
    let envs = [("HUB_QUEUE_BYTES", "1048576")];
    let (url, _hub, mut stalled) = stalled_sse_reader_under_big_logs(&redis, "capped", &envs).await;
    let sessions = || support::metric_at(&url, SSE_SESSIONS);
    support::eventually_eq("the stalled session ended", 0.0, sessions).await;
    assert!(support::metric_at(&url, "hub_slow_consumer_closes_total").await >= 1.0);
    closed_by_the_hub(&mut stalled).await;
}

// The multiplexed SSE stream (`/api/v1/progress/events`) has the same bounds: a stalled
// reader is ended by the heartbeat's write bound, or as a slow consumer beyond the byte
// cap, and its connection dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_multiplexed_sse_reader_is_ended_by_both_bounds() {
    let redis = support::RedisServer::start().await;
    let path = "/api/v1/progress/events?projects=other,mstall";
    let liveness = [
        ("HUB_HEARTBEAT_INTERVAL", "300ms"),
        ("HUB_HEARTBEAT_TIMEOUT", "1s"),
        ("HUB_QUEUE_BYTES", "268435456"),
    ];
    let (url, _hub, mut stalled) =
        stalled_reader_under_big_logs(&redis, "mstall", path, &liveness).await;
    let sessions = || support::metric_at(&url, SSE_SESSIONS);
    support::eventually_eq("the stalled session ended", 0.0, sessions).await;
    assert!(support::metric_at(&url, "hub_heartbeat_timeouts_total").await >= 1.0);
    closed_by_the_hub(&mut stalled).await;
    let bytes = [("HUB_QUEUE_BYTES", "1048576")];
    let (url, _hub, mut stalled) =
        stalled_reader_under_big_logs(&redis, "mstall", path, &bytes).await;
    let sessions = || support::metric_at(&url, SSE_SESSIONS);
    support::eventually_eq("the stalled session ended", 0.0, sessions).await;
    assert!(support::metric_at(&url, "hub_slow_consumer_closes_total").await >= 1.0);
    closed_by_the_hub(&mut stalled).await;
}
