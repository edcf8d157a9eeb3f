//! `progress-hub-bench`: the load tool. Loopback only, bounded in count and time. Its
//! code is this workspace member (package `progress-hub-bench`); the executable is built
//! beside `progress-hub` by the root package (`src/bin/progress-hub-bench.rs`), so that
//! the integration tests run it as they run the hub.
//!
//! Scenarios (see BENCHMARKS.md for the commands and the results):
//! - `fanout`: C clients on one project; R events/s for D s, each stamped with its send
//!   time; every client records publish → receive latency. `--slow N` adds N clients
//!   that never read (the slow-consumer case: the others' latency is what to compare),
//!   `--pad B` makes every event B bytes longer.
//! - `spread`: C clients over P projects, aggregate rate R. `--per-connection N`: each
//!   client is a multiplexed connection (`GET /api/v1/progress`) subscribed to N of the
//!   P projects (`scripts/multiplex_cpu.sh` runs it against single-project sockets).
//! - `idle`: C idle connections held D s (answering pings).
//! - `churn`: K connect → first frame → close cycles, Q at a time (`--project-per-cycle`:
//!   every cycle a new project, so every cycle subscribes and unsubscribes).
//! - `floor`: not a scenario but a server: the least relay of the hub's shape, the
//!   baseline every scenario is run against in the same minute (`floor.rs`).
//! - `storm`: starts a hub, connects C clients, restarts the hub and measures every
//!   client's resume (`storm.rs`).
//! - `soak`: one hub under steady load for an hour (publishing, watchers, churn,
//!   reconnect storms, Redis restarts), its RSS, descriptors, threads and Redis memory
//!   sampled into a CSV (`soak.rs`).
//!
//! Events are published with a plain Redis `PUBLISH progress:{id}` (so the same run
//! works against the original Python design) or, with `--publish http`, through the
//! hub's publish path. On a Redis Cluster (`--redis-url redis+cluster://...`),
//! `--publish redis` sends SPUBLISH on `progress:{<id>}` as the hub does, or with
//! `--plain-publish` a plain PUBLISH (broadcast to every node; hubs on a cluster do not
//! receive it: it measures the cost sharding avoids). `--url` and `--http-url` take
//! several hubs, comma-separated: clients and publishes go round robin over them. Clients spread over 127.0.0.x source addresses so a big run does
//! not exhaust one address's ephemeral ports. A run of C connections needs
//! `ulimit -n` above C (plus the server's own C in the same limit when both run as one
//! user: here the hard limit is 20,000, so C ≤ 19,000 with the server in another shell).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use progress_hub::broker::redis::connection::{RedisConn, Timeouts};
use progress_hub::broker::redis::target::RedisTarget;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod floor;
mod soak;
mod storm;

#[derive(Parser)]
#[command(
    name = "progress-hub-bench",
    about = "Load tool for progress-hub (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C clients on one project; R events/s for D s.
    Fanout(Load),
    /// C clients over P projects; aggregate R events/s for D s.
    Spread(Load),
    /// C idle connections held D s.
    Idle(Load),
    /// K connect → first frame → close cycles, Q at a time.
    Churn(Churn),
    /// Serve the floor: the least relay of the hub's shape (the baseline).
    Floor(floor::FloorArgs),
    /// The reconnect storm: restart a hub under C clients; every client resumes.
    Storm(storm::StormArgs),
    /// The soak: an hour of steady load on one hub, its resources sampled.
    Soak(soak::SoakArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The hub (or the Python reference), e.g. ws://127.0.0.1:8000; several hubs
    /// comma-separated: client n (of project n mod P) connects to hub (n div P) mod
    /// their number, so each project's clients are spread over the hubs.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    url: String,
    /// The server's pid, to read its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Spread client sockets over this many source addresses 127.0.0.1..
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// How many connections to open at once while ramping up.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PublishVia {
    /// Plain Redis PUBLISH (the legacy path; works against the Python reference).
    Redis,
    /// The hub's publish path (POST /api/v1/projects/{id}/events): ids, history.
    Http,
}

