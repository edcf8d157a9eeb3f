//! The broker: where events are published, kept, and received. One trait, two
//! implementations.
//!
//! - [`redis::RedisBroker`]: any number of hubs and workers cooperate through Redis,
//!   one node or a Redis Cluster ([`redis::target::RedisTarget`]). Publishing is one
//!   atomic script (`redis/publish.lua`); the process holds a single subscriber
//!   connection for all its projects (`redis/subscriber/`). Every key, channel and
//!   script name is in `redis/layout.rs`.
//! - [`memory::MemoryBroker`]: the same behaviour inside one process, so `serve` works
//!   with nothing else installed.
//!
//! Either way, a broker's subscriber consumes the [`SubscriptionChange`]s it is sent and
//! hands every payload published on a watched project's channel to the [`Deliveries`] it
//! is given (`deliveries.rs`: the hub implements them; the broker knows no hub code).

mod budget;
mod deliveries;
mod history;
pub mod memory;
pub mod outbox;
mod prepared;
pub mod quota;
pub mod redis;
pub mod tag_page;

pub use deliveries::{Deliveries, SubscriptionChange, Watched};
pub use history::{HistoryConfig, InvalidHistory};
pub use prepared::{Fence, FrameTemplate, PreparedEvent, StateChange, Unit};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::wire::{EventId, Frame, ProjectId, ProjectState, Tag};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A generation job's event refused: its claim was superseded by a newer one (the
    /// job was taken over), or the job has already completed. Never retried.
    #[error("stale job event refused: {0}")]
    Stale(String),
    #[error(transparent)]
    InvalidHistory(#[from] InvalidHistory),
    #[error("the presence TTL must be at least {MIN_PRESENCE_TTL:?}, not {0:?}")]
    InvalidPresenceTtl(Duration),
}

/// The shortest presence TTL: a hub refreshes its entries every third of it.
pub const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);

impl From<::redis::RedisError> for BrokerError {
    fn from(err: ::redis::RedisError) -> Self {
        match err.code() {
            // The publish script's refusal (see publish.lua), not a broker failure.
            Some("STALE") => Self::Stale(err.detail().unwrap_or_default().to_string()),
            _ => Self::Unavailable(err.to_string()),
        }
    }
}

/// What a resuming or late-joining session reads, in one atomic look.
#[derive(Debug, Default)]
pub struct Replay {
    /// The project's state and the id of its newest event; `None` when it has no
    /// history (never published, or lost).
    pub state: Option<(ProjectState, EventId)>,
    /// The retained events after the requested id, oldest first, when the history
    /// holds that very id (empty otherwise: lost, made up, or trimmed). They may be of
    /// several epochs: an epoch begun on a Redis restart goes on with the sequence
    /// numbers (`redis/publish.lua`), so they follow the requested id one by one.
    pub after: Vec<Frame>,
}

/// An entry of a tag's index: a project, and when (ms since the epoch) its run was last
/// given the tag. Indexes are read newest first; ties by project id, descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub project: ProjectId,
    pub at_ms: u64,
}

