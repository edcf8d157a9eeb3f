//! The routes of generation jobs, as a router the hub merges into its own (behind its
//! limits, CORS, timeouts; with its access checks and errors): `generate`, `retry`,
//! `cancel`. Their OpenAPI paths are merged into the hub's document.

mod cancel;
mod checks;
mod generate;
mod retry;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use progress_hub::http::AppState;
use utoipa::OpenApi;

use crate::GenerateRequest;
use crate::queue::JobQueue;

/// Where the routes queue, retry and cancel jobs.
pub(crate) type Queue = Arc<dyn JobQueue>;

/// The job routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(generate::generate, cancel::cancel, retry::retry),
    components(schemas(GenerateRequest))
)]
pub struct JobsApi;

/// `generate`, `retry` and `cancel` of the projects' jobs on `queue`.
pub fn router(queue: Queue) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/projects/{project_id}/generate",
            post(generate::generate),
        )
        .route("/api/v1/projects/{project_id}/cancel", post(cancel::cancel))
        .route("/api/v1/projects/{project_id}/retry", post(retry::retry))
        .layer(axum::Extension(queue))
}
