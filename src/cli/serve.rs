//! `progress-hub serve`: the flags of the hub, each defaulting to the library's
//! default (`crates/hub/src/config.rs`, the jobs' in `crates/jobs`), turned into a
//! [`ServeConfig`] and a [`JobsConfig`].

use std::net::SocketAddr;

use clap::Args;

use super::shared::{HistoryArgs, HumanDuration, JobArgs, PublishingArgs};
use progress_hub::broker::HistoryConfig;
use progress_hub::broker::quota::ProjectQuota;
use progress_hub::config::{self, ServeConfig};
use progress_hub::webhook::{self, Endpoint, EventType, Secret, WebhookConfig};
use progress_hub_jobs::{JobsConfig, QueueLimits};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUB_LISTEN", default_value_t = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Redis to cooperate through, e.g. redis://127.0.0.1:6379,
    /// redis+cluster://h1:7000,h2:7000 or redis+sentinel://s1:26379,s2:26379/mymaster.
    /// Without it the hub runs self-contained with an in-process broker.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// PING interval on the Redis subscriber connection (a dead link is noticed within it).
    #[arg(long, env = "HUB_REDIS_KEEPALIVE", default_value_t = config::DEFAULT_REDIS_KEEPALIVE.into())]
    pub redis_keepalive: HumanDuration,
    /// How long this hub's count of a project's watchers lasts in Redis unless it is
    /// refreshed (every third of it): after a hub dies, its watchers stop counting
    /// within this.
    #[arg(long, env = "HUB_PRESENCE_TTL", default_value_t = config::DEFAULT_PRESENCE_TTL.into())]
    pub presence_ttl: HumanDuration,
    /// Time between `ping` frames.
    #[arg(long, env = "HUB_HEARTBEAT_INTERVAL", default_value_t = config::DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: HumanDuration,
    /// Silence after which a client is closed with 4408.
    #[arg(long, env = "HUB_HEARTBEAT_TIMEOUT", default_value_t = config::DEFAULT_HEARTBEAT_TIMEOUT.into())]
    pub heartbeat_timeout: HumanDuration,
    /// Largest client frame, in bytes; larger closes the connection with 1009.
    #[arg(long, env = "HUB_MAX_FRAME_BYTES", default_value_t = config::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Frames a client may lag behind before the slow-consumer policy applies.
    #[arg(long, env = "HUB_QUEUE_CAPACITY", default_value_t = config::DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// Bytes of frames a client may lag behind before the slow-consumer policy applies.
    #[arg(long, env = "HUB_QUEUE_BYTES", default_value_t = config::DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// Most project subscriptions one multiplexed connection (`GET /api/v1/progress`)
    /// holds; more get `subscription_error` TOO_MANY_SUBSCRIPTIONS.
    #[arg(long, env = "HUB_MAX_SUBSCRIPTIONS", default_value_t = config::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub publishing: PublishingArgs,
    /// Run no in-process worker (jobs wait for `progress-hub worker` processes).
    #[arg(long, env = "HUB_NO_WORKER")]
    pub no_worker: bool,
    #[command(flatten)]
    pub jobs: JobArgs,
    /// Most generate jobs waiting in the queue, from all clients; more get 503.
    #[arg(long, env = "HUB_MAX_QUEUED_JOBS", default_value_t = QueueLimits::default().max_queued)]
    pub max_queued_jobs: usize,
    /// Most unfinished generate jobs of one client (its token with --auth-secret, else its
    /// address); more get 429.
    #[arg(long, env = "HUB_MAX_QUEUED_JOBS_PER_CLIENT", default_value_t = QueueLimits::default().max_queued_per_client)]
    pub max_queued_jobs_per_client: usize,
    /// Most projects one client (its token with --auth-secret, else its address) may
    /// create over the HTTP API (an event or a generate job for a project with no
    /// history): in process, the projects it holds at once;
    /// with Redis, those it created within the active TTL (7 days), counted across all hubs. A
    /// publish that would create one more gets 429 TOO_MANY_NEW_PROJECTS; 0: no bound.
    #[arg(long, env = "HUB_MAX_PROJECTS_PER_CLIENT", default_value_t = ProjectQuota::default().max_per_client)]
    pub max_projects_per_client: usize,
    /// Most projects one client may create in any minute (as --max-projects-per-client);
    /// 0: no bound.
    #[arg(long, env = "HUB_NEW_PROJECTS_PER_MINUTE", default_value_t = ProjectQuota::default().per_minute)]
    pub new_projects_per_minute: usize,
    /// Most connections (WebSocket + SSE) this process holds; more get close 1013.
    #[arg(long, env = "HUB_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections from one client address; more get close 1013.
    #[arg(long, env = "HUB_MAX_CONNECTIONS_PER_IP", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Most projects this process watches at once; sessions of more get close 1013.
    #[arg(long, env = "HUB_MAX_PROJECTS", default_value_t = config::DEFAULT_MAX_PROJECTS)]
    pub max_projects: usize,
    /// Turn access control on: clients need HS256 JWTs signed with this secret (an
    /// empty one is refused at start).
    #[arg(long, env = "HUB_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// Browser origins allowed to connect, comma-separated (default: any).
    #[arg(long, env = "HUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Origins whose pages may call the hub's HTTP routes (state, SSE, publish,
    /// generate) cross-origin, comma-separated exact origins such as
    /// https://app.example (no wildcard; default: none, no CORS headers). They pass
    /// --allowed-origins too.
    #[arg(long, env = "HUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<progress_hub::http::cors::CorsOrigin>,
    /// Serve /metrics on this address only (a listener of its own, e.g. on a private
    /// interface), and not on --listen (default: on --listen).
    #[arg(long, env = "HUB_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How long shutdown waits for clients to close.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value_t = config::DEFAULT_SHUTDOWN_GRACE.into())]
    pub shutdown_grace: HumanDuration,
    /// A connection must send a complete request head within this (also the idle time
    /// allowed between requests on a kept-alive connection); else it is closed.
    #[arg(long, env = "HUB_HANDSHAKE_TIMEOUT", default_value_t = config::DEFAULT_HANDSHAKE_TIMEOUT.into())]
    pub handshake_timeout: HumanDuration,
    /// Longest a plain HTTP request (reading its body, answering) may take; 408 after.
    #[arg(long, env = "HUB_REQUEST_TIMEOUT", default_value_t = config::DEFAULT_REQUEST_TIMEOUT.into())]
    pub request_timeout: HumanDuration,
    /// A run under way whose project published nothing for this long is stalled: its
    /// state says so, live watchers get a `stalled` frame, webhooks `job.stalled` (set
    /// it above the longest silent step of your jobs).
    #[arg(long, env = "HUB_STALL_AFTER", default_value_t = config::DEFAULT_STALL_AFTER.into())]
    pub stall_after: HumanDuration,
    /// Once a stage ran a few times (as this hub saw), its stall bound is 3 times its
    /// longest recent run instead of `--stall-after`, but never below this.
    #[arg(long, env = "HUB_STALL_FLOOR", default_value_t = config::DEFAULT_STALL_FLOOR.into())]
    pub stall_floor: HumanDuration,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// The webhooks (docs/WEBHOOKS.md): where a job's end is POSTed, signed.
