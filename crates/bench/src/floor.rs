//! `floor`: the least a relay of the hub's shape can do, so that every benchmark figure
//! can be divided by the same figure of the floor measured in the same minute (issue
//! #16: absolute numbers on a shared 2-core machine move 2× between runs).
//!
//! What it does, and nothing more:
//! - one Redis connection in subscribed mode; `SUBSCRIBE progress:<id>` when a
//!   project's first client arrives, `UNSUBSCRIBE` when its last leaves (one command per
//!   project, pipelined: no batching of several projects into one command);
//! - every message of a channel is written, byte for byte, to every client of its
//!   project (one shared buffer, no parsing, no validation);
//! - `connected` first, once Redis confirmed the subscription (so nothing published
//!   after it is missed, as the hub promises);
//! - `{"event":"ping"}` is answered with `pong` (protocol pings by tungstenite);
//! - the hub's socket settings: `TCP_NODELAY`, a 512-byte WebSocket read buffer, 8 KiB
//!   write batching, 256 KiB most per client, the hub's 64 KiB frame limit
//!   (`crates/hub/src/http/listener.rs`, `crates/hub/src/http/progress.rs`).
//!
//! What it does not do, so the hub ÷ floor ratio is what these cost: history, replay,
//! snapshots, ids and de-duplication (a `last_event_id` is answered `resumed: true,
//! recovered: false`, honestly), heartbeat pings and silence timeouts, the slow-consumer
//! policy (a client's queue is unbounded), connection limits, the handshake timeout,
//! SSE, the REST API, metrics, logs, and reconnecting to Redis (it exits instead).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Utf8Bytes, http::HeaderValue};

/// The hub's WebSocket settings (`crates/hub/src/http/progress.rs`, `crates/hub/src/config.rs`).
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 8 * 1024;
const MAX_WRITE_BUFFER: usize = 256 * 1024;
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// As the hub: how long a client waits for Redis to confirm the subscription before it
/// is told `connected` anyway (then with `recovered: false`).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);
/// As the hub: after a failed accept (out of descriptors), wait before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Args, Clone)]
pub struct FloorArgs {
    /// Where to listen (loopback only); port 0 picks a free one. The URL is printed as
    /// `floor listening on ws://...` once the Redis subscriber is connected.
    #[arg(long, default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// A single Redis node, `redis://HOST:PORT` (no auth, no TLS, no cluster).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The `heartbeat_interval` announced in `connected` (no pings are sent).
    #[arg(long, default_value_t = 30)]
    heartbeat_interval: u64,
}

/// One client's outgoing frames: a queue and a wake-up, nothing else.
#[derive(Default)]
struct Outbox {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    ready: Notify,
}

impl Outbox {
    fn push(&self, frame: Utf8Bytes) {
        self.frames.lock().push_back(frame);
        self.ready.notify_one();
    }
}

struct Topic {
    clients: HashMap<u64, Arc<Outbox>>,
    subscribed: watch::Sender<bool>,
}

#[derive(Default)]
struct Topics {
    live: HashMap<String, Topic>,
    /// SUBSCRIBE commands sent and not yet confirmed, per channel. A topic is live in
    /// Redis once all of its channel's are confirmed: its own SUBSCRIBE is the last one
    /// sent for the channel (an UNSUBSCRIBE only follows the topic's removal).
    awaiting: HashMap<String, u32>,
}

struct Relay {
    topics: Mutex<Topics>,
    /// Packed commands for the subscriber connection, in the order they were decided.
    commands: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    heartbeat_interval: u64,
}

fn channel_of(project: &str) -> String {
    format!("progress:{project}")
}

impl Relay {
    fn join(&self, project: &str, outbox: Arc<Outbox>) -> (u64, watch::Receiver<bool>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.topics.lock();
        let topics = &mut *topics;
        if let Some(topic) = topics.live.get_mut(project) {
            topic.clients.insert(id, outbox);
            return (id, topic.subscribed.subscribe());
        }
        let channel = channel_of(project);
        *topics.awaiting.entry(channel.clone()).or_default() += 1;
        // Sent under the lock, so the connection sees commands in decision order.
        let _ = self
            .commands
            .send(redis::cmd("SUBSCRIBE").arg(&channel).get_packed_command());
        let (subscribed, rx) = watch::channel(false);
        topics.live.insert(
            project.to_string(),
            Topic {
                clients: HashMap::from([(id, outbox)]),
                subscribed,
            },
        );
        (id, rx)
    }

