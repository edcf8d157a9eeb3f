//! A TCP proxy between a hub and one Redis node that can make Pub/Sub deliveries vanish
//! while everything else (commands, their replies, PING answers, SUBSCRIBE
//! confirmations) still passes: the fault of a subscriber that is reachable but no
//! longer alive (after a failover behind a load balancer or a Sentinel-managed address,
//! Centrifugo #1189). A killed connection or a frozen server is caught by the PING
//! keep-alive; this is not.
//!
//! To drop a delivery and nothing else it must know where one reply ends and the next
//! begins on the Redis → hub direction, so it reads RESP framing there: a minimal reader
//! ([`frame_len`]) is enough, because Redis only ever sends well-formed frames and the
//! test needs no values, only lengths and the first element's name. A replica's
//! replication link (one that sent `SYNC`/`PSYNC`: the snapshot that follows is not a
//! RESP frame) is passed as is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the proxy is told to do with deliveries.
#[derive(Default)]
struct Faults {
    /// Connections numbered below this one lose their deliveries (the ones open when
    /// [`RedisProxy::drop_deliveries_on_open_connections`] was called).
    silenced_below: AtomicU64,
    /// Every connection, also ones opened later, loses its deliveries.
    silence_all: AtomicBool,
    /// How many deliveries on a hub's channels (`progress:…`, `progress-hub:probe:…`)
    /// were dropped; others (a sentinel's hello messages) are dropped uncounted.
    dropped: AtomicU64,
    /// How many connections were accepted: the next one's number.
    accepted: AtomicU64,
    /// How many connections subscribed to a hub's probe channel (a hub's subscriber:
    /// one more per rebuild), as Redis confirmed.
    probe_subscribers: AtomicU64,
    /// While true, a new connection is accepted but waits before it reaches Redis
    /// ([`RedisProxy::hold_new_connections`]).
    hold: tokio::sync::watch::Sender<bool>,
    /// The next answer of the publish script is lost with its connection
    /// ([`RedisProxy::lose_next_publish_answer`]).
    lose_publish_answer: AtomicBool,
    /// How many publish answers were lost so far.
    lost_answers: AtomicU64,
}

/// A proxy on a free loopback port in front of `upstream`; stops on drop.
pub struct RedisProxy {
    pub port: u16,
    faults: Arc<Faults>,
    tasks: JoinSet<()>,
}

impl RedisProxy {
    /// A proxy in front of `upstream` (`host:port`), passing everything.
    pub async fn start(upstream: &str) -> Self {
        Self::start_on(upstream, 0).await
    }

