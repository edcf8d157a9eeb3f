//! `soak`: the long-run check of "no memory leak over long runs" (issue #23). One hub in
//! Redis mode under steady, moderate load for a long time, with its resources sampled.
//!
//! The tool runs the processes itself (loopback only): its own `redis-server` on a free
//! port (AOF on, in a temporary directory, so a restart keeps what Redis had) and one
//! release hub. Then, for `--duration` seconds:
//!
//! - `--projects` projects get `--rate` `log` events per second in all, through the
//!   hub's publish path (`POST .../events`), each stamped with its per-project `seq=`
//!   (the storm's publishers);
//! - `--watchers` clients stay on them (the storm's clients: they answer pings, and
//!   reconnect and resume from their last id after any close);
//! - `--churners` loops join and leave: a WebSocket or an SSE stream (alternately) on
//!   one of the projects or, one time in four, on a project nobody watched before, held
//!   0.2–2 s, then closed cleanly or dropped;
//! - every `--storm-every` seconds (half a period out of step with the restarts) every
//!   watcher drops its connection at once and resumes, spread over a second;
//! - every `--redis-restart-every` seconds Redis is restarted (SIGTERM, which writes
//!   the AOF, then a new server on the same port and directory).
//!
//! Every `--sample` seconds one CSV row: the hub's RSS, open descriptors and threads
//! (from /proc; tasks are not exposed on /metrics), its `hub_connections` and
//! `hub_projects_watched`, Redis `used_memory`, and the load so far. At the end every
//! watcher's events are checked as in the storm: each accepted `seq` of its project
//! exactly once. `scripts/soak.sh` runs it and plots the CSV (`scripts/soak_plot.py`).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::storm::{self, Delivery, Published, Shared};
use crate::{now_us, proc_stat};

#[derive(Args, Clone)]
pub struct SoakArgs {
    /// The hub binary; default: `progress-hub` beside this tool.
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// An extra flag for the hub's `serve` (repeatable).
    #[arg(long = "hub-arg", allow_hyphen_values = true)]
    hub_args: Vec<String>,
    /// The Redis server binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Seconds of load.
    #[arg(short = 'd', long, default_value_t = 3600)]
    duration: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Seconds between two Redis restarts (0: none).
    #[arg(long, default_value_t = 600)]
    redis_restart_every: u64,
    /// Seconds between two reconnect storms (0: none).
    #[arg(long, default_value_t = 600)]
    storm_every: u64,
    /// Projects published to and watched.
    #[arg(short = 'p', long, default_value_t = 20)]
    projects: usize,
    /// Events per second, over all projects.
    #[arg(short = 'r', long, default_value_t = 50)]
    rate: u64,
    /// Clients that stay (and resume after every close).
    #[arg(short = 'w', long, default_value_t = 400)]
    watchers: usize,
    /// Loops that join and leave, each one client at a time.
    #[arg(long, default_value_t = 8)]
    churners: usize,
    /// Spread client sockets over this many source addresses 127.0.0.1..
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Where the samples go (CSV).
    #[arg(long)]
    csv: PathBuf,
    /// Append the hub's log to this file; default: discarded.
    #[arg(long)]
    hub_log: Option<PathBuf>,
}

