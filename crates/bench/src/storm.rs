//! `storm`: the reconnect storm of issue #16. Every client of a restarted hub comes
//! back at once and resumes from its last event id.
//!
//! The tool runs the processes itself (loopback only): a *publisher* hub that stays up
//! (events go through its publish path, `POST /api/v1/projects/{id}/events`: ids,
//! history, so there is something to resume; a worker's publish reaches Redis the
//! same way whether the watched hub is up or not), and the *watched* hub, which the C
//! clients connect to. Then:
//!
//! 1. C clients connect (project n mod P, `storm-<run>-<p>`), and every project gets
//!    `rate` `log` events per second, each stamped with its per-project `seq=`;
//! 2. after `warmup` seconds the watched hub gets SIGTERM (its clients see close 1012)
//!    and, once it has exited, a new one is started on the same port;
//! 3. every client reconnects as the JS client does (after 1012: at a uniform random
//!    0–1 s; after a failed attempt: `500 ms · 2^attempt`, at most 30 s, jittered to
//!    50–100 %) with `?last_event_id=<the last id it got>`;
//! 4. publishing goes on for `tail` seconds after the last client resumed, then every
//!    client's events are checked: each published `seq` of its project exactly once.
//!
//! With `--per-connection N`, each client is a multiplexed connection
//! (`GET /api/v1/progress`) subscribed to N projects, and resumes each subscription
//! from its own last id (one `subscribe` with `last_event_id` per project); resumes and
//! the Redis commands per resume then count subscriptions.
//!
//! Reported: the time from the new hub's first accept (the tool's first successful TCP
//! connect to the port, polled every 2 ms) to the last client's `connected`, resumes/s,
//! Redis commands per resume (`INFO commandstats` over the storm, less what publishing
//! alone costs per event, measured during the warm-up), the new hub's CPU from its start
//! to the last resume, Redis CPU over the storm, and lost / duplicated / unrecovered,
//! after a drain of at most `--drain` seconds (ended as soon as every delivery is in);
//! a loss is listed (`missed:`, the first 20 by project and seq, with their event ids).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::Rng;
use std::collections::HashMap;
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::{field, latency_histogram, now_us, proc_stat};

#[derive(Args, Clone)]
pub struct StormArgs {
    /// The one Redis node both hubs use.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The hub binary; default: `progress-hub` beside this tool.
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// An extra flag for both hubs' `serve` (repeatable), e.g. `--hub-arg=--locale=en`.
    #[arg(long = "hub-arg", allow_hyphen_values = true)]
    hub_args: Vec<String>,
    /// Clients.
    #[arg(short = 'c', long, default_value_t = 1000)]
    clients: usize,
    /// Projects (1: every client on one project).
    #[arg(short = 'p', long, default_value_t = 100)]
    projects: usize,
    /// Events per second per project, published throughout.
    #[arg(short = 'r', long, default_value_t = 10)]
    rate: u64,
    /// Seconds of publishing before the restart.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Seconds of publishing after the last client resumed.
    #[arg(long, default_value_t = 2)]
    tail: u64,
    /// Most seconds to wait after the last publish for deliveries still on their way
    /// (ends as soon as every one is in); what has not arrived by then is lost.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Most seconds to wait for every client to resume.
    #[arg(long, default_value_t = 60)]
    patience: u64,
    /// Spread client sockets over this many source addresses 127.0.0.1.. (the hub
    /// allows 1,000 connections per address by default).
    #[arg(long, default_value_t = 64)]
    sources: u8,
    /// How many connections to open at once while ramping up.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Append the watched hubs' logs (old and new) to this file; default: discarded.
    #[arg(long)]
    hub_log: Option<PathBuf>,
    /// Profile the new hub from its start to the last resume: `perf record -F 999 -g`
    /// into this file (read it with `perf report -i FILE`).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Multiplexed clients (GET /api/v1/progress): each subscribes to this many projects
    /// (client n to projects n*N .. n*N+N-1, modulo P) and resumes each from its own
    /// last id. 0: single-project sockets.
    #[arg(long, default_value_t = 0)]
    per_connection: usize,
}

