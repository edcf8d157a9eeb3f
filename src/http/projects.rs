//! `GET /api/v1/projects/{project_id}`: the project's current state, the same facts a
//! late joiner's `snapshot` carries, with how many watch it now (over every hub). 404
//! for a project with no history.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::project_path::ProjectPath;
use super::{AppState, access};
use crate::wire::ProjectState;
use axum::http::HeaderMap;

/// The answer: the state (a snapshot's fields), its project, and its watchers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectStateBody {
    #[serde(flatten)]
    pub state: ProjectState,
    pub project_id: String,
    /// How many connections watch the project now, over every hub: a single-project
    /// WebSocket or SSE stream counts one, and so does each subscription of a
    /// multiplexed connection (a hub that died stops counting within the presence TTL).
    pub watchers: u64,
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "the project's state (the snapshot's fields plus project_id and watchers)", body = ProjectStateBody),
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
    let broker = &app.sessions.broker;
    let (replay, watchers) = tokio::join!(broker.replay(&project, None), broker.watchers(&project));
    match replay.and_then(|replay| Ok((replay, watchers?))) {
        Ok((replay, watchers)) => match replay.state {
            Some((state, _)) => Json(ProjectStateBody {
                state,
                project_id: project.as_str().to_string(),
                watchers,
            })
            .into_response(),
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
