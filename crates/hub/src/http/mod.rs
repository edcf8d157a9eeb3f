//! The HTTP face of the hub: routes, shared state, JSON errors. What a program adds
//! (`extension.rs`: the jobs' generate, retry and cancel) is merged into the same router,
//! and uses the same access checks (`access`, `admission`), errors and path extractor.

pub mod access;
pub mod admission;
pub mod cors;
mod docs;
pub mod error;
mod health;
pub mod listener;
mod multiplexed;
mod new_project;
mod page;
mod progress;
mod project_list;
pub mod project_path;
mod projects;
mod publish;
mod webhooks;

pub use docs::ApiDoc;
pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::publish::Publisher;
use crate::session::Sessions;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<dyn Broker>,
    pub sessions: Sessions,
    pub publisher: Publisher,
    /// Tracks sessions, which axum's graceful shutdown does not wait for.
    pub tracker: TaskTracker,
    pub metrics: PrometheusHandle,
    /// Largest client frame accepted (larger closes the connection with 1009), and
    /// largest event body the publish API accepts (larger gets 413).
    pub max_frame_bytes: usize,
    pub limits: Arc<crate::limits::ConnectionLimits>,
    /// Access control; `None` when no `--auth-secret` is set (local use).
    pub auth: access::SharedAuth,
    /// Browser origins allowed to connect; empty allows all.
    pub allowed_origins: Arc<Vec<String>>,
    /// Origins whose pages may call the HTTP routes cross-origin (`--cors-origins`).
    pub cors_origins: Arc<Vec<cors::CorsOrigin>>,
    /// Longest a plain request (body read + answer) may take; 408 after.
    pub request_timeout: std::time::Duration,
    /// A run under way silent this long is reported `stalled` (`projects.rs`).
    pub stall_after: std::time::Duration,
    /// The least bound measured for a stage (`hub::stage_runs`).
    pub stall_floor: std::time::Duration,
    /// Tells which runs lost their worker (an extension's: the jobs'); `None`: none can.
    pub worker_probe: Option<Arc<dyn crate::hub::stall::WorkerProbe>>,
    /// The recent webhook deliveries, when the hub has webhooks.
    pub webhooks: Option<Arc<crate::webhook::Deliveries>>,
}

/// Where `/metrics` is served: on the main listener, or only on one of its own
/// (`--metrics-addr`, [`metrics_router`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    Main,
    Elsewhere,
}

/// The router of the metrics listener (whose connections count against `limits`):
/// `GET /metrics` and nothing else.
pub fn metrics_router(state: AppState, limits: Arc<crate::limits::ConnectionLimits>) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            limits,
            listener::refuse_over_limit,
        ))
        .layer(axum::middleware::from_fn(page::nosniff))
        .with_state(state)
}

/// What the program's extensions add to the router (see `extension.rs`).
#[derive(Default)]
pub struct Extra {
    /// Routes of their own, behind the hub's layers.
    pub routes: Router<AppState>,
    /// Merged into the OpenAPI document.
    pub api_docs: Vec<utoipa::openapi::OpenApi>,
}

pub fn router(state: AppState, metrics: MetricsRoute, extra: Extra) -> Router {
    let body_limit = state.max_frame_bytes;
    let request_timeout = state.request_timeout;
    let limits = Arc::clone(&state.limits);
    let cors = cors::layer(&state.cors_origins);
    let mut api_doc = <ApiDoc as utoipa::OpenApi>::openapi();
    for doc in extra.api_docs {
        api_doc.merge(doc);
    }
    let app = Router::new()
        .route(
            "/api/v1/projects",
            post(new_project::create).get(project_list::list),
        )
        .route("/api/v1/projects/{project_id}", get(projects::state))
        .route("/api/v1/progress", get(multiplexed::progress))
        .route("/api/v1/progress/events", get(multiplexed::events))
        .route("/api/v1/webhooks/deliveries", get(webhooks::deliveries))
        .route(
            "/api/v1/projects/{project_id}/progress",
            get(progress::progress),
        )
        .route(
            "/api/v1/projects/{project_id}/events",
            get(progress::events).post(publish::publish),
        )
        .route("/", get(page::index))
        .route("/projects/{project_id}", get(page::index))
        .route("/dashboard", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/progress-hub-client.js", get(page::client_js))
        .route("/assets/progress-hub-projects.js", get(page::projects_js))
        .route("/assets/dashboard.js", get(page::dashboard_js))
        .route("/assets/render.js", get(page::render_js))
        .route("/assets/style.css", get(page::style_css))
        .route("/api/v1/schema/events.json", get(docs::events_json))
        .route("/api/v1/asyncapi.json", get(docs::asyncapi_json))
        .route("/favicon.ico", get(page::favicon))
        .merge(
            Router::from(
                utoipa_swagger_ui::SwaggerUi::new("/docs").url("/api/v1/openapi.json", api_doc),
            )
            .layer(axum::middleware::from_fn(page::docs_headers)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(extra.routes);
    let app = match metrics {
        MetricsRoute::Main => app.route("/metrics", get(health::metrics)),
        MetricsRoute::Elsewhere => app,
    };
    app.fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(access::writes_declare_json))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            listener::refuse_over_limit,
        ))
        .layer(axum::middleware::from_fn(page::nosniff))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            listener::request_timeout,
        ))
        // Outermost: a preflight is answered before any route or check sees it.
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.cors_origins),
            cors::finish,
        ))
        .with_state(state)
}
