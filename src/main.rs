//! The `progress-hub` command line: parses, then dispatches to the subcommand's
//! module in `cli/` (where every flag and its default lives). `serve` starts the hub
//! library's server (`crates/hub`) with the jobs (`crates/jobs`) as its extension.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::LogFormatArg;
use cli::publish::PublishArgs;
use cli::serve::ServeArgs;
use cli::token::TokenArgs;
use cli::watch::{JobEnd, WatchArgs};
use cli::worker::WorkerArgs;
use progress_hub::config::ServeConfig;
use progress_hub::telemetry;
use progress_hub_jobs::{Jobs, JobsConfig};

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
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (self-contained without --redis-url).
    Serve(Box<ServeArgs>),
    /// Publish one event through the hub's publish path (history + resume).
    Publish(PublishArgs),
    /// Run generation jobs from the Redis job queue.
    Worker(WorkerArgs),
    /// Watch a project's progress in the terminal (exit 0 completed, 1 failed).
    Watch(WatchArgs),
    /// Mint an access token (when the hub runs with --auth-secret).
    Token(TokenArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format.into());
    match cli.command {
        Command::Serve(args) => {
            let (config, jobs) = args.into_configs();
            serve(config, jobs).await
        }
        Command::Worker(args) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let trigger = stop.clone();
            let signal = shutdown_signal()?;
            tokio::spawn(async move {
                signal.await;
                tracing::info!("stopping: no new jobs; running ones finish or are handed back");
                trigger.cancel();
            });
            cli::worker::run(&args, stop).await?;
            Ok(())
        }
        // Exit codes: 0 completed, 1 failed, 2 could not watch, 3 cancelled.
        Command::Watch(args) => match cli::watch::run(&args).await {
            Ok(JobEnd::Completed) => Ok(()),
            Ok(JobEnd::Failed) => std::process::exit(1),
            Ok(JobEnd::Cancelled) => std::process::exit(3),
            Err(err) => {
                eprintln!("error: {err}");
                std::process::exit(2)
            }
        },
        Command::Token(args) => {
            println!("{}", cli::token::run(&args)?);
            Ok(())
        }
        Command::Publish(args) => {
            match cli::publish::run(&args).await? {
                Some(id) => println!("{id}"),
                None => println!("coalesced"),
            }
            Ok(())
        }
    }
}

async fn serve(config: ServeConfig, jobs: JobsConfig) -> anyhow::Result<()> {
    // Before the hub fits its connection caps under it.
    progress_hub::limits::raise_open_file_limit();
    // Listen for signals before announcing the URL: a SIGTERM right after the start
    // line must be a graceful stop, not the default kill.
    let signal = shutdown_signal()?;
    let broker = if config.redis_url.is_some() {
        "redis"
    } else {
        "in-process (self-contained)"
    };
    let hub = progress_hub::server::start_with(config, vec![Box::new(Jobs::new(jobs))])
        .await
        .context("starting the hub")?;
    let addr = hub.local_addr();
    tracing::info!(
        "progress-hub listening on http://{addr} — page http://{addr}/ — API docs http://{addr}/docs — WebSocket ws://{addr}/api/v1/projects/{{project_id}}/progress — broker {broker}"
    );
    if let Some(metrics) = hub.metrics_addr() {
        tracing::info!("metrics on their own listener: http://{metrics}/metrics (not on {addr})");
    }
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
