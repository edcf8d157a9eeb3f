//! What a program adds to the hub it starts: routes (merged into the hub's router, behind
//! its limits, CORS and timeouts), their API documentation, background tasks, and the
//! hooks the hub calls. The hub library knows no job: the jobs crate
//! (`progress_hub_jobs::Jobs`) is one extension, which the `progress-hub` binary gives
//! `server::start_with`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::http::AppState;
use crate::hub::stall::WorkerProbe;
use crate::locale::Locale;

/// An extension that could not start (the hub does not start either).
pub type ExtensionError = Box<dyn std::error::Error + Send + Sync>;

/// What the hub hands an extension as it starts.
pub struct Context<'a> {
    /// The hub's Redis, `None` on the in-process broker.
    pub redis_url: Option<&'a str>,
    pub broker: Arc<dyn Broker>,
    /// The language of the text the hub writes.
    pub locale: Locale,
    /// The hub's coalescing window on its publish path.
    pub coalesce_window: Duration,
    /// Cancelled when the hub shuts down.
    pub shutdown: CancellationToken,
    /// Tasks the hub waits for (within its grace) at shutdown.
    pub tracker: &'a TaskTracker,
}

/// What a started extension adds to the hub.
#[derive(Default)]
pub struct Parts {
    /// Routes merged into the hub's router (their paths must not be the hub's).
    pub routes: Router<AppState>,
    /// Merged into the hub's OpenAPI document (`/api/v1/openapi.json`).
    pub api_doc: Option<utoipa::openapi::OpenApi>,
    /// Tells the stall checker whether a project's worker is lost.
    pub worker_probe: Option<Arc<dyn WorkerProbe>>,
}

/// A part of the program the hub starts with it (see the module).
pub trait Extension: Send {
    /// Starts the extension's tasks (on `hub.tracker`) and returns what it adds.
    fn start(self: Box<Self>, hub: Context<'_>) -> Result<Parts, ExtensionError>;
}
