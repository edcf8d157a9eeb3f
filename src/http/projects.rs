//! `GET /api/v1/projects/{project_id}`: the project's current state, the same facts a
//! late joiner's `snapshot` carries. 404 for a project with no history.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::project_path::ProjectPath;
use super::{AppState, access};
use crate::wire::ProjectState;
use axum::http::HeaderMap;

#[utoipa::path(get, path = "/api/v1/projects/{project_id}", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "the project's state (the snapshot's fields plus project_id)", body = ProjectState),
        (status = 400, description = "invalid project id", body = ErrorBody),
        (status = 404, description = "no history for this project", body = ErrorBody),
        (status = 503, description = "broker unavailable", body = ErrorBody)))]
pub async fn state(
    State(app): State<AppState>,
    ProjectPath(project): ProjectPath,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = access::read(&app, &headers, &project) {
        return denied.into_response();
    }
    match app.sessions.broker.replay(&project, None).await {
        Ok(replay) => match replay.state {
            Some((state, _)) => Json(state.to_json(&project)).into_response(),
            None => ApiError::new(
                StatusCode::NOT_FOUND,
                "PROJECT_NOT_FOUND",
                "no events have been published for this project (or they have expired)",
            )
            .into_response(),
        },
        Err(err) => {
            tracing::error!(project_id = %project, error = %err, "reading project state failed");
            ApiError::unavailable().into_response()
        }
    }
}