/// What every client task shares with the run.
pub(crate) struct Shared {
    url: String,
    addr: SocketAddr,
    sources: u8,
    /// The restart was sent: a `connected` from now on is a resume.
    pub(crate) restarted: AtomicBool,
    pub(crate) greeted: AtomicUsize,
    pub(crate) resumed: AtomicUsize,
    pub(crate) received: AtomicU64,
    progress: Notify,
    /// Bumped to make every client drop its connection at once and resume (the soak's
    /// reconnect storm without a hub restart); the storm itself never sends.
    pub(crate) drops: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Clients of the hub listening on `port`, from `sources` loopback addresses.
    pub(crate) fn new(port: u16, sources: u8) -> Self {
        Self {
            url: format!("ws://127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            sources,
            restarted: AtomicBool::new(false),
            greeted: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            progress: Notify::new(),
            drops: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// What one client saw, handed back when it stops.
#[derive(Default)]
pub(crate) struct Report {
    project: usize,
    /// How many times each `seq` of its project arrived.
    counts: Vec<u8>,
    resumed_at: Option<Instant>,
    pub(crate) unrecovered: u32,
    closes_1012: u32,
    pub(crate) reconnects: u32,
    pub(crate) failed_attempts: u32,
    last_id: Option<String>,
    connections: u32,
}

/// The JS client's reconnect delay after `attempt` failures (`watch.ts`, `backoff()`).
fn backoff(attempt: u32) -> Duration {
    let b = (500.0 * 2f64.powi(attempt.min(16) as i32)).min(30_000.0);
    Duration::from_secs_f64((b / 2.0 + rand::rng().random::<f64>() * b / 2.0) / 1000.0)
}

/// The JS client's delay after close 1012 (restart): prompt, spread over a second.
pub(crate) fn after_restart() -> Duration {
    Duration::from_secs_f64(rand::rng().random::<f64>())
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

pub(crate) async fn connect(
    shared: &Shared,
    project: &str,
    n: usize,
    last_id: Option<&str>,
) -> anyhow::Result<Ws> {
    let mut url = format!("{}/api/v1/projects/{project}/progress", shared.url);
    if let Some(id) = last_id {
        url.push_str("?last_event_id=");
        url.push_str(id);
    }
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (n % shared.sources.max(1) as usize) as u8,
    ));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(shared.addr).await?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

enum End {
    Stop,
    Closed(Option<u16>),
    /// Told to drop the connection (`Shared::drops`).
    Dropped,
}

/// The `"id":"..."` of a frame, if it has one.
pub(crate) fn event_id(text: &str) -> Option<&str> {
    let start = text.find(r#""id":""#)? + 6;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Reads one connection until it ends or the run stops.
async fn session(
    ws: &mut Ws,
    report: &mut Report,
    shared: &Shared,
    stop: &CancellationToken,
) -> End {
    let mut drops = shared.drops.subscribe();
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => return End::Stop,
            _ = drops.changed() => return End::Dropped,
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return End::Closed(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return End::Closed(None),
        };
        if text.contains(r#""event":"connected""#) {
            report.connections += 1;
            let recovered = serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v["data"]["recovered"] == true);
            if report.connections == 1 {
                shared.greeted.fetch_add(1, Ordering::Relaxed);
                shared.progress.notify_one();
            } else if shared.restarted.load(Ordering::Relaxed) {
                if !recovered {
                    report.unrecovered += 1;
                }
                if report.resumed_at.is_none() {
                    report.resumed_at = Some(Instant::now());
                    shared.resumed.fetch_add(1, Ordering::Relaxed);
                    shared.progress.notify_one();
                }
            }
        } else if text.contains(r#""event":"ping""#) {
            let _ = ws.send(Message::text(r#"{"event":"pong"}"#)).await;
        } else if let Some(seq) = field(&text, "seq=") {
            let seq = usize::try_from(seq).unwrap_or(usize::MAX);
            if seq < 1 << 24 {
                if report.counts.len() <= seq {
                    report.counts.resize(seq + 1, 0);
                }
                report.counts[seq] = report.counts[seq].saturating_add(1);
            }
            if let Some(id) = event_id(&text) {
                report.last_id = Some(id.to_string());
            }
            shared.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One client's life: the first connection, then reconnect and resume until stopped.
pub(crate) async fn client(
    n: usize,
    (index, project): (usize, String),
    first: Ws,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Report {
    let mut report = Report {
        project: index,
        ..Report::default()
    };
    let mut ws = Some(first);
    // As `watch.ts`: failed attempts since the last `connected`; a delay is computed
    // from the count before this attempt is added.
    let mut attempt = 0u32;
    loop {
        let delay = match ws.take() {
            Some(mut conn) => {
                let greeted = report.connections;
                let end = session(&mut conn, &mut report, &shared, &stop).await;
                if report.connections > greeted {
                    attempt = 0;
                }
                match end {
                    End::Stop => return report,
                    End::Closed(Some(1012)) => {
                        report.closes_1012 += 1;
                        after_restart()
                    }
                    // Everyone at once, as after a network blip: the same spread.
                    End::Dropped => after_restart(),
                    End::Closed(_) => backoff(attempt),
                }
            }
            None => {
                report.failed_attempts += 1;
                backoff(attempt)
            }
        };
        attempt += 1;
        tokio::select! {
            () = stop.cancelled() => return report,
            () = tokio::time::sleep(delay) => {}
        }
        report.reconnects += 1;
        ws = connect(&shared, &project, n, report.last_id.as_deref())
            .await
            .ok();
    }
}

/// `--per-connection`: the projects of multiplexed client `n`.
fn projects_of(n: usize, per: usize, projects: usize) -> Vec<usize> {
    (0..per).map(|i| (n * per + i) % projects).collect()
}

/// A multiplexed connection, its subscribe frames sent (each with the project's last id).
async fn connect_multiplexed(
    shared: &Shared,
    n: usize,
    subscriptions: &[(String, Option<String>)],
) -> anyhow::Result<Ws> {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (n % shared.sources.max(1) as usize) as u8,
    ));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(shared.addr).await?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let url = format!("{}/api/v1/progress", shared.url);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    for (project, last_id) in subscriptions {
        let mut data = serde_json::json!({ "project_id": project });
        if let Some(id) = last_id {
            data["last_event_id"] = serde_json::json!(id);
        }
        let frame = serde_json::json!({"event": "subscribe", "data": data});
        ws.feed(Message::text(frame.to_string())).await?;
    }
    ws.flush().await?;
    Ok(ws)
}

/// The top-level `"project_id"` a multiplexed frame starts with.
fn project_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(r#"{"project_id":""#)?;
    rest.split_once('"').map(|(project, _)| project)
}

/// Reads one multiplexed connection until it ends or the run stops; `reports[i]` is
/// subscription i's (connection-level counts go to `reports[0]`).
async fn mux_session(
    ws: &mut Ws,
    reports: &mut [Report],
    names: &HashMap<String, usize>,
    shared: &Shared,
    stop: &CancellationToken,
) -> End {
    let mut drops = shared.drops.subscribe();
    let mut answered = 0;
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => return End::Stop,
            _ = drops.changed() => return End::Dropped,
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return End::Closed(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return End::Closed(None),
        };
        if text.contains(r#""event":"ping""#) {
            let _ = ws.send(Message::text(r#"{"event":"pong"}"#)).await;
            continue;
        }
        if text.contains(r#""event":"connected""#) {
            reports[0].connections += 1;
            continue;
        }
        let Some(&i) = project_of(&text).and_then(|p| names.get(p)) else {
            continue;
        };
        if text.contains(r#""event":"subscribed""#) {
            answered += 1;
            let restarted = shared.restarted.load(Ordering::Relaxed);
            let recovered = text.contains(r#""recovered":true"#);
            if reports[0].connections > 1 && restarted && !recovered {
                reports[i].unrecovered += 1;
            }
            if answered == reports.len() {
                if reports[0].connections == 1 {
                    shared.greeted.fetch_add(1, Ordering::Relaxed);
                    shared.progress.notify_one();
                } else if restarted && reports[0].resumed_at.is_none() {
                    let now = Instant::now();
                    for report in reports.iter_mut() {
                        report.resumed_at = Some(now);
                    }
                    shared.resumed.fetch_add(1, Ordering::Relaxed);
                    shared.progress.notify_one();
                }
            }
        } else if let Some(seq) = field(&text, "seq=") {
            let report = &mut reports[i];
            let seq = usize::try_from(seq).unwrap_or(usize::MAX);
            if seq < 1 << 24 {
                if report.counts.len() <= seq {
                    report.counts.resize(seq + 1, 0);
                }
                report.counts[seq] = report.counts[seq].saturating_add(1);
            }
            if let Some(id) = event_id(&text) {
                report.last_id = Some(id.to_string());
            }
            shared.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A multiplexed client's life: as [`client`], its subscriptions resumed together.
async fn mux_client(
    n: usize,
    projects: Vec<(usize, String)>,
    first: Ws,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Vec<Report> {
    let names: HashMap<String, usize> = projects
        .iter()
        .enumerate()
        .map(|(i, (_, name))| (name.clone(), i))
        .collect();
    let mut reports: Vec<Report> = projects
        .iter()
        .map(|(index, _)| Report {
            project: *index,
            ..Report::default()
        })
        .collect();
    let mut ws = Some(first);
    let mut attempt = 0u32;
    loop {
        let delay = match ws.take() {
            Some(mut conn) => {
                let greeted = reports[0].connections;
                let end = mux_session(&mut conn, &mut reports, &names, &shared, &stop).await;
                if reports[0].connections > greeted {
                    attempt = 0;
                }
                match end {
                    End::Stop => return reports,
                    End::Closed(Some(1012)) => {
                        reports[0].closes_1012 += 1;
                        after_restart()
                    }
                    End::Dropped => after_restart(),
                    End::Closed(_) => backoff(attempt),
                }
            }
            None => {
                reports[0].failed_attempts += 1;
                backoff(attempt)
            }
        };
        attempt += 1;
        tokio::select! {
            () = stop.cancelled() => return reports,
            () = tokio::time::sleep(delay) => {}
        }
        reports[0].reconnects += 1;
        let subscriptions: Vec<(String, Option<String>)> = projects
            .iter()
            .zip(&reports)
            .map(|((_, name), report)| (name.clone(), report.last_id.clone()))
            .collect();
        ws = connect_multiplexed(&shared, n, &subscriptions).await.ok();
    }
}

/// Every client's events against what was published on its project: each accepted
/// `seq` exactly once, none whose publish failed.
#[derive(Default, Clone)]
pub(crate) struct Delivery {
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) unexpected: u64,
    /// Which events were lost: (project, seq) → by how many clients, to tell an event
    /// nobody got from one a few clients missed.
    pub(crate) missed: std::collections::BTreeMap<(usize, usize), Missed>,
}

/// One lost event: how many clients (subscriptions) missed it, and of those, how many
/// got a later event of the project (a hole in the middle) rather than none after it
/// (a tail: still in flight when the run stopped, or never delivered at all).
#[derive(Default, Clone, Copy)]
pub(crate) struct Missed {
    pub(crate) by: u64,
    pub(crate) holes: u64,
}

/// How many of the missed events [`Delivery::print_missed`] lists one by one.
const MISSED_LISTED: usize = 20;

impl Delivery {
    pub(crate) fn add(&mut self, report: &Report, logs: &[Arc<Published>]) {
        let log = logs[report.project].sent.lock();
        let last_heard = report.counts.iter().rposition(|&n| n > 0);
        for (seq, sent) in log.iter().enumerate() {
            let got = u64::from(report.counts.get(seq).copied().unwrap_or(0));
            self.received += got;
            match (sent.is_some(), got) {
                (true, 0) => {
                    self.lost += 1;
                    let missed = self.missed.entry((report.project, seq)).or_default();
                    missed.by += 1;
                    if last_heard.is_some_and(|last| last > seq) {
                        missed.holes += 1;
                    }
                }
                (true, n) => self.duplicates += n - 1,
                (false, n) => self.unexpected += n,
            }
        }
        let beyond: u64 = report
            .counts
            .iter()
            .skip(log.len())
            .map(|&c| u64::from(c))
            .sum();
        self.received += beyond;
        self.unexpected += beyond;
    }

    /// Prints which events were lost (`missed:` lines): a summary, then the first
    /// [`MISSED_LISTED`] by project and seq, each with the event id the publish was
    /// answered with (to look up in Redis or the hub's log) and by how many of the
    /// project's `watchers` (a function of the project's index) it was missed.
    pub(crate) fn print_missed(
        &self,
        logs: &[Arc<Published>],
        name: impl Fn(usize) -> String,
        watchers: impl Fn(usize) -> u64,
    ) {
        if self.missed.is_empty() {
            return;
        }
        let holes: u64 = self.missed.values().map(|m| m.holes).sum();
        println!(
            "missed: {} events, {} deliveries ({holes} holes: a later event of the project arrived; {} tails); the first {}:",
            self.missed.len(),
            self.lost,
            self.lost - holes,
            self.missed.len().min(MISSED_LISTED),
        );
        for (&(project, seq), missed) in self.missed.iter().take(MISSED_LISTED) {
            let id = logs[project]
                .sent
                .lock()
                .get(seq)
                .and_then(|sent| sent.as_deref().map(str::to_string))
                .unwrap_or_default();
            println!(
                "missed: project {} seq {seq} id {id} by {} of {} (holes {})",
                name(project),
                missed.by,
                watchers(project),
                missed.holes,
            );
        }
        if self.missed.len() > MISSED_LISTED {
            println!(
                "missed: ... and {} more events",
                self.missed.len() - MISSED_LISTED
            );
        }
    }
}

/// What was published on one project: `sent[seq]` is the event id the hub answered
/// its POST with (empty if the answer had none), `None` when it was refused.
#[derive(Default)]
pub(crate) struct Published {
    sent: Mutex<Vec<Option<Box<str>>>>,
}

impl Published {
    /// How many publishes were accepted.
    pub(crate) fn accepted(&self) -> u64 {
        self.sent.lock().iter().filter(|s| s.is_some()).count() as u64
    }

    /// How many publishes failed (e.g. 503 while Redis restarts).
    pub(crate) fn failed(&self) -> u64 {
        self.sent.lock().iter().filter(|s| s.is_none()).count() as u64
    }
}

pub(crate) async fn publisher(
    http: reqwest::Client,
    url: String,
    interval: Duration,
    offset: Duration,
    log: Arc<Published>,
    total: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now() + offset;
    for seq in 0u32.. {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(start + interval * seq) => {}
        }
        let body = format!(
            r#"{{"event":"log","data":{{"level":"INFO","message":"seq={seq} sent_us={}"}}}}"#,
            now_us()
        );
        let sent = publish_until_answered(&http, &url, &format!("bench-{seq}"), body, &stop).await;
        if sent.is_some() {
            total.fetch_add(1, Ordering::Relaxed);
        }
        log.sent.lock().push(sent);
    }
}

/// Publishes one event as a careful publisher does: a refusal the hub may not have
/// meant (5xx, or no answer: e.g. Redis restarting, where the script may have run
/// and its reply been lost) is sent again with the same `Idempotency-Key`, so the
/// event is appended once whatever happened, until it is accepted, refused for good
/// (4xx), [`GIVE_UP_AFTER`] passes, or the run stops. Without the retry a publish
/// answered 503 after it was stored would count its deliveries as unexpected.
/// Returns the event id the hub answered with (empty if none), `None` if not accepted.
async fn publish_until_answered(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: String,
    stop: &CancellationToken,
) -> Option<Box<str>> {
    let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
    loop {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {
                let answer = answer.json::<serde_json::Value>().await.unwrap_or_default();
                return Some(answer["id"].as_str().unwrap_or_default().into());
            }
            Ok(answer) if answer.status().is_client_error() => return None,
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// How long [`publish_until_answered`] tries one event.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A hub in Redis mode on `port` (no worker), its log appended to `log` if given.
pub(crate) fn spawn_hub(
    bin: &PathBuf,
    port: u16,
    redis_url: &str,
    hub_args: &[String],
    log: Option<&PathBuf>,
) -> anyhow::Result<Child> {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", redis_url, "--no-worker"])
        .args(hub_args)
        .env_remove("REDIS_URL")
        .env_remove("HUB_LISTEN")
        // One load tool is one client creating every project: no per-client quota
        // (through the environment, which a hub that predates the quota ignores).
        .env("HUB_MAX_PROJECTS_PER_CLIENT", "0")
        .env("HUB_NEW_PROJECTS_PER_MINUTE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the hub {}", bin.display()))
}

/// Polls the port every 2 ms until it accepts; returns when it first did.
pub(crate) async fn listening(
    port: u16,
    child: &mut Child,
    patience: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + patience;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Instant::now());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the hub exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("the hub did not listen on {port} within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) fn sigterm(child: &Child) -> anyhow::Result<()> {
    let pid = child.id().context("the hub has already exited")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    Ok(())
}

/// Redis's command counts (`INFO commandstats`) and CPU seconds (`INFO cpu`).
struct RedisStats {
    calls: HashMap<String, u64>,
    cpu_s: f64,
}

async fn redis_stats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<RedisStats> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .arg("cpu")
        .query_async(conn)
        .await?;
    let mut calls = HashMap::new();
    let mut cpu_s = 0.0;
    for line in text.lines() {
        if let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        {
            let n = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_string(), n);
        } else if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(RedisStats { calls, cpu_s })
}

fn delta(a: &RedisStats, b: &RedisStats) -> HashMap<String, f64> {
    b.calls
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            let before = a.calls.get(name).copied().unwrap_or(0);
            (name.clone(), n.saturating_sub(before) as f64)
        })
        .collect()
}

/// The hub binary: the one given, or `progress-hub` beside this tool.
pub(crate) fn hub_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(bin) => Ok(bin.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("the tool's directory")?
            .join("progress-hub")),
    }
}

pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    let bin = hub_bin(args.hub_bin.as_ref())?;
    let projects = args.projects.max(1);
    let redis_client = redis::Client::open(args.redis_url.as_str())?;
    let patience = Duration::from_secs(args.patience);
    // Redis answers slowly under a storm on a busy machine: the default 500 ms response
    // timeout failed whole runs.
    let stats_config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(patience));
    let mut stats_conn = redis_client
        .get_multiplexed_async_connection_with_config(&stats_config)
        .await?;

    let (publisher_port, port) = (free_port()?, free_port()?);
    let (redis_url, hub_args, log) = (&args.redis_url, &args.hub_args, args.hub_log.as_ref());
    let mut publisher_hub = spawn_hub(&bin, publisher_port, redis_url, hub_args, None)?;
    let mut hub = spawn_hub(&bin, port, redis_url, hub_args, log)?;
    listening(publisher_port, &mut publisher_hub, patience).await?;
    listening(port, &mut hub, patience).await?;

    let run = now_us() % 1_000_000;
    let name = |p: usize| format!("storm-{run}-{p}");
    let shared = Arc::new(Shared::new(port, args.sources));
    let connect_start = Instant::now();
    let per = args.per_connection;
    let conns = futures_util::stream::iter((0..args.clients).map(|n| {
        let shared = Arc::clone(&shared);
        let mine: Vec<(usize, String)> = if per == 0 {
            vec![(n % projects, name(n % projects))]
        } else {
            projects_of(n, per, projects)
                .into_iter()
                .map(|p| (p, name(p)))
                .collect()
        };
        async move {
            let ws = if per == 0 {
                connect(&shared, &mine[0].1, n, None).await
            } else {
                let subscriptions: Vec<_> = mine.iter().map(|(_, p)| (p.clone(), None)).collect();
                connect_multiplexed(&shared, n, &subscriptions).await
            };
            (n, mine, ws)
        }
    }))
    .buffer_unordered(args.connect_concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    let stop = CancellationToken::new();
    let mut clients = Vec::with_capacity(args.clients);
    let mut failed = 0;
    for (n, mut mine, ws) in conns {
        let (shared, stop) = (Arc::clone(&shared), stop.clone());
        match ws {
            Ok(ws) if per == 0 => clients.push(tokio::spawn(async move {
                vec![client(n, mine.swap_remove(0), ws, shared, stop).await]
            })),
            Ok(ws) => clients.push(tokio::spawn(mux_client(n, mine, ws, shared, stop))),
            Err(_) => failed += 1,
        }
    }
    let connected = clients.len();
    println!(
        "connected {connected}/{} in {:.2}s ({failed} failed)",
        args.clients,
        connect_start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} clients could not connect: exactly-once cannot be checked");
    }
    wait_for(
        &shared,
        |s| s.greeted.load(Ordering::Relaxed) >= connected,
        patience,
    )
    .await
    .context("not every client got its `connected`")?;

    // Publishing, throughout: one task per project, spread over the first interval.
    let http = reqwest::Client::new();
    let published_total = Arc::new(AtomicU64::new(0));
    let publish_stop = CancellationToken::new();
    let logs: Vec<Arc<Published>> = (0..projects).map(|_| Arc::default()).collect();
    let interval = 1.0 / args.rate.max(1) as f64;
    let publishers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(p, log)| {
            tokio::spawn(publisher(
                http.clone(),
                format!(
                    "http://127.0.0.1:{publisher_port}/api/v1/projects/{}/events",
                    name(p)
                ),
                Duration::from_secs_f64(interval),
                Duration::from_secs_f64(interval * p as f64 / projects as f64),
                Arc::clone(log),
                Arc::clone(&published_total),
                publish_stop.clone(),
            ))
        })
        .collect();
    let warm0 = redis_stats(&mut stats_conn).await?;
    let published0 = published_total.load(Ordering::Relaxed);
    let hub_a_cpu0 = proc_stat(hub.id());
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    // The restart.
    let warm1 = redis_stats(&mut stats_conn).await?;
    let published1 = published_total.load(Ordering::Relaxed);
    let hub_a_cpu1 = proc_stat(hub.id());
    shared.restarted.store(true, Ordering::Relaxed);
    let term_sent = Instant::now();
    sigterm(&hub)?;
    let exit = tokio::time::timeout(patience, hub.wait())
        .await
        .context("the hub did not exit after SIGTERM")??;
    let exited = Instant::now();
    let mut hub = spawn_hub(&bin, port, redis_url, hub_args, log)?;
    let mut perf = match (&args.perf, hub.id()) {
        (Some(out), Some(pid)) => Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
                .arg(out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start perf")?,
        ),
        _ => None,
    };
    let first_accept = listening(port, &mut hub, patience).await?;
    let all_back = wait_for(
        &shared,
        |s| s.resumed.load(Ordering::Relaxed) >= connected,
        patience,
    )
    .await
    .is_ok();
    let storm_end = Instant::now();
    let storm_stats = redis_stats(&mut stats_conn).await?;
    let published2 = published_total.load(Ordering::Relaxed);
    let hub_b_cpu = proc_stat(hub.id());
    if let Some(perf) = perf.as_mut() {
        // perf writes its file when interrupted.
        if let Some(pid) = perf.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(patience, perf.wait()).await;
    }

    // The tail, then every event must be in.
    tokio::time::sleep(Duration::from_secs(args.tail)).await;
    publish_stop.cancel();
    for p in publishers {
        let _ = p.await;
    }
    // How many subscriptions watch each project.
    let mut watchers = vec![0u64; projects];
    for n in 0..connected {
        if per == 0 {
            watchers[n % projects] += 1;
        } else {
            for p in projects_of(n, per, projects) {
                watchers[p] += 1;
            }
        }
    }
    let expected: u64 = logs
        .iter()
        .zip(&watchers)
        .map(|(log, watchers)| log.accepted() * watchers)
        .sum();
    // The drain: until every delivery is in, at most `--drain` seconds; what is not in
    // by then is lost.
    let drain_start = Instant::now();
    let drained = wait_for(
        &shared,
        |s| s.received.load(Ordering::Relaxed) >= expected,
        Duration::from_secs_f64(args.drain),
    )
    .await
    .is_ok();
    let drain_s = drain_start.elapsed().as_secs_f64();
    stop.cancel();
    let mut reports = Vec::with_capacity(connected);
    for c in clients {
        reports.extend(c.await?);
    }
    let _ = sigterm(&hub);
    let _ = tokio::time::timeout(patience, hub.wait()).await;
    let _ = sigterm(&publisher_hub);
    let _ = tokio::time::timeout(patience, publisher_hub.wait()).await;

    // Exactly once, per client.
    let mut delivery = Delivery::default();
    let mut resume_ms = latency_histogram()?;
    let mut last_resumed = None::<Instant>;
    let (mut unrecovered, mut closes_1012, mut reconnects, mut failed_attempts) = (0, 0, 0, 0);
    for r in &reports {
        delivery.add(r, &logs);
        if let Some(at) = r.resumed_at {
            let ms = at.saturating_duration_since(first_accept).as_micros() as u64;
            let _ = resume_ms.record(ms.max(1));
            last_resumed = last_resumed.max(Some(at));
        }
        unrecovered += r.unrecovered;
        closes_1012 += r.closes_1012;
        reconnects += r.reconnects;
        failed_attempts += r.failed_attempts;
    }
    let Delivery {
        received,
        lost,
        duplicates,
        unexpected,
        ..
    } = delivery.clone();
    // Resumed subscriptions (one per client, or `per_connection` per multiplexed one).
    let resumed = reports.iter().filter(|r| r.resumed_at.is_some()).count();
    let subscriptions = reports.len();
    let storm_s = last_resumed
        .map(|at| at.saturating_duration_since(first_accept).as_secs_f64())
        .unwrap_or(f64::NAN);
    let published = published_total.load(Ordering::Relaxed);

    // Redis: what the storm cost beyond publishing.
    let warm = delta(&warm0, &warm1);
    let storm = delta(&warm1, &storm_stats);
    let warm_events = published1.saturating_sub(published0).max(1) as f64;
    let storm_events = published2.saturating_sub(published1) as f64;
    let mut beyond: Vec<(String, f64)> = storm
        .iter()
        .map(|(name, &n)| {
            let baseline = warm.get(name).copied().unwrap_or(0.0) / warm_events * storm_events;
            (name.clone(), (n - baseline).max(0.0))
        })
        .filter(|(_, n)| *n >= 0.5)
        .collect();
    beyond.sort_by(|a, b| b.1.total_cmp(&a.1));
    let beyond_total: f64 = beyond.iter().map(|(_, n)| n).sum();
    let storm_window = storm_end.saturating_duration_since(term_sent).as_secs_f64();
    let redis_cpu = storm_stats.cpu_s - warm1.cpu_s;
    let redis_cpu_baseline = (warm1.cpu_s - warm0.cpu_s) / args.warmup.max(1) as f64 * storm_window;
    let hub_cpu = hub_b_cpu.map_or(f64::NAN, |s| s.cpu_s);
    let hub_a_rate = match (hub_a_cpu0, hub_a_cpu1) {
        (Some(a), Some(b)) => (b.cpu_s - a.cpu_s) / args.warmup.max(1) as f64,
        _ => f64::NAN,
    };

    println!(
        "storm: {connected} clients over {projects} projects, {} events/s per project; old hub exited {:.2}s after SIGTERM ({exit}), new hub listening {:.3}s later",
        args.rate,
        exited.saturating_duration_since(term_sent).as_secs_f64(),
        first_accept.saturating_duration_since(exited).as_secs_f64()
    );
    println!(
        "resumed {resumed}/{subscriptions} subscriptions{}: last {storm_s:.3}s after the new hub's first accept ({:.0} resumes/s); per client p50 {:.3}s p99 {:.3}s; {closes_1012} closes 1012, {reconnects} reconnects, {failed_attempts} failed attempts",
        if all_back {
            ""
        } else {
            " (NOT all: patience ran out)"
        },
        resumed as f64 / storm_s,
        resume_ms.value_at_quantile(0.5) as f64 / 1e6,
        resume_ms.value_at_quantile(0.99) as f64 / 1e6,
    );
    println!(
        "events: published {published}, deliveries expected {expected} received {received} lost {lost} duplicates {duplicates} unexpected {unexpected}; unrecovered resumes {unrecovered}"
    );
    println!(
        "drain: {drain_s:.2}s after the last publish{}",
        if drained {
            ", every delivery in"
        } else {
            " (the --drain limit: what had not arrived is lost)"
        }
    );
    delivery.print_missed(&logs, name, |p| watchers[p]);
    println!(
        "redis commands beyond publishing over the storm ({storm_window:.2}s): {beyond_total:.0} ({:.2} per resume): {}",
        beyond_total / resumed.max(1) as f64,
        beyond
            .iter()
            .take(8)
            .map(|(name, n)| format!("{name} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "CPU: new hub {hub_cpu:.2}s from its start to the last resume (old hub {hub_a_rate:.2} s/s while warm); Redis {redis_cpu:.2}s over the storm (publishing alone ≈ {redis_cpu_baseline:.2}s)"
    );
    let result = [
        "scenario=storm".to_string(),
        format!("clients={connected}"),
        format!("projects={projects}"),
        format!("resumed={resumed}"),
        format!("storm_s={storm_s:.3}"),
        format!("resumes_per_s={:.0}", resumed as f64 / storm_s),
        format!(
            "resume_p50_s={:.3}",
            resume_ms.value_at_quantile(0.5) as f64 / 1e6
        ),
        format!(
            "resume_p99_s={:.3}",
            resume_ms.value_at_quantile(0.99) as f64 / 1e6
        ),
        format!("published={published}"),
        format!("expected={expected}"),
        format!("received={received}"),
        format!("lost={lost}"),
        format!("duplicates={duplicates}"),
        format!("unexpected={unexpected}"),
        format!("unrecovered={unrecovered}"),
        format!("missed_events={}", delivery.missed.len()),
        format!("drain_s={drain_s:.2}"),
        format!(
            "redis_cmds_per_resume={:.2}",
            beyond_total / resumed.max(1) as f64
        ),
        format!("hub_cpu_s={hub_cpu:.2}"),
        format!("redis_cpu_s={redis_cpu:.2}"),
        format!("redis_cpu_publishing_s={redis_cpu_baseline:.2}"),
    ];
    println!("RESULT {}", result.join(" "));
    Ok(())
}

/// Waits until `done` holds (woken by the clients' progress), at most `patience`.
pub(crate) async fn wait_for(
    shared: &Shared,
    done: impl Fn(&Shared) -> bool,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if done(shared) {
            return Ok(());
        }
        // Received events do not notify (too many): re-check every 50 ms as well.
        let wake = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            () = shared.progress.notified() => {}
            () = wake => {}
            () = tokio::time::sleep_until(deadline) => bail!("timed out after {patience:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_follow_the_js_client() {
        for _ in 0..100 {
            let first = backoff(0).as_secs_f64();
            assert!((0.25..=0.5).contains(&first), "{first}");
            let second = backoff(1).as_secs_f64();
            assert!((0.5..=1.0).contains(&second), "{second}");
            let capped = backoff(20).as_secs_f64();
            assert!((15.0..=30.0).contains(&capped), "{capped}");
            assert!(after_restart() < Duration::from_secs(1));
        }
    }

    #[test]
    fn event_id_reads_the_top_level_id_not_project_id() {
        let frame = r#"{"event":"log","data":{"project_id":"p","message":"seq=1"},"id":"Ab3:7"}"#;
        assert_eq!(event_id(frame), Some("Ab3:7"));
        assert_eq!(
            event_id(r#"{"event":"connected","data":{"project_id":"p"}}"#),
            None
        );
    }
}