#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// An http(s) URL the hub POSTs a signed event to when a job ends (repeatable; the
    /// environment variable takes a comma-separated list). Needs --webhook-secret.
    #[arg(
        long = "webhook",
        env = "HUB_WEBHOOK",
        value_delimiter = ',',
        requires = "webhook_secret"
    )]
    pub webhook: Vec<Endpoint>,
    /// The signing secret, whsec_<base64 of 24 to 64 random bytes> (Standard Webhooks).
    #[arg(long, env = "HUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// Events sent, comma-separated (default: all): job.completed, job.failed,
    /// job.cancelled, job.stalled, project.vacated.
    #[arg(long, env = "HUB_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<EventType>,
    /// How long an event is retried after its job ended before it is given up.
    #[arg(long, env = "HUB_WEBHOOK_RETRY_FOR", default_value_t = webhook::config::DEFAULT_RETRY_FOR.into())]
    pub webhook_retry_for: HumanDuration,
    /// The first retry's delay (each next one doubles, with jitter, up to --webhook-retry-max).
    #[arg(long, env = "HUB_WEBHOOK_RETRY_BASE", default_value_t = webhook::config::DEFAULT_RETRY_BASE.into())]
    pub webhook_retry_base: HumanDuration,
    /// The longest wait between two attempts (a longer Retry-After is cut to it).
    #[arg(long, env = "HUB_WEBHOOK_RETRY_MAX", default_value_t = webhook::config::DEFAULT_RETRY_MAX.into())]
    pub webhook_retry_max: HumanDuration,
    /// How long one attempt (connect, send, answer) may take.
    #[arg(long, env = "HUB_WEBHOOK_TIMEOUT", default_value_t = webhook::config::DEFAULT_ATTEMPT_TIMEOUT.into())]
    pub webhook_timeout: HumanDuration,
    /// A hub silent this long about an event it took is taken for dead; another delivers it.
    #[arg(long, env = "HUB_WEBHOOK_LEASE", default_value_t = webhook::config::DEFAULT_LEASE.into())]
    pub webhook_lease: HumanDuration,
    /// Events this hub delivers at once.
    #[arg(long, env = "HUB_WEBHOOK_CONCURRENCY", default_value_t = webhook::config::DEFAULT_CONCURRENCY)]
    pub webhook_concurrency: usize,
    /// Send no job.completed whose complete a watcher received live (the page showed it;
    /// the backend skips the email). Looked at 1 s after the complete.
    #[arg(long, env = "HUB_WEBHOOK_SKIP_WATCHED")]
    pub webhook_skip_watched: bool,
    /// project.vacated is sent once a project watched before has had no watcher, over
    /// every hub, for this long (a reload reconnects within it).
    #[arg(long, env = "HUB_WEBHOOK_VACATED_AFTER", default_value_t = webhook::config::DEFAULT_VACATED_AFTER.into())]
    pub webhook_vacated_after: HumanDuration,
}

