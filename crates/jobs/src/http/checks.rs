//! What the job routes do before their own work, and answer alike: the access check of
//! the route's scope, the body, and the reads of the project's state and of the queue,
//! whose failures are a 503 logged with what was being read.

use std::fmt::Display;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use progress_hub::http::error::ApiError;
use progress_hub::http::{AppState, access};
use progress_hub::wire::{ProjectId, ProjectState};

/// What a route asks of the caller's token.
pub(super) enum Scope {
    /// Start jobs (`generate`, `retry`).
    Publish,
    /// Stop them (`cancel`): the publish or the control scope.
    Control,
}

/// The access check of `scope` for `project`, then the body, read whole (413 and the
/// like when it cannot be) and taken by `parse`: what it makes, or the refusal.
pub(super) fn admit<T>(
    app: &AppState,
    headers: &HeaderMap,
    project: &ProjectId,
    scope: Scope,
    body: Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&Bytes) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match scope {
        Scope::Publish => access::publish(app, headers, Some(project))?,
        Scope::Control => access::control(app, headers, project)?,
    }
    let body =
        body.map_err(|rejection| ApiError::unreadable_body(&rejection, app.max_frame_bytes))?;
    parse(&body)
}

/// The project's state (`None`: the hub knows no run of it).
pub(super) async fn project_state(
    app: &AppState,
    project: &ProjectId,
) -> Result<Option<ProjectState>, Response> {
    let replay = app
        .broker
        .replay(project, None)
        .await
        .map_err(|err| unavailable(project, "reading project state failed", &err))?;
    Ok(replay.state.map(|(state, _)| state))
}

/// The 503 of a read or write of the queue or the broker that failed, logged as `what`.
pub(super) fn unavailable(project: &ProjectId, what: &str, err: &dyn Display) -> Response {
    tracing::error!(project_id = %project, error = %err, "{what}");
    ApiError::unavailable().into_response()
}