    fn leave(&self, project: &str, id: u64) {
        let mut topics = self.topics.lock();
        let Some(topic) = topics.live.get_mut(project) else {
            return;
        };
        topic.clients.remove(&id);
        if topic.clients.is_empty() {
            topics.live.remove(project);
            let _ = self.commands.send(
                redis::cmd("UNSUBSCRIBE")
                    .arg(channel_of(project))
                    .get_packed_command(),
            );
        }
    }

    fn confirmed(&self, channel: &str) {
        let mut topics = self.topics.lock();
        let Some(waiting) = topics.awaiting.get_mut(channel) else {
            return;
        };
        *waiting = waiting.saturating_sub(1);
        if *waiting > 0 {
            return;
        }
        topics.awaiting.remove(channel);
        if let Some(topic) = channel
            .strip_prefix("progress:")
            .and_then(|p| topics.live.get(p))
        {
            topic.subscribed.send_replace(true);
        }
    }

    fn deliver(&self, channel: &str, payload: Utf8Bytes) {
        let Some(project) = channel.strip_prefix("progress:") else {
            return;
        };
        let topics = self.topics.lock();
        if let Some(topic) = topics.live.get(project) {
            for outbox in topic.clients.values() {
                outbox.push(payload.clone());
            }
        }
    }
}

/// Leaves the topic however the connection ends.
struct Membership<'a> {
    relay: &'a Relay,
    project: &'a str,
    id: u64,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.relay.leave(self.project, self.id);
    }
}

pub async fn run(args: FloorArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("the floor listens on loopback addresses only");
    }
    let redis_addr = redis_address(&args.redis_url)?;
    let redis = TcpStream::connect(&redis_addr)
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_addr}"))?;
    let _ = redis.set_nodelay(true);
    let (redis_read, redis_write) = redis.into_split();
    let (commands, pending) = mpsc::unbounded_channel();
    let relay = Arc::new(Relay {
        topics: Mutex::new(Topics::default()),
        commands,
        next_id: AtomicU64::new(1),
        heartbeat_interval: args.heartbeat_interval,
    });
    // The hub's listen backlog (4096, capped by somaxconn), not std's 128.
    let listener = progress_hub::http::listener::bind(args.listen)?;
    println!("floor listening on ws://{}", listener.local_addr()?);
    tokio::select! {
        result = write_commands(redis_write, pending) => result,
        result = read_messages(redis_read, Arc::clone(&relay)) => result,
        result = accept(listener, relay) => result,
    }
}

/// `redis://HOST:PORT[/DB]` → `HOST:PORT` (the floor speaks no AUTH or SELECT).
fn redis_address(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("redis://")
        .context("the floor takes a redis://HOST:PORT URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains('@') {
        bail!("the floor does not authenticate to Redis");
    }
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    })
}

async fn write_commands(
    conn: OwnedWriteHalf,
    mut pending: mpsc::UnboundedReceiver<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut conn = BufWriter::new(conn);
    while let Some(command) = pending.recv().await {
        conn.write_all(&command).await?;
        while let Ok(command) = pending.try_recv() {
            conn.write_all(&command).await?;
        }
        conn.flush().await?;
    }
    Ok(())
}

/// One RESP2 reply of a subscribed connection: an array of scalars.
enum Item {
    Bulk(Option<Vec<u8>>),
    Int,
    Simple,
}

async fn read_line(conn: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> anyhow::Result<()> {
    line.clear();
    if conn.read_until(b'\n', line).await? == 0 {
        bail!("Redis closed the subscriber connection");
    }
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
    }
    Ok(())
}

fn number(text: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(text)?
        .parse()
        .context("a RESP length or integer")
}

