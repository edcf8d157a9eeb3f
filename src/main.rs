//! The `progress-hub` command line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use progress_hub::broker::HistoryConfig;
use progress_hub::cli::publish::PublishArgs;
use progress_hub::cli::watch::{JobEnd, WatchArgs};
use progress_hub::cli::worker::{JobArgs, WorkerArgs};
use progress_hub::config::ServeConfig;
use progress_hub::locale::Locale;
use progress_hub::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "progress-hub",
    version,
    about = "Real-time progress push server"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "HUB_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (self-contained without --redis-url).
    Serve(ServeArgs),
    /// Publish one event through the hub's publish path (history + resume).
    Publish(PublishArgs),
    /// Run generation jobs from the Redis job queue.
    Worker(WorkerArgs),
    /// Watch a project's progress in the terminal (exit 0 completed, 1 failed).
    Watch(WatchArgs),
    /// Mint an access token (when the hub runs with --auth-secret).
    Token(TokenArgs),
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// A project the token may watch; repeat for more; `*` for all.
    #[arg(long, required = true)]
    project: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Also allow publishing and starting jobs.
    #[arg(long)]
    publish: bool,
    /// The hub's secret.
    #[arg(long, env = "HUB_AUTH_SECRET", hide_env_values = true)]
    auth_secret: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Redis to cooperate through, e.g. redis://127.0.0.1:6379. Without it the hub runs
    /// self-contained with an in-process broker.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// PING interval on the Redis subscriber connection (a dead link is noticed within it).
    #[arg(long, env = "HUB_REDIS_KEEPALIVE", default_value = "5s", value_parser = humantime::parse_duration)]
    redis_keepalive: Duration,
    /// Time between `ping` frames.
    #[arg(long, env = "HUB_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Silence after which a client is closed with 4408.
    #[arg(long, env = "HUB_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// Largest client frame, in bytes; larger closes the connection with 1009.
    #[arg(long, env = "HUB_MAX_FRAME_BYTES", default_value_t = 65536)]
    max_frame_bytes: usize,
    /// Frames a client may lag behind before the slow-consumer policy applies.
    #[arg(long, env = "HUB_QUEUE_CAPACITY", default_value_t = 1024)]
    queue_capacity: usize,
    /// Events of history kept per project (for resume).
    #[arg(long, env = "HUB_HISTORY_LEN", default_value_t = 1000)]
    history_len: usize,
    /// How long history and state are kept after `complete`.
    #[arg(long, env = "HUB_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Language of text the hub writes: zh-TW (default) or en.
    #[arg(long, env = "HUB_LOCALE", default_value = "zh-TW")]
    locale: Locale,
    /// progress_update events of one project are coalesced to one per this window.
    #[arg(long, env = "HUB_COALESCE_WINDOW", default_value = "500ms", value_parser = humantime::parse_duration)]
    coalesce_window: Duration,
    /// Run no in-process worker (jobs wait for `progress-hub worker` processes).
    #[arg(long, env = "HUB_NO_WORKER")]
    no_worker: bool,
    #[command(flatten)]
    jobs: JobArgs,
    /// Most connections (WebSocket + SSE) this process holds; more get close 1013.
    #[arg(long, env = "HUB_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Most connections from one client address; more get close 1013.
    #[arg(long, env = "HUB_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    max_connections_per_ip: usize,
    /// Most projects this process watches at once; sessions of more get close 1013.
    #[arg(long, env = "HUB_MAX_PROJECTS", default_value_t = 100_000)]
    max_projects: usize,
    /// Turn access control on: clients need HS256 JWTs signed with this secret.
    #[arg(long, env = "HUB_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Browser origins allowed to connect, comma-separated (default: any).
    #[arg(long, env = "HUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// How long shutdown waits for clients to close.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// A connection must send a complete request head within this (also the idle time
    /// allowed between requests on a kept-alive connection); else it is closed.
    #[arg(long, env = "HUB_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Longest a plain HTTP request (reading its body, answering) may take; 408 after.
    #[arg(long, env = "HUB_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
}

