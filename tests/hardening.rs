//! Hardening: slow consumers, limits, hostile peers — the hub keeps its promises to
//! everyone else.

mod support;

use serde_json::json;
use support::{Backend, PATIENCE, TestHub, WsClient};

/// A client that connects, reads `connected`, then never reads again.
async fn stalled_client(url: &str) -> WsClient {
    WsClient::connected(url).await
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
    let hub = TestHub::start_with(b, |c| {
        c.queue_capacity = 256;
        c.heartbeat_timeout = PATIENCE * 12; // these clients read, but do not answer pings
    })
    .await;
    let url = hub.ws_url("burst");
    let mut slow = stalled_client(&url).await;
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
    let (_, done) = tokio::join!(publishing, tokio::time::timeout(PATIENCE * 12, readers));
    done.expect("normal clients kept up");
    support::eventually("the slow consumer was closed", || async {
        support::metric(&hub, "hub_slow_consumer_closes_total").await >= before + 1.0
    })
    .await;
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

const SECRET: &str = "test-secret-do-not-use";

fn mint(projects: &[&str], publish: bool, ttl: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .arg("token")
        .args(projects.iter().flat_map(|p| ["--project", p]))
        .args(["--ttl", ttl, "--auth-secret", SECRET])
        .args(publish.then_some("--publish"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

// With --auth-secret, tokens decide who watches and who publishes; refusals happen
// before the upgrade and say nothing about internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_watching_and_publishing_to_their_projects() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.auth_secret = Some(SECRET.into());
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let watch_a = mint(&["a"], false, "1h");
    let publish_a = mint(&["a"], true, "1h");
    let base = hub.ws_url("a");
    assert_eq!(upgrade_status(&base, None).await, 401, "no token");
    assert_eq!(
        upgrade_status(&format!("{base}?token=garbage"), None).await,
        401
    );
    assert_eq!(
        upgrade_status(&format!("{}?token={watch_a}", hub.ws_url("b")), None).await,
        403,
        "A's token cannot watch B"
    );
    assert_eq!(
        upgrade_status(
            &format!("{base}?token={watch_a}"),
            Some("https://evil.example")
        )
        .await,
        403,
        "cross-site"
    );
    assert_eq!(
        upgrade_status(
            &format!("{base}?token={watch_a}"),
            Some("https://app.example")
        )
        .await,
        101
    );
    let mut client = WsClient::connected(&format!("{base}?token={watch_a}")).await;

    let http = reqwest::Client::new();
    let post = |token: Option<String>, project: &str| {
        let mut request = http
            .post(hub.http(&format!("/api/v1/projects/{project}/events")))
            .json(&json!({"event": "log", "data": {"level": "INFO", "message": "m"}}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = post(None, "a").await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    assert_eq!(
        post(Some(watch_a.clone()), "a").await.unwrap().status(),
        403,
        "watch tokens cannot publish"
    );
    assert_eq!(
        post(Some(publish_a.clone()), "b").await.unwrap().status(),
        403,
        "nor publish elsewhere"
    );
    assert_eq!(
        post(Some(publish_a.clone()), "a").await.unwrap().status(),
        202
    );
    assert_eq!(client.next_event().await["data"]["message"], "m");
    let generate = http
        .post(hub.http("/api/v1/projects/b/generate"))
        .bearer_auth(&publish_a)
        .send()
        .await
        .unwrap();
    assert_eq!(generate.status(), 403);
    let state = http
        .get(hub.http("/api/v1/projects/a"))
        .bearer_auth(&watch_a)
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200);
    let sse = http
        .get(hub.http("/api/v1/projects/a/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 401);
}

// A token that expires during a session closes it with 4401, unless refreshed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_close_with_4401_unless_refreshed() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.auth_secret = Some(SECRET.into())).await;
    let short = mint(&["a"], false, "2s");
    let mut lapsing = WsClient::connected(&format!("{}?token={short}", hub.ws_url("a"))).await;
    let mut refreshed = WsClient::connected(&format!("{}?token={short}", hub.ws_url("a"))).await;
    refreshed
        .send_text(
            &json!({"event": "refresh", "data": {"token": mint(&["a"], false, "1h")}}).to_string(),
        )
        .await;
    assert_eq!(
        lapsing.expect_close().await,
        Some(4401),
        "expired without refresh"
    );
    // The refreshed session outlived the first token.
    let publish = mint(&["a"], true, "1h");
    let status = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/a/events"))
        .bearer_auth(publish)
        .json(&json!({"event": "log", "data": {"level": "INFO", "message": "still here"}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert_eq!(
        refreshed.next_event().await["data"]["message"],
        "still here"
    );
}

/// Watches `project`, starts its generation job, and returns once the job is in its
/// second step (so that a fault hits it mid-run).
async fn watch_a_job_into_its_second_step(hub: &TestHub, project: &str) -> WsClient {
    let mut client = WsClient::connected(&hub.ws_url(project)).await;
    assert_eq!(hub.generate(project, &json!({})).await.0, 202);
    loop {
        let frame = client.next_event().await;
        if frame["data"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("[2/15]"))
        {
            return client;
        }
    }
}

/// Frames until `complete`, waiting as long as an outage may take.
async fn frames_until_complete(
    client: &mut WsClient,
    patience: std::time::Duration,
) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(patience, client.next_event())
            .await
            .expect("the run goes on after the outage");
        if matches!(frame["event"].as_str(), Some("connected" | "snapshot")) {
            continue;
        }
        let done = frame["event"] == "complete";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Redis freezes mid-job for `outage`: the hub stays up and says it is not ready, the
/// job's publishes wait and retry (idempotently), the subscriber catches up, and the
/// watching client sees every event exactly once — no gap, no duplicate, one complete.
async fn redis_outage_mid_job_loses_nothing(outage: std::time::Duration) {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = std::time::Duration::from_millis(30);
        }
        // This client reads but does not answer pings; the outage is what is tested.
        c.heartbeat_timeout = outage + PATIENCE * 3;
    })
    .await;
    let mut client = watch_a_job_into_its_second_step(&hub, "outage").await;
    hub.redis().pause();
    let ready = reqwest::get(hub.http("/readyz")).await.unwrap().status();
    tokio::time::sleep(outage).await; // the outage itself: a duration, nothing to await
    hub.redis().resume();
    assert_eq!(ready, 503, "not ready while Redis is frozen");
    let frames = frames_until_complete(&mut client, outage + PATIENCE * 2).await;
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| {
            f["id"]
                .as_str()
                .unwrap()
                .split_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate: {seqs:?}"
    );
    for n in 3..=15 {
        let line = format!("[{n}/15]");
        let count = frames
            .iter()
            .filter(|f| {
                f["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&line))
            })
            .count();
        assert_eq!(count, 1, "{line} exactly once");
    }
    assert_eq!(
        frames.iter().filter(|f| f["event"] == "complete").count(),
        1
    );
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    support::eventually("ready again", || async {
        reqwest::get(hub.http("/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
}

// Redis restarted empty mid-job: the queue lost the job with everything else. The
// worker notices its claim is gone with nobody holding it, queues the job again, and
// the run is done in full (in a new history: watchers get it from its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_with_redis_data_is_queued_again_and_completes() {
    let mut hub = TestHub::start_with(Backend::Redis, |c| {
        if let Some(w) = c.worker.as_mut() {
            // A run of ~5 s: keep-alives (every 0.5 s) see the emptied queue mid-run.
            w.mock_delay = std::time::Duration::from_millis(150);
            w.claim_idle = std::time::Duration::from_secs(2);
        }
    })
    .await;
    let mut client = watch_a_job_into_its_second_step(&hub, "emptied").await;
    hub.redis.as_mut().unwrap().restart().await;
    let frames = frames_until_complete(&mut client, PATIENCE * 3).await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["data"]["status"], "COMPLETED", "{complete}");
    assert!(
        frames.iter().any(|f| f["data"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("[15/15]"))),
        "the run went through to its last step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_60s_mid_job_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("progress_hub=info")
        .try_init();
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_1s_mid_job_loses_nothing() {
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_10s_mid_job_loses_nothing() {
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(10)).await;
}

// While Redis is down, publishers wait and retry within a bounded buffer: beyond
// `MAX_WAITING_PUBLISHES` waiting at once, a publish fails at once with an error that
// says so (never a silent drop), and those that waited go through when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_wait_out_an_outage_within_a_bound_and_say_when_it_is_hit() {
    use progress_hub::publish::{MAX_WAITING_PUBLISHES, Publisher};
    let mut hub = TestHub::start(Backend::Redis).await;
    let broker = hub.hub.as_ref().unwrap().broker().clone();
    let publisher = Publisher::retrying(
        broker,
        progress_hub::locale::Locale::En,
        std::time::Duration::from_millis(500),
        PATIENCE * 3,
    );
    hub.redis.as_mut().unwrap().kill();
    let total = MAX_WAITING_PUBLISHES + 50;
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..total {
        let publisher = publisher.clone();
        publishes.spawn(async move {
            // One project each: publishes of one project are serialized, and the bound
            // is about the process as a whole.
            let project = progress_hub::wire::ProjectId::parse(&format!("bound-{i}")).unwrap();
            let event = progress_hub::wire::Event::from_json(
                json!({"event": "log", "data": {"level": "INFO", "message": "waited"}})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            publisher.publish(&project, event).await
        });
    }
    // The ones over the bound come back first, each with its reason.
    let mut refused = 0;
    while refused < total - MAX_WAITING_PUBLISHES {
        let result = publishes.join_next().await.unwrap().unwrap();
        let err = result.expect_err("no publish can succeed while Redis is down");
        assert!(
            err.to_string().contains("already wait for the broker"),
            "{err}"
        );
        refused += 1;
    }
    hub.redis.as_mut().unwrap().restart().await;
    let mut delivered = 0;
    while let Some(result) = publishes.join_next().await {
        assert!(result.unwrap().is_ok(), "a waiting publish goes through");
        delivered += 1;
    }
    assert_eq!(delivered, MAX_WAITING_PUBLISHES);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// 10,000 connect → first frame → close cycles, then 1,000 projects opened and closed:
// connections, watched projects, Redis subscriptions, tasks, file descriptors and memory
// return to their baseline (generous margins; the figures are in BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cycles_leave_no_leak() {
    let hub = TestHub::start_with(Backend::Redis, |c| c.worker = None).await;
    let warmup = WsClient::connected(&hub.ws_url("warm")).await;
    warmup.close().await;
    let settle = || async {
        support::eventually("connections closed and channels unsubscribed", || async {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg("progress:*")
                .query_async(&mut hub.redis().connection().await)
                .await
                .unwrap();
            channels.is_empty() && support::metric(&hub, "hub_projects_watched").await == 0.0
        })
        .await;
    };
    settle().await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let (fds0, rss0, tasks0) = (open_fds(), rss_kib(), tasks());

    let cycle = |project: String| {
        let url = hub.ws_url(&project);
        async move {
            let client = WsClient::connected(&url).await;
            client.close().await;
        }
    };
    use futures_util::StreamExt;
    futures_util::stream::iter((0..10_000).map(|i| cycle(format!("churn-{}", i % 10))))
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    futures_util::stream::iter((0..1_000).map(|i| cycle(format!("project-{i}"))))
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    settle().await;
    let (fds1, rss1, tasks1) = (open_fds(), rss_kib(), tasks());
    eprintln!(
        "leak check: fds {fds0} → {fds1}, RSS {rss0} → {rss1} KiB, tasks {tasks0} → {tasks1}"
    );
    assert!(fds1 <= fds0 + 20, "file descriptors: {fds0} → {fds1}");
    assert!(tasks1 <= tasks0 + 10, "tasks: {tasks0} → {tasks1}");
    assert!(rss1 <= rss0 + 64 * 1024, "memory: {rss0} → {rss1} KiB");
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
    let first = hub.publish("stuck", support::log_event("first")).await;
    let pad = "x".repeat(8_000);
    for i in 0..990 {
        hub.publish("stuck", support::log_event(&format!("{i} {pad}")))
            .await;
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