/// The test's own redis-server: on a free port, AOF in a directory of its own.
struct Redis {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Redis {
    async fn start(bin: &PathBuf, port: u16, dir: PathBuf) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        storm::listening(port, &mut child, Duration::from_secs(30)).await?;
        Ok(Self {
            bin: bin.clone(),
            port,
            dir,
            child,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGTERM (Redis writes its AOF and exits), then a new server on the same port.
    async fn restart(&mut self) -> anyhow::Result<()> {
        storm::sigterm(&self.child)?;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("redis-server did not exit after SIGTERM")??;
        *self = Self::start(&self.bin, self.port, self.dir.clone()).await?;
        Ok(())
    }

    /// `used_memory` from `INFO memory`, on a connection of its own (the server may be
    /// the one just restarted).
    async fn used_memory(&self) -> Option<u64> {
        let client = redis::Client::open(self.url()).ok()?;
        let info = async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("INFO")
                .arg("memory")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        let text = tokio::time::timeout(Duration::from_secs(2), info)
            .await
            .ok()??;
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// What the churners did.
#[derive(Default)]
struct Churned {
    cycles: AtomicU64,
    failed: AtomicU64,
}

/// One churner: join, read for a while, leave, again until stopped. Odd churners use
/// SSE, even ones WebSocket.
async fn churner(
    index: usize,
    shared: Arc<Shared>,
    port: u16,
    projects: usize,
    run: u64,
    churned: Arc<Churned>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::new();
    for cycle in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        let (project, hold, clean) = {
            let mut rng = rand::rng();
            let project = if rng.random_range(0..4) == 0 {
                format!("soak-{run}-new-{index}-{cycle}")
            } else {
                format!("soak-{run}-{}", rng.random_range(0..projects))
            };
            let hold = Duration::from_millis(rng.random_range(200..2000));
            (project, hold, rng.random::<bool>())
        };
        let ok = if index.is_multiple_of(2) {
            churn_websocket(&shared, &project, index, hold, clean).await
        } else {
            churn_sse(&http, port, &project, hold).await
        };
        let counter = if ok { &churned.cycles } else { &churned.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if !ok {
            // A refused or broken join: do not spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A WebSocket held `hold`, answering pings; ok when it got its `connected`.
async fn churn_websocket(
    shared: &Shared,
    project: &str,
    n: usize,
    hold: Duration,
    clean: bool,
) -> bool {
    let Ok(mut ws) = storm::connect(shared, project, n, None).await else {
        return false;
    };
    let mut greeted = false;
    let _ = tokio::time::timeout(hold, async {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            if text.contains(r#""event":"connected""#) {
                greeted = true;
            } else if text.contains(r#""event":"ping""#) {
                let _ = ws.send(Message::text(r#"{"event":"pong"}"#)).await;
            }
        }
    })
    .await;
    if clean {
        let _ = ws.close(None).await;
    }
    greeted
}

/// An SSE stream read for `hold`, then dropped; ok when its first bytes came.
async fn churn_sse(http: &reqwest::Client, port: u16, project: &str, hold: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/api/v1/projects/{project}/events");
    let Ok(Ok(mut response)) = http
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map(reqwest::Response::error_for_status)
    else {
        return false;
    };
    let mut got = false;
    let _ = tokio::time::timeout(hold, async {
        while let Ok(Some(_)) = response.chunk().await {
            got = true;
        }
    })
    .await;
    got
}

/// The hub's resources from /proc: RSS KiB, open descriptors, threads.
fn hub_resources(pid: Option<u32>) -> (Option<u64>, Option<usize>, Option<u64>) {
    let Some(pid) = pid else {
        return (None, None, None);
    };
    let rss = proc_stat(Some(pid)).map(|s| s.rss_kib);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count);
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        });
    (rss, fds, threads)
}

/// `hub_connections` (all transports) and `hub_projects_watched` from /metrics.
async fn hub_gauges(http: &reqwest::Client, port: u16) -> (Option<u64>, Option<u64>) {
    let text = match http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return (None, None),
    };
    let value = |line: &str| {
        line.rsplit_once(' ')
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let mut connections = None;
    let mut watched = None;
    for line in text.lines() {
        if line.starts_with("hub_connections{") {
            *connections.get_or_insert(0) += value(line).unwrap_or(0);
        } else if line.starts_with("hub_projects_watched ") {
            watched = value(line);
        }
    }
    (connections, watched)
}

fn cell<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.sample == 0 || args.duration == 0 {
        bail!("--sample and --duration must be above 0");
    }
    let bin = storm::hub_bin(args.hub_bin.as_ref())?;
    let dir = std::env::temp_dir().join(format!("progress-hub-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut redis = Redis::start(&args.redis_bin, storm::free_port()?, dir.clone()).await?;
    let port = storm::free_port()?;
    let mut hub = storm::spawn_hub(
        &bin,
        port,
        &redis.url(),
        &args.hub_args,
        args.hub_log.as_ref(),
    )?;
    storm::listening(port, &mut hub, Duration::from_secs(30)).await?;
    let hub_pid = hub.id();
    let projects = args.projects.max(1);
    let run = now_us() % 1_000_000;
    let name = |p: usize| format!("soak-{run}-{p}");

    // The watchers, on before publishing starts: each must get every event.
    let shared = Arc::new(Shared::new(port, args.sources));
    let stop = CancellationToken::new();
    let mut watchers = Vec::with_capacity(args.watchers);
    for n in 0..args.watchers {
        let project = (n % projects, name(n % projects));
        let ws = storm::connect(&shared, &project.1, n, None)
            .await
            .with_context(|| format!("watcher {n} could not connect"))?;
        watchers.push(tokio::spawn(storm::client(
            n,
            project,
            ws,
            Arc::clone(&shared),
            stop.clone(),
        )));
    }
    // Publishing starts once every watcher has its `connected` (the hub has subscribed
    // it by then): an event published before would rightly not be theirs.
    storm::wait_for(
        &shared,
        |s| s.greeted.load(Ordering::Relaxed) >= args.watchers,
        Duration::from_secs(60),
    )
    .await
    .context("not every watcher got its `connected`")?;
    // From now on a `connected` after the first is a resume.
    shared.restarted.store(true, Ordering::Relaxed);

    let http = reqwest::Client::new();
    let publish_stop = CancellationToken::new();
    let published = Arc::new(AtomicU64::new(0));
    let logs: Vec<Arc<Published>> = (0..projects).map(|_| Arc::default()).collect();
    // Each project's publisher sends one event per `interval`: `rate` in all.
    let interval = Duration::from_secs_f64(projects as f64 / args.rate.max(1) as f64);
    let publishers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(p, log)| {
            tokio::spawn(storm::publisher(
                http.clone(),
                format!("http://127.0.0.1:{port}/api/v1/projects/{}/events", name(p)),
                interval,
                Duration::from_secs_f64(p as f64 / args.rate.max(1) as f64),
                Arc::clone(log),
                Arc::clone(&published),
                publish_stop.clone(),
            ))
        })
        .collect();
    let churned = Arc::new(Churned::default());
    let churners: Vec<_> = (0..args.churners)
        .map(|i| {
            tokio::spawn(churner(
                args.watchers + i,
                Arc::clone(&shared),
                port,
                projects,
                run,
                Arc::clone(&churned),
                stop.clone(),
            ))
        })
        .collect();

    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&args.csv)
            .with_context(|| format!("cannot write {}", args.csv.display()))?,
    );
    writeln!(
        csv,
        "t_s,hub_rss_kib,hub_fds,hub_threads,redis_used_memory,hub_connections,hub_projects_watched,published,received,churn_cycles,churn_failed,storms,redis_restarts"
    )?;
    println!(
        "soak: {}s, {} watchers and {} churners over {projects} projects, {} events/s; Redis restart every {}s, storm every {}s; samples every {}s into {}",
        args.duration,
        args.watchers,
        args.churners,
        args.rate,
        args.redis_restart_every,
        args.storm_every,
        args.sample,
        args.csv.display()
    );
    let start = tokio::time::Instant::now();
    let (mut storms, mut restarts) = (0u64, 0u64);
    let mut next_restart = args.redis_restart_every;
    // Half a period out of step with the restarts, so the two do not overlap.
    let mut next_storm = args.storm_every / 2;
    let mut first_rss = None;
    for tick in 0..=args.duration / args.sample {
        tokio::time::sleep_until(start + Duration::from_secs(tick * args.sample)).await;
        let t = tick * args.sample;
        if let Some(status) = hub.try_wait()? {
            bail!("the hub exited during the soak at {t}s: {status}");
        }
        if args.storm_every > 0 && t >= next_storm && t < args.duration {
            shared.drops.send_modify(|n| *n += 1);
            storms += 1;
            next_storm += args.storm_every;
        }
        if args.redis_restart_every > 0 && t >= next_restart && t < args.duration {
            redis.restart().await?;
            restarts += 1;
            next_restart += args.redis_restart_every;
        }
        let (rss, fds, threads) = hub_resources(hub_pid);
        let used = redis.used_memory().await;
        let (connections, watched) = hub_gauges(&http, port).await;
        first_rss = first_rss.or(rss);
        let row = [
            t.to_string(),
            cell(rss),
            cell(fds),
            cell(threads),
            cell(used),
            cell(connections),
            cell(watched),
            published.load(Ordering::Relaxed).to_string(),
            shared.received.load(Ordering::Relaxed).to_string(),
            churned.cycles.load(Ordering::Relaxed).to_string(),
            churned.failed.load(Ordering::Relaxed).to_string(),
            storms.to_string(),
            restarts.to_string(),
        ];
        writeln!(csv, "{}", row.join(","))?;
        csv.flush()?;
        if t.is_multiple_of(60) {
            println!(
                "t={t}s hub RSS {} KiB fds {} threads {} connections {} | Redis used_memory {} | published {} churn cycles {}",
                cell(rss),
                cell(fds),
                cell(threads),
                cell(connections),
                cell(used),
                published.load(Ordering::Relaxed),
                churned.cycles.load(Ordering::Relaxed)
            );
        }
    }

    // Publishing stops, then the watchers get what is still in flight.
    publish_stop.cancel();
    for task in publishers {
        let _ = task.await;
    }
    let watching = |p: usize| (0..args.watchers).filter(|n| n % projects == p).count() as u64;
    let expected: u64 = logs
        .iter()
        .enumerate()
        .map(|(p, log)| log.accepted() * watching(p))
        .sum();
    let drained = storm::wait_for(
        &shared,
        |s| s.received.load(Ordering::Relaxed) >= expected,
        Duration::from_secs(10),
    )
    .await;
    if drained.is_err() {
        println!("(not every delivery came within 10 s of the last publish)");
    }
    stop.cancel();
    for task in churners {
        let _ = task.await;
    }
    let mut delivery = Delivery::default();
    let (mut unrecovered, mut reconnects, mut failed_attempts) = (0, 0, 0);
    for task in watchers {
        let report = task.await?;
        delivery.add(&report, &logs);
        unrecovered += report.unrecovered;
        reconnects += report.reconnects;
        failed_attempts += report.failed_attempts;
    }
    let last_rss = proc_stat(hub_pid).map(|s| s.rss_kib);
    let _ = storm::sigterm(&hub);
    let _ = tokio::time::timeout(Duration::from_secs(30), hub.wait()).await;
    let _ = storm::sigterm(&redis.child);
    let _ = tokio::time::timeout(Duration::from_secs(30), redis.child.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "soak done: hub RSS {} → {} KiB; {storms} storms, {restarts} Redis restarts; published {} ({} publishes failed), churn cycles {} ({} failed); watchers: {reconnects} reconnects, {failed_attempts} failed attempts, {unrecovered} resumes not recovered; deliveries received {} lost {} duplicates {} unexpected {}",
        cell(first_rss),
        cell(last_rss),
        published.load(Ordering::Relaxed),
        logs.iter().map(|log| log.failed()).sum::<u64>(),
        churned.cycles.load(Ordering::Relaxed),
        churned.failed.load(Ordering::Relaxed),
        delivery.received,
        delivery.lost,
        delivery.duplicates,
        delivery.unexpected,
    );
    delivery.print_missed(&logs, name, watching);
    let result = [
        "scenario=soak".to_string(),
        format!("samples={}", args.duration / args.sample + 1),
        format!("storms={storms}"),
        format!("redis_restarts={restarts}"),
        format!("published={}", published.load(Ordering::Relaxed)),
        format!(
            "publish_failed={}",
            logs.iter().map(|log| log.failed()).sum::<u64>()
        ),
        format!("expected={expected}"),
        format!("received={}", delivery.received),
        format!("lost={}", delivery.lost),
        format!("duplicates={}", delivery.duplicates),
        format!("unexpected={}", delivery.unexpected),
        format!("unrecovered={unrecovered}"),
        format!("reconnects={reconnects}"),
        format!("churn_cycles={}", churned.cycles.load(Ordering::Relaxed)),
        format!("churn_failed={}", churned.failed.load(Ordering::Relaxed)),
        format!("hub_rss_kib_first={}", cell(first_rss)),
        format!("hub_rss_kib_last={}", cell(last_rss)),
    ];
    println!("RESULT {}", result.join(" "));
    Ok(())
}