impl WebhookArgs {
    fn config(self) -> Option<WebhookConfig> {
        let secret = self.webhook_secret?;
        if self.webhook.is_empty() {
            return None;
        }
        let mut config = WebhookConfig::new(self.webhook, secret);
        if !self.webhook_events.is_empty() {
            config.events = self.webhook_events;
        }
        config.retry_for = self.webhook_retry_for.into();
        config.retry_base = self.webhook_retry_base.into();
        config.retry_max = self.webhook_retry_max.into();
        config.attempt_timeout = self.webhook_timeout.into();
        config.lease = self.webhook_lease.into();
        config.concurrency = self.webhook_concurrency;
        config.skip_watched = self.webhook_skip_watched;
        config.vacated_after = self.webhook_vacated_after.into();
        Some(config)
    }
}

impl From<ServeArgs> for ServeConfig {
    fn from(a: ServeArgs) -> Self {
        Self {
            listen: a.listen,
            redis_url: a.redis_url.filter(|url| !url.is_empty()),
            redis_keepalive: a.redis_keepalive.into(),
            presence_ttl: a.presence_ttl.into(),
            heartbeat_interval: a.heartbeat_interval.into(),
            heartbeat_timeout: a.heartbeat_timeout.into(),
            max_frame_bytes: a.max_frame_bytes,
            queue_capacity: a.queue_capacity,
            queue_bytes: a.queue_bytes,
            max_subscriptions: a.max_subscriptions,
            shutdown_grace: a.shutdown_grace.into(),
            handshake_timeout: a.handshake_timeout.into(),
            request_timeout: a.request_timeout.into(),
            stall_after: a.stall_after.into(),
            stall_floor: a.stall_floor.into(),
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
            max_projects: a.max_projects,
            // An empty secret is passed on, for the hub to refuse: dropping it here would
            // silently run without access control.
            auth_secret: a.auth_secret,
            allowed_origins: a.allowed_origins,
            cors_origins: a.cors_origins,
            metrics_listen: a.metrics_addr,
            history: HistoryConfig {
                project_quota: ProjectQuota {
                    max_per_client: a.max_projects_per_client,
                    per_minute: a.new_projects_per_minute,
                },
                ..a.history.config()
            },
            locale: a.publishing.locale,
            coalesce_window: a.publishing.coalesce_window.into(),
            webhooks: a.webhooks.config(),
        }
    }
}