async fn read_item(
    conn: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> anyhow::Result<Item> {
    read_line(conn, line).await?;
    match line.first() {
        Some(b'$') => {
            let len = number(&line[1..])?;
            if len < 0 {
                return Ok(Item::Bulk(None));
            }
            let mut data = vec![0; usize::try_from(len)? + 2];
            conn.read_exact(&mut data).await?;
            data.truncate(data.len() - 2);
            Ok(Item::Bulk(Some(data)))
        }
        Some(b':') => number(&line[1..]).map(|_| Item::Int),
        Some(b'+') => Ok(Item::Simple),
        Some(b'-') => bail!("Redis error: {}", String::from_utf8_lossy(&line[1..])),
        _ => bail!(
            "unexpected reply from Redis: {}",
            String::from_utf8_lossy(line)
        ),
    }
}

async fn read_messages(conn: OwnedReadHalf, relay: Arc<Relay>) -> anyhow::Result<()> {
    let mut conn = BufReader::with_capacity(64 * 1024, conn);
    let mut line = Vec::new();
    loop {
        read_line(&mut conn, &mut line).await?;
        let count = match line.first() {
            Some(b'*') => number(&line[1..])?,
            Some(b'-') => bail!("Redis error: {}", String::from_utf8_lossy(&line[1..])),
            _ => bail!(
                "unexpected reply from Redis: {}",
                String::from_utf8_lossy(&line)
            ),
        };
        let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(4));
        for _ in 0..count {
            items.push(read_item(&mut conn, &mut line).await?);
        }
        let Ok([Item::Bulk(Some(kind)), Item::Bulk(Some(channel)), third]) =
            <[Item; 3]>::try_from(items)
        else {
            continue;
        };
        match (kind.as_slice(), third) {
            (b"message", Item::Bulk(Some(payload))) => {
                // A text frame must be UTF-8; anything else is not a frame to relay.
                if let (Ok(channel), Ok(payload)) =
                    (std::str::from_utf8(&channel), String::from_utf8(payload))
                {
                    relay.deliver(channel, Utf8Bytes::from(payload));
                }
            }
            (b"subscribe", Item::Int) => relay.confirmed(&String::from_utf8_lossy(&channel)),
            _ => {} // unsubscribe confirmations
        }
    }
}

async fn accept(listener: TcpListener, relay: Arc<Relay>) -> anyhow::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Arc::clone(&relay)));
            }
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

/// The project and whether a resume position was given, from
/// `/api/v1/projects/{id}/progress[?last_event_id=...]`.
fn target(request: &Request) -> Option<(String, bool)> {
    let uri = request.uri();
    let project = uri
        .path()
        .strip_prefix("/api/v1/projects/")?
        .strip_suffix("/progress")?;
    let valid = (1..=64).contains(&project.len())
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return None;
    }
    let resumed = uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("last_event_id=")
                .is_some_and(|v| !v.is_empty())
        })
    });
    Some((project.to_string(), resumed))
}