impl TagEntry {
    /// The entry as a page's cursor: `<ms>.<project>`.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.at_ms, self.project)
    }

    /// A cursor back into its entry; `None` when it is not one.
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let (at, project) = cursor.split_once('.')?;
        Some(Self {
            at_ms: at.parse().ok()?,
            project: ProjectId::parse(project).ok()?,
        })
    }

    /// Whether this entry comes after `other` in an index read newest first.
    pub fn comes_after(&self, other: &TagEntry) -> bool {
        (self.at_ms, self.project.as_str()) < (other.at_ms, other.project.as_str())
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The hub's publish path: appends the event to the project's history, updates its
    /// state and publishes the frame with its id, atomically. Returns the id.
    async fn publish(
        &self,
        project: &ProjectId,
        event: &PreparedEvent,
    ) -> Result<EventId, BrokerError>;

    /// Publishes `payload` on the project's channel exactly as given: the legacy path
    /// (`PUBLISH progress:{id} <json>`), with no id and no history.
    async fn publish_raw(&self, project: &ProjectId, payload: Bytes) -> Result<(), BrokerError>;

    /// The state, and the history after `after` (see [`Replay`]).
    async fn replay(
        &self,
        project: &ProjectId,
        after: Option<&EventId>,
    ) -> Result<Replay, BrokerError>;

    /// The tag's index (see [`TagEntry`]): entries given at or after `since_ms`, newest
    /// first, after `after`, at most `count`. An entry may name a project whose state no
    /// longer carries the tag (or is gone): the reader checks the state, the truth, and
    /// tells [`Broker::untag`].
    async fn tagged(
        &self,
        tag: &Tag,
        since_ms: u64,
        after: Option<&TagEntry>,
        count: usize,
    ) -> Result<Vec<TagEntry>, BrokerError>;

    /// Removes `projects` from the tag's index: their state no longer carries the tag.
    async fn untag(&self, tag: &Tag, projects: &[ProjectId]) -> Result<(), BrokerError>;

    /// Whether the broker can serve now (`/readyz`): Redis reachable and the
    /// subscriber connected.
    async fn is_ready(&self) -> bool;

    /// Why the broker is not ready, when it knows without asking Redis (`/readyz`'s
    /// `reason`): e.g. `pubsub_probe_missed`, `subscriber_down`.
    fn unready_reason(&self) -> Option<&'static str> {
        None
    }

    /// May `client` (see `http::access::client_key`) publish to `project` now? To a
    /// project with history, always; its first event creates it, which counts against
    /// the client's [`quota::ProjectQuota`] (the in-process broker also charges the
    /// project's memory to it). Only the HTTP API asks (publish, generate): the hub's
    /// own publishers (the library, workers) are not limited.
    async fn admit(
        &self,
        project: &ProjectId,
        client: &str,
    ) -> Result<quota::Admission, BrokerError>;

    /// How many connections watch the project now, across every hub of the deployment:
    /// a single-project session (WebSocket or SSE) counts one, and so does each
    /// subscription of a multiplexed connection. On Redis each hub's share counts until
    /// its presence TTL runs out unless the hub refreshes it, so a hub that died stops
    /// counting within that TTL; in process, the sessions of this process.
    async fn watchers(&self, project: &ProjectId) -> Result<u64, BrokerError>;

    /// Records that the project's `complete` frame with id `complete` was written to a
    /// watcher's transport (live, or in a resumed session's replay): a user saw it.
    /// Kept for the retention (`HistoryConfig::retention`). Called by sessions.
    async fn record_complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<(), BrokerError>;

    /// Whether the project's `complete` with id `complete` (the id the publish path
    /// gave it; the state's `last_event_id` right after it) was written to at least one
    /// watcher, on any hub. False when nobody watched, or once the retention passed.
    async fn complete_seen(
        &self,
        project: &ProjectId,
        complete: &EventId,
    ) -> Result<bool, BrokerError>;

    /// A short name for logs: `memory` or `redis`.
    fn kind(&self) -> &'static str;
}

/// Starts the broker named by `redis_url` (in-process without one) and its subscriber
/// task, which lives until `shutdown`, handing what arrives to `deliveries`; on Redis,
/// also the process's presence (its watchers' entries count for `presence_ttl` after
/// each refresh). In process, every run's end also goes into `outbox` when given (with
/// Redis, `publish.lua` writes Redis's own).
#[allow(
    clippy::too_many_arguments,
    reason = "the process's parts and settings, each named at the one call in `server`"
)]
pub fn start(
    redis_url: Option<&str>,
    outbox: Option<Arc<outbox::MemoryOutbox>>,
    redis_keepalive: Duration,
    presence_ttl: Duration,
    history: HistoryConfig,
    deliveries: Arc<dyn Deliveries>,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<dyn Broker>, BrokerError> {
    history.check()?;
    if presence_ttl < MIN_PRESENCE_TTL {
        return Err(BrokerError::InvalidPresenceTtl(presence_ttl));
    }
    Ok(match redis_url {
        Some(url) => {
            let broker = redis::RedisBroker::connect(url, history)?;
            broker.spawn_subscriber(
                redis_keepalive,
                Arc::clone(&deliveries),
                changes,
                shutdown.clone(),
                tracker,
            )?;
            broker.spawn_presence(presence_ttl, deliveries, shutdown.clone(), tracker)?;
            // The hubs' history policy, for every publisher on this Redis to follow.
            broker.spawn_announcer(shutdown, tracker);
            Arc::new(broker)
        }
        None => Arc::new(
            memory::MemoryBroker::start(history, deliveries, changes, shutdown, tracker)
                .with_outbox(outbox),
        ),
    })
}
