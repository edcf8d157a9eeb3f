//! The hub's settings, with the contract's defaults: the one source of every default
//! (the command line, `src/cli/serve.rs`, takes its defaults from here); tests build the
//! settings directly. The settings of generation jobs are the jobs crate's
//! (`progress_hub_jobs::JobsConfig`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::broker::HistoryConfig;
use crate::locale::Locale;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8000));
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Frames a session may have queued before the slow-consumer policy applies.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Bytes of frames a session may have queued before the slow-consumer policy applies
/// (4 MiB, a project's default history: a client closed as this far behind can still
/// resume from it).
pub const DEFAULT_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Most project subscriptions one multiplexed connection holds.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1_000;
/// How often the Redis subscriber connection proves it is alive.
pub const DEFAULT_REDIS_KEEPALIVE: Duration = Duration::from_secs(5);
/// How long a hub's count of a project's watchers counts in Redis unless the hub
/// refreshes it (every third of it): a hub that dies stops counting within it.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);
/// At most one `progress_update` per project per this window on the publish path.
pub const DEFAULT_COALESCE_WINDOW: Duration = Duration::from_millis(500);
/// Connection limits: generous by default (the open-file limit is usually lower), and
/// per address high enough for many tabs behind one NAT.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
pub const DEFAULT_MAX_PROJECTS: usize = 100_000;
/// A connection (new, or kept alive between requests) must send a complete request
/// head within this; slow or idle ones are closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a plain HTTP request (body + answer) may take; 408 after.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A run under way whose project published nothing for this long is reported stalled.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(120);
pub const DEFAULT_STALL_FLOOR: Duration = Duration::from_secs(10);
/// How long shutdown waits for sessions to close before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// `None`: self-contained, with the in-process broker.
    pub redis_url: Option<String>,
    pub redis_keepalive: Duration,
    /// How long this hub's share of a project's watchers counts in Redis after each
    /// refresh (see `DEFAULT_PRESENCE_TTL`).
    pub presence_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_frame_bytes: usize,
    pub queue_capacity: usize,
    /// Bytes of frames a session may have queued (see `DEFAULT_QUEUE_BYTES`).
    pub queue_bytes: usize,
    /// Most project subscriptions one multiplexed connection holds.
    pub max_subscriptions: usize,
    pub shutdown_grace: Duration,
    /// Time for a request head to arrive (slowloris, idle keep-alive).
    pub handshake_timeout: Duration,
    /// Time for a plain request's body and answer; 408 after.
    pub request_timeout: Duration,
    /// A run under way whose project published nothing for this long is stalled: `GET
    /// /api/v1/projects/{id}` says so, live watchers get a `stalled` frame
    /// (`hub/stall.rs`), webhooks `job.stalled` (`broker/redis/stall.rs`).
    pub stall_after: Duration,
    /// The least stall bound measured for a stage: once a stage ran a few times (seen by
    /// this hub), its bound is a multiple of its longest recent run, never below this
    /// (`hub/stage_runs.rs`); `stall_after` is the bound before that.
    pub stall_floor: Duration,
    /// Most connections (WebSocket + SSE) this process holds.
    pub max_connections: usize,
    /// Most connections from one client address.
    pub max_connections_per_ip: usize,
    /// Most projects this process watches at once.
    pub max_projects: usize,
    /// Turns access control on: HS256 JWTs signed with this secret.
    pub auth_secret: Option<String>,
    /// Browser origins allowed to connect (empty: all).
    pub allowed_origins: Vec<String>,
    /// Origins whose pages may call the hub's HTTP routes (CORS); none by default.
    pub cors_origins: Vec<crate::http::cors::CorsOrigin>,
    /// Serve `/metrics` on this address only (not on `listen`); `None`: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    pub history: HistoryConfig,
    /// Language of the text the hub writes (stage labels, catalog solutions).
    pub locale: Locale,
    /// Window in which `progress_update`s of one project are coalesced on the hub's
    /// publish path (at most one per window; the newest wins, none is lost).
    pub coalesce_window: Duration,
    /// The backend's webhook endpoints (`--webhook`); `None`: no webhooks.
    pub webhooks: Option<crate::webhook::WebhookConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            redis_url: None,
            redis_keepalive: DEFAULT_REDIS_KEEPALIVE,
            presence_ttl: DEFAULT_PRESENCE_TTL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stall_after: DEFAULT_STALL_AFTER,
            stall_floor: DEFAULT_STALL_FLOOR,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_projects: DEFAULT_MAX_PROJECTS,
            auth_secret: None,
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            metrics_listen: None,
            history: HistoryConfig::default(),
            locale: Locale::default(),
            coalesce_window: DEFAULT_COALESCE_WINDOW,
            webhooks: None,
        }
    }
}