fn bad_request() -> ErrorResponse {
    let body = r#"{"error":{"code":"INVALID_PROJECT_ID","message":"the path must be /api/v1/projects/{project_id}/progress with project_id matching ^[A-Za-z0-9_-]{1,64}$"}}"#;
    let mut response = ErrorResponse::new(Some(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// tungstenite's `Callback` fixes the error type (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, relay: Arc<Relay>) {
    let _ = stream.set_nodelay(true);
    let mut wanted = None;
    let callback = |request: &Request, response: Response| match target(request) {
        Some(found) => {
            wanted = Some(found);
            Ok(response)
        }
        None => Err(bad_request()),
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let Some((project, resumed)) = wanted else {
        return;
    };
    let outbox = Arc::new(Outbox::default());
    let (id, mut subscribed) = relay.join(&project, Arc::clone(&outbox));
    let _membership = Membership {
        relay: &relay,
        project: &project,
        id,
    };
    let confirmed = matches!(
        tokio::time::timeout(SUBSCRIBE_WAIT, subscribed.wait_for(|s| *s)).await,
        Ok(Ok(_))
    );
    // No history: a resume cannot be honoured, and is said so.
    let connected = format!(
        r#"{{"event":"connected","data":{{"project_id":"{project}","timestamp":"{}","heartbeat_interval":{},"resumed":{resumed},"recovered":{}}}}}"#,
        now(),
        relay.heartbeat_interval,
        confirmed && !resumed
    );
    if ws.send(Message::text(connected)).await.is_err() {
        return;
    }
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            () = outbox.ready.notified() => {
                std::mem::swap(&mut batch, &mut *outbox.frames.lock());
                for frame in batch.drain(..) {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let is_ping = serde_json::from_str::<serde_json::Value>(&text)
                        .is_ok_and(|v| v["event"] == "ping");
                    if is_ping {
                        let pong = format!(r#"{{"event":"pong","data":{{"timestamp":"{}"}}}}"#, now());
                        if ws.send(Message::text(pong)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request {
        Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn target_takes_the_hub_url_and_refuses_what_the_hub_refuses() {
        assert_eq!(
            target(&request("/api/v1/projects/p-1_x/progress")),
            Some(("p-1_x".into(), false))
        );
        assert_eq!(
            target(&request("/api/v1/projects/p/progress?last_event_id=a:1")),
            Some(("p".into(), true))
        );
        assert_eq!(
            target(&request("/api/v1/projects/p/progress?last_event_id=")),
            Some(("p".into(), false))
        );
        assert_eq!(target(&request("/api/v1/projects/a.b/progress")), None);
        assert_eq!(target(&request("/api/v1/projects//progress")), None);
        let long = format!("/api/v1/projects/{}/progress", "x".repeat(65));
        assert_eq!(target(&request(&long)), None);
    }

    fn relay() -> (Relay, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (commands, sent) = mpsc::unbounded_channel();
        let relay = Relay {
            topics: Mutex::new(Topics::default()),
            commands,
            next_id: AtomicU64::new(1),
            heartbeat_interval: 30,
        };
        (relay, sent)
    }

    fn command(sent: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> String {
        String::from_utf8(sent.try_recv().expect("a command")).unwrap()
    }

    #[test]
    fn one_subscribe_per_first_watcher_one_unsubscribe_per_last() {
        let (relay, mut sent) = relay();
        let (a, _) = relay.join("p", Arc::default());
        let (b, _) = relay.join("p", Arc::default());
        assert!(command(&mut sent).contains("SUBSCRIBE\r\n$10\r\nprogress:p"));
        assert!(sent.try_recv().is_err(), "the second watcher sends nothing");
        relay.leave("p", a);
        assert!(sent.try_recv().is_err(), "b still watches");
        relay.leave("p", b);
        assert!(command(&mut sent).contains("UNSUBSCRIBE\r\n$10\r\nprogress:p"));
    }

    #[test]
    fn a_topic_is_live_only_once_its_own_subscribe_is_confirmed() {
        // SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE pipelined: the first confirmation is the old
        // topic's, and Redis has yet to process the UNSUBSCRIBE and the new SUBSCRIBE.
        let (relay, _sent) = relay();
        let (old, _) = relay.join("p", Arc::default());
        relay.leave("p", old);
        let (_new, subscribed) = relay.join("p", Arc::default());
        relay.confirmed("progress:p");
        assert!(
            !*subscribed.borrow(),
            "live before its own SUBSCRIBE was processed"
        );
        relay.confirmed("progress:p");
        assert!(*subscribed.borrow());
    }

    #[test]
    fn a_message_goes_to_every_client_of_its_project_only() {
        let (relay, _sent) = relay();
        let (a, b, c) = (
            Arc::<Outbox>::default(),
            Arc::<Outbox>::default(),
            Arc::<Outbox>::default(),
        );
        relay.join("p", Arc::clone(&a));
        relay.join("p", Arc::clone(&b));
        relay.join("q", Arc::clone(&c));
        relay.deliver("progress:p", Utf8Bytes::from_static("x"));
        assert_eq!(a.frames.lock().len(), 1);
        assert_eq!(b.frames.lock().len(), 1);
        assert!(c.frames.lock().is_empty());
    }

    #[test]
    fn redis_address_reads_host_and_port() {
        assert_eq!(
            redis_address("redis://127.0.0.1:7000/0").unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(
            redis_address("redis://localhost").unwrap(),
            "localhost:6379"
        );
        assert!(redis_address("redis://u:p@h:1").is_err());
        assert!(redis_address("rediss://h:1").is_err());
    }
}
