//! Starting and stopping a hub: bind, wire the parts together, serve, shut down.
//!
//! Shutdown is explicit: one `CancellationToken` tells the HTTP server to stop accepting
//! and every session to send its client a Close frame (1012, service restart); a `TaskTracker` knows
//! when the last session is gone (upgraded sockets are invisible to axum's graceful
//! shutdown), and a deadline bounds the wait.
//!
//! `start_with` starts the hub with the program's extensions (`extension.rs`: the
//! jobs' routes and workers in the `progress-hub` binary); `start`, with none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, EmptySecret};
use crate::broker::outbox::{MemoryOutbox, Outbox};
use crate::broker::redis::outbox::RedisOutbox;
use crate::broker::redis::target::RedisTarget;
use crate::broker::{self, Broker, BrokerError};
use crate::config::ServeConfig;
use crate::extension::{self, Extension, ExtensionError};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::limits::{self, ConnectionLimits};
use crate::metrics;
use crate::publish::Publisher;
use crate::session::{Heartbeat, Sessions};
use crate::webhook::{self, WebhookConfigError};

/// Connections the metrics listener holds at once (scrapers are few).
const METRICS_MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] EmptySecret),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Extension(ExtensionError),
    #[error(transparent)]
    Webhook(#[from] WebhookConfigError),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A hub that is up and serving.
pub struct RunningServer {
    addr: SocketAddr,
    /// The metrics listener's address, when `/metrics` has one of its own.
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    broker: std::sync::Arc<dyn Broker>,
    publisher: Publisher,
    hub: Arc<Hub>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when it has a listener of its own (`--metrics-addr`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn broker(&self) -> &std::sync::Arc<dyn Broker> {
        &self.broker
    }

    /// The hub's own publisher (the publish path the HTTP API uses).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// How many projects this hub watches now (its topics): what a test awaits to know
    /// that a session's leave reached the hub.
    pub fn watched_projects(&self) -> usize {
        self.hub.watched_count()
    }

    /// Starts a graceful shutdown; `wait` returns once it is done.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Http(std::io::Error::other(join.to_string()))),
        }
    }
}

/// The origins `--allowed-origins` lets in: with a list, the CORS origins join it (a page
/// the hub answers cross-origin must not then be refused); without one, any.
fn origins_allowed(config: &ServeConfig) -> Vec<String> {
    let mut allowed = config.allowed_origins.clone();
    if !allowed.is_empty() {
        allowed.extend(config.cors_origins.iter().map(ToString::to_string));
    }
    allowed
}

/// The stall bounds now: per stage from the runs `hub` watched, else `configured`.
fn stall_bounds(hub: &Arc<Hub>, configured: Duration, floor: Duration) -> webhook::StallBounds {
    let hub = Arc::clone(hub);
    Arc::new(move || hub.stage_runs.bounds(configured, floor))
}

/// Starts a hub with no extension (no generation jobs).
pub async fn start(config: ServeConfig) -> Result<RunningServer, ServeError> {
    start_with(config, Vec::new()).await
}