#[derive(Args, Clone)]
struct Load {
    #[command(flatten)]
    common: Common,
    /// Clients.
    #[arg(short = 'c', long, default_value_t = 100)]
    clients: usize,
    /// Projects (spread).
    #[arg(short = 'p', long, default_value_t = 1)]
    projects: usize,
    /// Events per second, in total.
    #[arg(short = 'r', long, default_value_t = 10)]
    rate: u64,
    /// Seconds of publishing (or of holding, for idle).
    #[arg(short = 'd', long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, value_enum, default_value = "redis")]
    publish: PublishVia,
    /// Hub HTTP base for --publish http; several comma-separated: event n goes to hub
    /// n mod their number.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    http_url: String,
    /// With --publish redis on a cluster URL: plain PUBLISH instead of SPUBLISH.
    #[arg(long)]
    plain_publish: bool,
    /// Extra clients on the first project that connect and then never read.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Bytes of padding added to every event.
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Spread over multiplexed connections (GET /api/v1/progress): each client
    /// subscribes to this many projects (client n to projects n*N .. n*N+N-1, modulo P)
    /// instead of opening one socket on one project. 0: single-project sockets.
    #[arg(long, default_value_t = 0)]
    per_connection: usize,
}

#[derive(Args, Clone)]
struct Churn {
    #[command(flatten)]
    common: Common,
    /// Cycles.
    #[arg(short = 'k', long, default_value_t = 10_000)]
    cycles: usize,
    /// At a time.
    #[arg(short = 'q', long, default_value_t = 50)]
    concurrency: usize,
    /// Every cycle on a project of its own (`churn-<run>-<n>`), instead of 100 projects
    /// reused: every cycle is then a first watcher and a last one.
    #[arg(long)]
    project_per_cycle: bool,
}

/// CPU seconds and RSS of a process, from /proc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcStat {
    pub(crate) cpu_s: f64,
    pub(crate) rss_kib: u64,
}

pub(crate) fn proc_stat(pid: Option<u32>) -> Option<ProcStat> {
    let path = pid.map_or("self".to_string(), |p| p.to_string());
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{path}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(ProcStat {
        cpu_s: (utime + stime) / ticks,
        rss_kib,
    })
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Entry `n mod count` of a comma-separated list.
fn nth_of(list: &str, n: usize) -> &str {
    let count = list.split(',').count();
    list.split(',').nth(n % count).unwrap_or(list).trim()
}

/// Connects to hub `hub mod hubs` from source address 127.0.0.(1 + n % sources).
async fn connect(common: &Common, project: &str, n: usize, hub: usize) -> anyhow::Result<Ws> {
    let path = format!("/api/v1/projects/{project}/progress");
    connect_to(common, &path, n, hub).await
}

/// A multiplexed connection (GET /api/v1/progress) subscribed to `projects`, once every
/// subscription is answered with `subscribed`.
async fn connect_multiplexed(
    common: &Common,
    projects: &[String],
    n: usize,
    hub: usize,
) -> anyhow::Result<Ws> {
    let mut ws = connect_to(common, "/api/v1/progress", n, hub).await?;
    for project in projects {
        let frame = format!(r#"{{"event":"subscribe","data":{{"project_id":"{project}"}}}}"#);
        ws.feed(Message::text(frame)).await?;
    }
    ws.flush().await?;
    let mut answered = 0;
    while answered < projects.len() {
        let Some(msg) = ws.next().await else {
            bail!("the hub closed a multiplexed connection while subscribing");
        };
        let Message::Text(text) = msg? else { continue };
        if text.contains("\"event\":\"subscribed\"") {
            answered += 1;
        } else if text.contains("\"event\":\"subscription_error\"") {
            bail!("a subscription was refused: {text}");
        }
    }
    Ok(ws)
}

async fn connect_to(common: &Common, path: &str, n: usize, hub: usize) -> anyhow::Result<Ws> {
    let hub = nth_of(&common.url, hub);
    let url = format!("{}{path}", hub.trim_end_matches('/'));
    let host = hub
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:8000");
    let addr: SocketAddr = host.parse().context("the URL must be ws://IP:PORT")?;
    if !addr.ip().is_loopback() {
        bail!("load is sent to loopback addresses only");
    }
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (n % common.sources.max(1) as usize) as u8,
    ));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    // tungstenite's default read buffer is 128 KiB, zeroed before every read attempt:
    // per frame that cost the tool more than the hub spent sending it.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// What one client saw. Each client has its own, so recording a frame touches no
/// memory another client's task writes (a shared counter bounced between the cores
/// and made the tool, not the hub, the bottleneck).
struct Tally {
    received: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    /// Microseconds, two significant digits (1 % resolution): small enough to keep
    /// one per client at C = 19,000.
    latency: std::sync::Mutex<Histogram<u32>>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            latency: std::sync::Mutex::new(latency_histogram()?),
        })
    }
}