impl ServeArgs {
    /// The hub's settings, and those of its jobs.
    pub fn into_configs(self) -> (ServeConfig, JobsConfig) {
        let jobs = JobsConfig {
            worker: (!self.no_worker).then(|| self.jobs.worker_config(self.shutdown_grace.into())),
            claim_idle: self.jobs.claim_idle.into(),
            limits: QueueLimits {
                max_queued: self.max_queued_jobs,
                max_queued_per_client: self.max_queued_jobs_per_client,
            },
        };
        (self.into(), jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The defaults are taken from the library, so this holds by construction; it also
    /// checks that every flag reaches the configuration.
    #[test]
    fn command_line_defaults_are_the_library_defaults() {
        let (from_cli, from_cli_jobs) = Serve::try_parse_from(["serve"])
            .unwrap()
            .args
            .into_configs();
        let (lib, lib_jobs) = (ServeConfig::default(), JobsConfig::default());
        assert_eq!(from_cli.listen, lib.listen);
        assert_eq!(from_cli.redis_keepalive, lib.redis_keepalive);
        assert_eq!(from_cli.presence_ttl, lib.presence_ttl);
        assert_eq!(from_cli.heartbeat_interval, lib.heartbeat_interval);
        assert_eq!(from_cli.heartbeat_timeout, lib.heartbeat_timeout);
        assert_eq!(from_cli.max_frame_bytes, lib.max_frame_bytes);
        assert_eq!(from_cli.queue_capacity, lib.queue_capacity);
        assert_eq!(from_cli.queue_bytes, lib.queue_bytes);
        assert_eq!(from_cli.max_subscriptions, lib.max_subscriptions);
        assert_eq!(from_cli.shutdown_grace, lib.shutdown_grace);
        assert_eq!(from_cli.handshake_timeout, lib.handshake_timeout);
        assert_eq!(from_cli.request_timeout, lib.request_timeout);
        assert_eq!(from_cli.stall_after, lib.stall_after);
        assert_eq!(from_cli.stall_floor, lib.stall_floor);
        assert_eq!(from_cli_jobs.claim_idle, lib_jobs.claim_idle);
        assert_eq!(from_cli.history, lib.history);
        assert_eq!(from_cli.max_connections, lib.max_connections);
        assert_eq!(from_cli.max_connections_per_ip, lib.max_connections_per_ip);
        assert_eq!(from_cli.max_projects, lib.max_projects);
        assert_eq!(from_cli.metrics_listen, lib.metrics_listen);
        assert_eq!(from_cli.locale, lib.locale);
        assert_eq!(from_cli.coalesce_window, lib.coalesce_window);
        assert_eq!(from_cli_jobs.limits, lib_jobs.limits);
        let (cli_worker, lib_worker) = (from_cli_jobs.worker.unwrap(), lib_jobs.worker.unwrap());
        assert_eq!(cli_worker.mock_delay, lib_worker.mock_delay);
        assert_eq!(cli_worker.retry, lib_worker.retry);
        assert_eq!(cli_worker.concurrency, lib_worker.concurrency);
        assert_eq!(cli_worker.claim_idle, lib_worker.claim_idle);
        assert_eq!(cli_worker.publish_retry, lib_worker.publish_retry);
    }

    #[test]
    fn flags_reach_the_configuration() {
        let args = Serve::try_parse_from([
            "serve",
            "--heartbeat-interval",
            "7s",
            "--history-len",
            "12",
            "--retention",
            "2h",
            "--locale",
            "en",
            "--coalesce-window",
            "250ms",
            "--mock-delay",
            "5ms",
            "--no-worker",
            "--max-queued-jobs",
            "9",
            "--max-queued-jobs-per-client",
            "4",
            "--metrics-addr",
            "127.0.0.1:9100",
            "--max-projects-per-client",
            "7",
            "--new-projects-per-minute",
            "0",
        ])
        .unwrap()
        .args;
        let (c, jobs) = args.into_configs();
        assert_eq!(c.heartbeat_interval, std::time::Duration::from_secs(7));
        assert_eq!(c.history.max_len, 12);
        assert_eq!(c.history.retention, std::time::Duration::from_secs(7200));
        assert_eq!(c.locale, progress_hub::locale::Locale::En);
        assert_eq!(c.coalesce_window, std::time::Duration::from_millis(250));
        assert!(jobs.worker.is_none());
        assert_eq!(jobs.limits.max_queued, 9);
        assert_eq!(jobs.limits.max_queued_per_client, 4);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            c.history.project_quota,
            ProjectQuota {
                max_per_client: 7,
                per_minute: 0
            }
        );
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn webhook_flags_reach_the_configuration() {
        let c = ServeConfig::from(Serve::try_parse_from(["serve"]).unwrap().args);
        assert!(c.webhooks.is_none());
        let args = Serve::try_parse_from([
            "serve",
            "--webhook",
            "https://a.example/h",
            "--webhook",
            "http://10.0.0.2:9000/h",
            "--webhook-secret",
            SECRET,
            "--webhook-events",
            "job.completed,job.failed",
            "--webhook-retry-base",
            "50ms",
            "--webhook-lease",
            "3s",
            "--webhook-skip-watched",
            "--webhook-vacated-after",
            "5s",
        ])
        .unwrap()
        .args;
        let w = ServeConfig::from(args).webhooks.unwrap();
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!(w.events, [EventType::JobCompleted, EventType::JobFailed]);
        assert_eq!(w.retry_base, std::time::Duration::from_millis(50));
        assert_eq!(w.lease, std::time::Duration::from_secs(3));
        assert_eq!(w.retry_for, webhook::config::DEFAULT_RETRY_FOR);
        assert!(w.skip_watched);
        assert_eq!(w.vacated_after, std::time::Duration::from_secs(5));
    }

    #[test]
    fn hostile_webhook_flags_are_refused_naming_the_flag() {
        let cases: [&[&str]; 6] = [
            &["--webhook", "ftp://a.example/h", "--webhook-secret", SECRET],
            &["--webhook", "not a url", "--webhook-secret", SECRET],
            &["--webhook", "https://a.example/h"],
            &[
                "--webhook",
                "https://a.example/h",
                "--webhook-secret",
                "hunter2",
            ],
            &[
                "--webhook",
                "https://a.example/h",
                "--webhook-secret",
                "whsec_c2hvcnQ=",
            ],
            &["--webhook-events", "job.done"],
        ];
        for case in cases {
            let err =
                match Serve::try_parse_from(std::iter::once("serve").chain(case.iter().copied())) {
                    Ok(_) => panic!("{case:?} accepted"),
                    Err(err) => err.to_string(),
                };
            assert!(err.contains("--webhook"), "{case:?}: {err}");
            assert!(
                !err.contains("MfKQ9r8"),
                "the secret is never printed: {err}"
            );
        }
    }

    // The quota flags take a whole number (0: no bound); anything else is refused at
    // start with a message naming the flag, never taken as a default.
    #[test]
    fn hostile_quota_flags_are_refused() {
        for flag in ["--max-projects-per-client", "--new-projects-per-minute"] {
            for value in [
                "-1",
                "abc",
                "1.5",
                "",
                "99999999999999999999999",
                "1e9",
                " 5",
            ] {
                assert!(Serve::try_parse_from(["serve", flag, value]).is_err());
                let joined = format!("{flag}={value}");
                let err = match Serve::try_parse_from(["serve", joined.as_str()]) {
                    Ok(_) => panic!("{joined:?} accepted"),
                    Err(err) => err.to_string(),
                };
                assert!(err.contains(flag), "{joined:?}: {err}");
            }
        }
    }
}