    /// As [`Self::start`], on loopback port `port` (0: any free one).
    pub async fn start_on(upstream: &str, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("bound").port();
        let faults = Arc::new(Faults::default());
        let mut tasks = JoinSet::new();
        let upstream = upstream.to_string();
        let shared = Arc::clone(&faults);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if *shared.hold.borrow() {
                    let (shared, upstream) = (Arc::clone(&shared), upstream.clone());
                    connections.spawn(async move {
                        let mut hold = shared.hold.subscribe();
                        let _ = hold.wait_for(|held| !*held).await;
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let number = shared.accepted.fetch_add(1, Ordering::SeqCst);
                        pipe(client, server, number, shared).await;
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue; // Redis is down: the client sees its connection close
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let number = shared.accepted.fetch_add(1, Ordering::SeqCst);
                connections.spawn(pipe(client, server, number, Arc::clone(&shared)));
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            faults,
            tasks,
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// From now on, every connection open now loses its Pub/Sub deliveries silently;
    /// connections opened later pass everything.
    pub fn drop_deliveries_on_open_connections(&self) {
        let accepted = self.faults.accepted.load(Ordering::SeqCst);
        self.faults.silenced_below.store(accepted, Ordering::SeqCst);
    }

    /// Every connection, open now or opened later, loses its deliveries (`true`), or
    /// none does any more (`false`).
    pub fn drop_all_deliveries(&self, on: bool) {
        self.faults.silence_all.store(on, Ordering::SeqCst);
        if !on {
            self.faults.silenced_below.store(0, Ordering::SeqCst);
        }
    }

    /// While `on`, every new connection is accepted but held before it reaches Redis
    /// (its client waits, as on a slow network); released when turned off. Connections
    /// open already pass as before.
    pub fn hold_new_connections(&self, on: bool) {
        self.faults.hold.send_replace(on);
    }

    /// How many connections it accepted so far (a rebuilt subscriber opens a new one).
    pub fn connections(&self) -> u64 {
        self.faults.accepted.load(Ordering::SeqCst)
    }

    /// How many connections subscribed to a hub's probe channel so far: a rebuilt
    /// subscriber is one more. Unlike [`Self::connections`], not moved by other clients
    /// of the node (a sentinel's links, a replica's).
    pub fn probe_subscribers(&self) -> u64 {
        self.faults.probe_subscribers.load(Ordering::SeqCst)
    }

    /// How many deliveries on a hub's channels were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.faults.dropped.load(Ordering::SeqCst)
    }

    /// The next answer of `publish.lua` (an event id, alone or first in an array) does
    /// not reach its client: the connection closes instead, after Redis ran the script,
    /// as when a connection dies with the answer on its way.
    pub fn lose_next_publish_answer(&self) {
        self.faults
            .lose_publish_answer
            .store(true, Ordering::SeqCst);
    }

    /// How many publish answers were lost so far.
    pub fn lost_answers(&self) -> u64 {
        self.faults.lost_answers.load(Ordering::SeqCst)
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Faults {
    fn silenced(&self, number: u64) -> bool {
        self.silence_all.load(Ordering::SeqCst)
            || number < self.silenced_below.load(Ordering::SeqCst)
    }
}

/// One proxied connection: hub → Redis copied as is; Redis → hub frame by frame, each
/// delivery dropped while the connection is silenced. Once the client asked for a
/// replication stream, Redis → client is copied as is too.
async fn pipe(client: TcpStream, server: TcpStream, number: u64, faults: Arc<Faults>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let replication = Arc::new(AtomicBool::new(false));
    let replicating = Arc::clone(&replication);
    let upstream = async move {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Marked before it reaches Redis, so its answer is already passed raw.
            if asks_for_replication(&chunk[..n]) {
                replicating.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(&chunk[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let downstream = async move {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut subscribed_probe = false;
        loop {
            let n = match from_server.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if replication.load(Ordering::SeqCst) {
                if to_client.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
                continue;
            }
            let mut out = Vec::with_capacity(buf.len());
            let mut start = 0;
            let mut lost = false;
            while let Some(len) = frame_len(&buf[start..]) {
                let frame = &buf[start..start + len];
                if is_publish_answer(frame)
                    && faults
                        .lose_publish_answer
                        .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    faults.lost_answers.fetch_add(1, Ordering::SeqCst);
                    lost = true;
                    break;
                }
                if is_delivery(frame) && faults.silenced(number) {
                    if channel_of(frame).is_some_and(|c| c.starts_with(b"progress")) {
                        faults.dropped.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    if !subscribed_probe && is_probe_subscription(frame) {
                        subscribed_probe = true;
                        faults.probe_subscribers.fetch_add(1, Ordering::SeqCst);
                    }
                    out.extend_from_slice(frame);
                }
                start += len;
            }
            buf.drain(..start);
            if !out.is_empty() && to_client.write_all(&out).await.is_err() {
                break;
            }
            if lost {
                break; // with the answers after it: the connection died
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Whether a chunk from the client holds a `SYNC` or `PSYNC` command (a replica's).
fn asks_for_replication(chunk: &[u8]) -> bool {
    let upper = chunk.to_ascii_uppercase();
    [&b"\r\nPSYNC\r\n"[..], b"\r\nSYNC\r\n"]
        .iter()
        .any(|needle| upper.windows(needle.len()).any(|w| w == *needle))
}

/// The length of the complete RESP2/RESP3 frame at the start of `buf`, or `None` while
/// it is incomplete.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let (&kind, _) = buf.split_first()?;
    let line = buf.windows(2).position(|w| w == b"\r\n")?;
    let after = line + 2;
    let number = || -> i64 {
        std::str::from_utf8(&buf[1..line])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a RESP length, got {:?}", &buf[..line]))
    };
    match kind {
        // One line: simple string, error, integer, null, double, boolean, big number.
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        // Length-prefixed: bulk string, bulk error, verbatim string.
        b'$' | b'!' | b'=' => {
            let n = number();
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        // Aggregates: array, push, set (n elements); map, attribute (2n).
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let n = number();
            if n < 0 {
                return Some(after);
            }
            let elements = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = after;
            for _ in 0..elements {
                pos += frame_len(&buf[pos..])?;
            }
            Some(pos)
        }
        other => panic!("not RESP: {:?}", other as char),
    }
}

/// Whether a whole frame is a Pub/Sub delivery: an array (RESP2) or push (RESP3) whose
/// first element is `message`, `smessage` or `pmessage`.
fn is_delivery(frame: &[u8]) -> bool {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return false;
    }
    let Some(line) = frame.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let first = &frame[line + 2..];
    [
        &b"$7\r\nmessage\r\n"[..],
        b"$8\r\nsmessage\r\n",
        b"$8\r\npmessage\r\n",
    ]
    .iter()
    .any(|name| first.starts_with(name))
}

/// The second element of an array or push frame (a delivery's or a subscription
/// confirmation's channel), if it is a bulk string.
fn channel_of(frame: &[u8]) -> Option<&[u8]> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return None;
    }
    let line = frame.windows(2).position(|w| w == b"\r\n")?;
    let second = line + 2 + frame_len(&frame[line + 2..])?;
    let rest = frame.get(second..)?;
    if rest.first() != Some(&b'$') {
        return None;
    }
    let line = rest.windows(2).position(|w| w == b"\r\n")?;
    let n: usize = std::str::from_utf8(&rest[1..line]).ok()?.parse().ok()?;
    rest.get(line + 2..line + 2 + n)
}

/// Whether a whole frame is an answer of `publish.lua`: an event id, `<epoch>:<seq>`, as
/// a bulk string, or first in an array (`{id, 1}`).
fn is_publish_answer(frame: &[u8]) -> bool {
    let first = match frame.first() {
        Some(b'$') => frame,
        Some(b'*') => match frame.windows(2).position(|w| w == b"\r\n") {
            Some(line) => &frame[line + 2..],
            None => return false,
        },
        _ => return false,
    };
    let Some(line) = first.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let Some(n) = std::str::from_utf8(&first[1..line])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    let Some(body) = first.get(line + 2..line + 2 + n) else {
        return false;
    };
    let Some((epoch, seq)) = std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.split_once(':'))
    else {
        return false;
    };
    !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a whole frame confirms a subscription to a hub's probe channel: `subscribe`
/// or `ssubscribe` whose channel starts with `progress-hub:probe:`.
fn is_probe_subscription(frame: &[u8]) -> bool {
    let Some(line) = frame.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let first = &frame[line + 2..];
    (first.starts_with(b"$9\r\nsubscribe\r\n") || first.starts_with(b"$10\r\nssubscribe\r\n"))
        && channel_of(frame).is_some_and(|c| c.starts_with(b"progress-hub:probe:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_measured_and_deliveries_recognised() {
        let message = b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$2\r\nhi\r\n";
        let pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
        let push = b">3\r\n$8\r\nsmessage\r\n$3\r\nch1\r\n$2\r\nhi\r\n";
        for (frame, delivery) in [(&message[..], true), (pong, false), (push, true)] {
            assert_eq!(frame_len(frame), Some(frame.len()));
            assert_eq!(frame_len(&frame[..frame.len() - 1]), None);
            assert_eq!(is_delivery(frame), delivery);
        }
        let subscribed = b"*3\r\n$9\r\nsubscribe\r\n$22\r\nprogress-hub:probe:abc\r\n:1\r\n";
        let other = b"*3\r\n$9\r\nsubscribe\r\n$18\r\n__sentinel__:hello\r\n:1\r\n";
        assert!(is_probe_subscription(subscribed) && !is_probe_subscription(other));
        assert_eq!(channel_of(message), Some(&b"ch1"[..]));
        assert_eq!(channel_of(pong), Some(&b""[..]));
        assert!(asks_for_replication(
            b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n"
        ));
        assert!(!asks_for_replication(b"*1\r\n$4\r\nPING\r\n"));
        let map = b"%1\r\n+a\r\n:1\r\n";
        assert_eq!(frame_len(map), Some(map.len()));
    }
}