pub(crate) fn latency_histogram() -> anyhow::Result<Histogram<u32>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 2)?)
}

/// Reads frames until the task is aborted, answering pings and timing every
/// `seq`-stamped event.
async fn listen(mut ws: Ws, tally: Arc<Tally>) {
    let mut last: Option<u64> = None;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        if text.contains("\"event\":\"ping\"") {
            let _ = ws.send(Message::text(r#"{"event":"pong"}"#)).await;
            continue;
        }
        let (Some(seq), Some(sent)) = (field(&text, "seq="), field(&text, "sent_us=")) else {
            continue;
        };
        let now = now_us();
        if let Ok(mut h) = tally.latency.lock() {
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
        tally.received.fetch_add(1, Ordering::Relaxed);
        match last {
            Some(l) if seq == l => {
                tally.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Some(l) if seq < l => {
                tally.reordered.fetch_add(1, Ordering::Relaxed);
            }
            _ => last = Some(seq),
        }
    }
}

/// A number after `key` in a JSON text (the tool reads only its own stamps).
pub(crate) fn field(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

async fn run_load(load: Load, scenario: &str) -> anyhow::Result<()> {
    let common = &load.common;
    let projects = if scenario == "fanout" {
        1
    } else {
        load.projects.max(1)
    };
    let server0 = proc_stat(common.server_pid);
    let connect_start = Instant::now();
    let mut clients = Vec::with_capacity(load.clients);
    let per = load.per_connection;
    let conns = futures_util::stream::iter((0..load.clients).map(|n| {
        let common = common.clone();
        // Project-major: a project's clients are spread over the hubs.
        let (project, hub) = (n % projects, n / projects);
        async move {
            if per == 0 {
                return connect(&common, &format!("bench-{project}"), n, hub).await;
            }
            let mine: Vec<String> = (0..per)
                .map(|i| format!("bench-{}", (n * per + i) % projects))
                .collect();
            connect_multiplexed(&common, &mine, n, 0).await
        }
    }))
    .buffer_unordered(common.connect_concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut failed = 0;
    let mut tallies = Vec::with_capacity(load.clients);
    for ws in conns {
        match ws {
            Ok(ws) => {
                let tally = Arc::new(Tally::new()?);
                clients.push(tokio::spawn(listen(ws, Arc::clone(&tally))));
                tallies.push(tally);
            }
            Err(_) => failed += 1,
        }
    }
    let sum = |f: fn(&Tally) -> &AtomicU64| -> u64 {
        tallies.iter().map(|t| f(t).load(Ordering::Relaxed)).sum()
    };
    let connect_time = connect_start.elapsed();
    let connected = clients.len();
    println!(
        "connected {connected}/{} in {:.2}s ({failed} failed)",
        load.clients,
        connect_time.as_secs_f64()
    );
    // Held, never polled: their socket buffers fill, then the hub's queue for them.
    let mut stalled = Vec::with_capacity(load.slow);
    for n in 0..load.slow {
        stalled.push(connect(common, "bench-0", load.clients + n, n).await?);
    }
    // Let every subscription settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server1 = proc_stat(common.server_pid);
    let me1 = proc_stat(None);
    let mut sent = 0u64;
    if scenario == "idle" {
        tokio::time::sleep(Duration::from_secs(load.duration)).await;
    } else {
        sent = publish(&load, projects).await?;
        // Drain: wait for deliveries to stop growing.
        let mut seen = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sum(|t| &t.received);
            if now == seen {
                break;
            }
            seen = now;
        }
    }
    let server2 = proc_stat(common.server_pid);
    let me2 = proc_stat(None);
    drop(stalled);
    for c in &clients {
        c.abort();
    }
    for c in clients {
        let _ = c.await;
    }
    let received = sum(|t| &t.received);
    let (duplicates, reordered) = (sum(|t| &t.duplicates), sum(|t| &t.reordered));
    let mut h = latency_histogram()?;
    for t in &tallies {
        if let Ok(client) = t.latency.lock() {
            h.add(&*client)?;
        }
    }
    let mut result = vec![
        format!("scenario={scenario}"),
        format!("clients={connected}"),
        format!("slow={}", load.slow),
        format!("per_connection={per}"),
        format!("connect_s={:.2}", connect_time.as_secs_f64()),
    ];
    let per_project = (connected * per.max(1)) as f64 / projects as f64;
    let expected = (sent as f64 * per_project).round() as u64;
    println!("scenario {scenario}: clients {connected}, projects {projects}, events sent {sent}");
    if scenario != "idle" {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "deliveries expected {expected} received {received} lost {} duplicates {} reordered {}",
            expected.saturating_sub(received),
            duplicates,
            reordered
        );
        println!(
            "latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
        println!(
            "delivered frames/s {:.0}",
            received as f64 / load.duration.max(1) as f64
        );
        result.extend([
            format!("expected={expected}"),
            format!("received={received}"),
            format!("lost={}", expected.saturating_sub(received)),
            format!("duplicates={duplicates}"),
            format!("reordered={reordered}"),
            format!("p50_ms={:.2}", ms(0.5)),
            format!("p99_ms={:.2}", ms(0.99)),
            format!("p999_ms={:.2}", ms(0.999)),
            format!("max_ms={:.2}", h.max() as f64 / 1000.0),
        ]);
    }
    if let (Some(a), Some(b), Some(c)) = (server0, server1, server2) {
        let rss_per_conn =
            (b.rss_kib.saturating_sub(a.rss_kib)) as f64 * 1024.0 / connected.max(1) as f64;
        println!(
            "server RSS {} → {} KiB: {:.0} bytes per connection",
            a.rss_kib, b.rss_kib, rss_per_conn
        );
        result.push(format!("server_rss_kib={}", b.rss_kib));
        result.push(format!("rss_per_conn_kib={:.1}", rss_per_conn / 1024.0));
        if received > 0 {
            println!(
                "server CPU {:.2}s while publishing: {:.2} µs per delivered frame",
                c.cpu_s - b.cpu_s,
                (c.cpu_s - b.cpu_s) * 1e6 / received as f64
            );
            result.push(format!(
                "cpu_us_per_frame={:.2}",
                (c.cpu_s - b.cpu_s) * 1e6 / received as f64
            ));
        }
    }
    if let (Some(a), Some(b)) = (me1, me2) {
        println!(
            "load tool CPU {:.2}s over the run (of {:.0}s wall)",
            b.cpu_s - a.cpu_s,
            load.duration
        );
        result.push(format!("tool_cpu_s={:.2}", b.cpu_s - a.cpu_s));
    }
    println!("RESULT {}", result.join(" "));
    Ok(())
}

/// Publishes `rate` events/s for `duration` s, round robin over the projects.
async fn publish(load: &Load, projects: usize) -> anyhow::Result<u64> {
    let total = load.rate * load.duration;
    let interval = Duration::from_secs_f64(1.0 / load.rate.max(1) as f64);
    // One node or a cluster, through the hub's own connection type.
    let target = RedisTarget::parse(&load.redis_url)?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(5),
        max_retry_delay: None,
    };
    let mut redis = RedisConn::open(&target, timeouts)?;
    let (command, plain) = match (target.is_cluster(), load.plain_publish) {
        (true, false) => ("SPUBLISH", false),
        _ => ("PUBLISH", true),
    };
    let http = reqwest::Client::new();
    let pad = "x".repeat(load.pad);
    let start = tokio::time::Instant::now();
    for seq in 0..total {
        tokio::time::sleep_until(start + interval * seq as u32).await;
        let project = format!("bench-{}", seq as usize % projects);
        let payload = format!(
            r#"{{"event":"log","data":{{"level":"INFO","message":"seq={seq} sent_us={} {pad}","timestamp":"{}"}}}}"#,
            now_us(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        match load.publish {
            PublishVia::Redis => {
                let channel = if plain {
                    format!("progress:{project}")
                } else {
                    format!("progress:{{{project}}}")
                };
                let _: i64 = redis::cmd(command)
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut redis)
                    .await?;
            }
            PublishVia::Http => {
                let body = format!(
                    r#"{{"event":"log","data":{{"level":"INFO","message":"seq={seq} sent_us={} {pad}"}}}}"#,
                    now_us()
                );
                let hub = nth_of(&load.http_url, seq as usize);
                let url = format!("{hub}/api/v1/projects/{project}/events");
                http.post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
    }
    Ok(total)
}

async fn run_churn(churn: Churn) -> anyhow::Result<()> {
    let server0 = proc_stat(churn.common.server_pid);
    let start = Instant::now();
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let run = now_us() % 1_000_000;
    futures_util::stream::iter(0..churn.cycles)
        .for_each_concurrent(churn.concurrency, |n| {
            let common = &churn.common;
            let (done, failed) = (&done, &failed);
            let project = if churn.project_per_cycle {
                format!("churn-{run}-{n}")
            } else {
                format!("churn-{}", n % 100)
            };
            async move {
                match connect(common, &project, n, n).await {
                    Ok(mut ws) => {
                        let first = ws.next().await;
                        let _ = ws.close(None).await;
                        if matches!(first, Some(Ok(Message::Text(_)))) {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    println!(
        "churn: {ok} cycles ok, {} failed, in {elapsed:.2}s: {:.0} cycles/s",
        failed.load(Ordering::Relaxed),
        ok as f64 / elapsed
    );
    let mut result = vec![
        "scenario=churn".to_string(),
        format!("cycles={ok}"),
        format!("failed={}", failed.load(Ordering::Relaxed)),
        format!("cycles_per_s={:.0}", ok as f64 / elapsed),
    ];
    if let (Some(a), Some(b)) = (server0, proc_stat(churn.common.server_pid)) {
        println!(
            "server CPU {:.2}s: {:.0} µs per cycle",
            b.cpu_s - a.cpu_s,
            (b.cpu_s - a.cpu_s) * 1e6 / ok.max(1) as f64
        );
        result.push(format!(
            "cpu_us_per_cycle={:.0}",
            (b.cpu_s - a.cpu_s) * 1e6 / ok.max(1) as f64
        ));
    }
    println!("RESULT {}", result.join(" "));
    Ok(())
}

/// Runs the scenario the command line names (the `progress-hub-bench` binary's `main`).
pub async fn run() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Fanout(load) => run_load(load, "fanout").await,
        Scenario::Spread(load) => run_load(load, "spread").await,
        Scenario::Idle(load) => run_load(load, "idle").await,
        Scenario::Churn(churn) => run_churn(churn).await,
        Scenario::Floor(args) => floor::run(args).await,
        Scenario::Storm(args) => storm::run(args).await,
        Scenario::Soak(args) => soak::run(args).await,
    }
}