/// Starts a hub with `extensions`: their routes are merged into the hub's, their tasks
/// run until its shutdown, and the first worker probe among them tells stalls apart.
pub async fn start_with(
    config: ServeConfig,
    extensions: Vec<Box<dyn Extension>>,
) -> Result<RunningServer, ServeError> {
    // Before anything listens: a hub that would run without the access control it was
    // asked for must not start.
    let auth = match config.auth_secret.as_deref() {
        Some(secret) => Some(Arc::new(Auth::new(secret)?)),
        None => None,
    };
    if let Some(webhooks) = &config.webhooks {
        webhooks.check(config.listen)?;
        // The outbox is on one node or Sentinel's primary; a cluster's is not built.
        if let Some(RedisTarget::Cluster(_)) = config
            .redis_url
            .as_deref()
            .map(RedisTarget::parse)
            .transpose()?
        {
            return Err(WebhookConfigError::Unsupported("not on a Redis Cluster yet").into());
        }
    }
    let listener = http::listener::bind(config.listen).map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => {
            Some(http::listener::bind(at).map_err(|source| ServeError::Bind { addr: at, source })?)
        }
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr().map_err(ServeError::Http)?),
        None => None,
    };
    let metrics = metrics::install();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    if let Some(webhooks) = &config.webhooks {
        // Bound to port 0, the hub's port is known only now.
        webhooks.check(addr)?;
    }
    let (hub, changes) = Hub::new(config.max_projects);
    // In process, the broker writes the webhook outbox as it publishes a `complete`;
    // with Redis, publish.lua writes Redis's.
    let memory_outbox = match (&config.webhooks, &config.redis_url) {
        (Some(_), None) => Some(Arc::new(MemoryOutbox::default())),
        _ => None,
    };
    let broker = broker::start(
        config.redis_url.as_deref(),
        memory_outbox.clone(),
        config.redis_keepalive,
        config.presence_ttl,
        config.history,
        hub.clone(),
        changes,
        shutdown.clone(),
        &tracker,
    )?;
    let mut routes = axum::Router::new();
    let mut api_docs = Vec::new();
    let mut worker_probe = None;
    for extension in extensions {
        let parts = extension
            .start(extension::Context {
                redis_url: config.redis_url.as_deref(),
                broker: broker.clone(),
                locale: config.locale,
                coalesce_window: config.coalesce_window,
                shutdown: shutdown.clone(),
                tracker: &tracker,
            })
            .map_err(ServeError::Extension)?;
        routes = routes.merge(parts.routes);
        api_docs.extend(parts.api_doc);
        worker_probe = worker_probe.or(parts.worker_probe);
    }
    tracker.spawn(crate::hub::stall::watch(
        hub.clone(),
        broker.clone(),
        (config.stall_after, config.stall_floor),
        worker_probe.clone(),
        shutdown.clone(),
    ));
    let publisher = Publisher::new(broker.clone(), config.locale, config.coalesce_window);
    let webhooks = match &config.webhooks {
        Some(webhooks) => {
            let outbox: Arc<dyn Outbox> = match (&config.redis_url, memory_outbox) {
                (Some(url), _) => Arc::new(RedisOutbox::open(url, webhooks.lease)?),
                (None, Some(memory)) => memory,
                (None, None) => Arc::new(MemoryOutbox::default()),
            };
            Some(webhook::spawn(
                webhooks.clone(),
                outbox,
                broker.clone(),
                stall_bounds(&hub, config.stall_after, config.stall_floor),
                worker_probe.clone(),
                shutdown.clone(),
                &tracker,
            ))
        }
        None => None,
    };
    let heartbeat = Heartbeat::new(
        config.heartbeat_interval,
        config.heartbeat_timeout,
        shutdown.clone(),
    );
    tracker.spawn(Arc::clone(&heartbeat).run());
    let open_files = limits::open_file_limit();
    let caps = limits::fit_to_open_files(
        config.max_connections,
        config.max_connections_per_ip,
        open_files,
    );
    // Lowered only under a limit (`None` is unlimited); the number, not `Some(n)`.
    if caps.lowered
        && let Some(open_files) = open_files
    {
        tracing::info!(
            max_connections = caps.max_total,
            max_connections_per_ip = caps.max_per_ip,
            open_file_limit = open_files,
            "connection caps lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
    }
    let limits = ConnectionLimits::new(caps.max_total, caps.max_per_ip);
    let watched = Arc::clone(&hub);
    let state = AppState {
        broker: broker.clone(),
        publisher: publisher.clone(),
        sessions: Sessions {
            hub,
            broker: broker.clone(),
            heartbeat,
            queue_capacity: config.queue_capacity,
            queue_bytes: config.queue_bytes,
            max_subscriptions: config.max_subscriptions,
            tag_watchers: Arc::default(),
        },
        tracker: tracker.clone(),
        metrics,
        max_frame_bytes: config.max_frame_bytes,
        limits: Arc::clone(&limits),
        auth,
        allowed_origins: Arc::new(origins_allowed(&config)),
        cors_origins: Arc::new(config.cors_origins.clone()),
        request_timeout: config.request_timeout,
        stall_after: config.stall_after,
        stall_floor: config.stall_floor,
        worker_probe,
        webhooks,
    };
    // The metrics listener has limits of its own: scrapes neither take nor are
    // refused by the public connections' slots.
    let metrics_limits = ConnectionLimits::new(METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS);
    let extra = http::Extra { routes, api_docs };
    let (app, metrics_app) = match &metrics_listener {
        Some(_) => (
            http::router(state.clone(), http::MetricsRoute::Elsewhere, extra),
            Some(http::metrics_router(state, Arc::clone(&metrics_limits))),
        ),
        None => (http::router(state, http::MetricsRoute::Main, extra), None),
    };
    let grace = config.shutdown_grace;
    let stop = shutdown.clone();
    let handshake_timeout = config.handshake_timeout;
    let held = publisher.clone();
    let metrics_task = match (metrics_listener, metrics_app) {
        (Some(listener), Some(app)) => Some(tokio::spawn(http::listener::serve(
            listener,
            app,
            metrics_limits,
            handshake_timeout,
            stop.clone(),
        ))),
        _ => None,
    };
    let task = tokio::spawn(async move {
        let connections =
            http::listener::serve(listener, app, limits, handshake_timeout, stop).await;
        let metrics_connections = match metrics_task {
            Some(task) => task.await.ok(),
            None => None,
        };
        tracker.close();
        let drained = async {
            let metrics = async {
                if let Some(metrics) = &metrics_connections {
                    metrics.wait().await;
                }
            };
            tokio::join!(tracker.wait(), connections.wait(), held.drain(), metrics);
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                sessions = tracker.len(),
                requests = connections.len(),
                "shutdown grace period over; dropping what remains"
            );
        }
        Ok(())
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        broker,
        publisher,
        hub: watched,
        task,
    })
}