impl From<ServeArgs> for ServeConfig {
    fn from(a: ServeArgs) -> Self {
        Self {
            listen: a.listen,
            redis_url: a.redis_url.filter(|url| !url.is_empty()),
            redis_keepalive: a.redis_keepalive,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            max_frame_bytes: a.max_frame_bytes,
            queue_capacity: a.queue_capacity,
            shutdown_grace: a.shutdown_grace,
            handshake_timeout: a.handshake_timeout,
            request_timeout: a.request_timeout,
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
            max_projects: a.max_projects,
            auth_secret: a.auth_secret.filter(|s| !s.is_empty()),
            allowed_origins: a.allowed_origins,
            history: HistoryConfig {
                max_len: a.history_len,
                retention: a.retention,
                ..HistoryConfig::default()
            },
            locale: a.locale,
            coalesce_window: a.coalesce_window,
            worker: (!a.no_worker).then(|| a.jobs.worker_config(a.shutdown_grace)),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args.into()).await,
        Command::Worker(args) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let trigger = stop.clone();
            let signal = shutdown_signal()?;
            tokio::spawn(async move {
                signal.await;
                tracing::info!("stopping: no new jobs; running ones finish or are handed back");
                trigger.cancel();
            });
            progress_hub::cli::worker::run(&args, stop).await?;
            Ok(())
        }
        // Exit codes: 0 completed, 1 failed, 2 could not watch.
        Command::Watch(args) => match progress_hub::cli::watch::run(&args).await {
            Ok(JobEnd::Completed) => Ok(()),
            Ok(JobEnd::Failed) => std::process::exit(1),
            Err(err) => {
                eprintln!("error: {err}");
                std::process::exit(2)
            }
        },
        Command::Token(args) => {
            let auth = progress_hub::auth::Auth::new(&args.auth_secret);
            println!("{}", auth.mint(&args.project, args.publish, args.ttl)?);
            Ok(())
        }
        Command::Publish(args) => {
            match progress_hub::cli::publish::run(&args).await? {
                Some(id) => println!("{id}"),
                None => println!("coalesced"),
            }
            Ok(())
        }
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Listen for signals before announcing the URL: a SIGTERM right after the start
    // line must be a graceful stop, not the default kill.
    let signal = shutdown_signal()?;
    let broker = if config.redis_url.is_some() {
        "redis"
    } else {
        "in-process (self-contained)"
    };
    let hub = progress_hub::server::start(config)
        .await
        .context("starting the hub")?;
    let addr = hub.local_addr();
    tracing::info!(
        "progress-hub listening on http://{addr} — page http://{addr}/ — API docs http://{addr}/docs — WebSocket ws://{addr}/api/v1/projects/{{project_id}}/progress — broker {broker}"
    );
    let stop = hub.shutdown_token();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down: closing every client with 1012 (service restart)");
        stop.cancel();
    });
    hub.wait().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// Registers for Ctrl-C and SIGTERM now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["progress-hub", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve parses as serve");
        };
        let from_cli = ServeConfig::from(args);
        let lib = ServeConfig::default();
        assert_eq!(from_cli.listen, lib.listen);
        assert_eq!(from_cli.redis_keepalive, lib.redis_keepalive);
        assert_eq!(from_cli.heartbeat_interval, lib.heartbeat_interval);
        assert_eq!(from_cli.heartbeat_timeout, lib.heartbeat_timeout);
        assert_eq!(from_cli.max_frame_bytes, lib.max_frame_bytes);
        assert_eq!(from_cli.queue_capacity, lib.queue_capacity);
        assert_eq!(from_cli.shutdown_grace, lib.shutdown_grace);
        assert_eq!(from_cli.handshake_timeout, lib.handshake_timeout);
        assert_eq!(from_cli.request_timeout, lib.request_timeout);
        assert_eq!(from_cli.history, lib.history);
        assert_eq!(from_cli.max_connections, lib.max_connections);
        assert_eq!(from_cli.max_connections_per_ip, lib.max_connections_per_ip);
        assert_eq!(from_cli.max_projects, lib.max_projects);
        assert_eq!(from_cli.locale, lib.locale);
        assert_eq!(from_cli.coalesce_window, lib.coalesce_window);
        let (cli_worker, lib_worker) = (from_cli.worker.unwrap(), lib.worker.unwrap());
        assert_eq!(cli_worker.mock_delay, lib_worker.mock_delay);
        assert_eq!(cli_worker.retry, lib_worker.retry);
        assert_eq!(cli_worker.concurrency, lib_worker.concurrency);
        assert_eq!(cli_worker.claim_idle, lib_worker.claim_idle);
        assert_eq!(cli_worker.publish_retry, lib_worker.publish_retry);
    }
}
