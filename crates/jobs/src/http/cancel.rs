//! `POST /api/v1/projects/{project_id}/cancel`: stops the project's job.
//!
//! 202 when the hub's queue holds a job of the project (queued or running): the job is
//! marked, its worker stops before its next provider call and ends it with a `complete`
//! of status `CANCELLED` (a queued job ends so when a worker takes it, before any call).
//! A run the hub does not carry (a backend publishing its own job, e.g. Celery) is ended
//! by the hub itself with that `complete`, published under the run's own fence: every
//! later event of that job is refused as stale, which is how its task learns it (the
//! Python SDK's `ProgressTask` stops there, and does not start the job's next tasks). 409 when the project's last run already
//! ended, 404 when the hub knows no run of it. No body (or `{}`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use progress_hub::broker::{BrokerError, Fence};
use progress_hub::http::AppState;
use progress_hub::http::error::{ApiError, ErrorBody};
use progress_hub::http::project_path::ProjectPath;
use progress_hub::publish::PublishError;
use progress_hub::wire::ProjectId;
use progress_hub::wire::event::CompleteStatus;

use super::Queue;
use super::checks::{Scope, admit, project_state, unavailable};

/// What became of a cancel the queue had no job for.
enum Unqueued {
    /// The project's run ended already, with this status.
    Ended(String),
    /// A run under way that no hub worker carries: the hub ended it.
    EndedByHub,
    /// No run of the project is known.
    Unknown,
}

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/cancel", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content = Option<Object>, description = "none, or {}"),
    responses(
        (status = 202, description = "cancel accepted: {\"project_id\": ..., \"job_id\": ...}; the run ends soon with a `complete` of status CANCELLED (job_id is null for a run the hub's workers do not carry)"),
        (status = 400, description = "invalid project id, or a body other than none or {}", body = ErrorBody),
        (status = 403, description = "the token has neither the publish nor the control scope for this project", body = ErrorBody),
        (status = 404, description = "NO_JOB: the hub knows no run of this project", body = ErrorBody),
        (status = 409, description = "JOB_ENDED: the project's run already ended (its status in the message)", body = ErrorBody),
        (status = 503, description = "job queue or broker unavailable", body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    Extension(jobs): Extension<Queue>,
    ProjectPath(project): ProjectPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(refused) = admit(&app, &headers, &project, Scope::Control, body, no_body) {
        return refused.into_response();
    }
    let job_id = match jobs.cancel(&project).await {
        Ok(job_id) => job_id,
        Err(err) => return unavailable(&project, "cannot cancel the job", &err),
    };
    if let Some(job_id) = job_id {
        // The job's worker settles it in the queue just after its `complete`: a job
        // whose `complete` is in has ended, whether or not it is settled yet (the mark
        // is harmless on it).
        match ended_as(&app, &project, &job_id).await {
            Ok(Some(status)) => return job_ended(&status),
            Ok(None) => {}
            Err(response) => return response,
        }
        tracing::info!(project_id = %project, job_id = %job_id, "job cancel asked");
        return accepted(&project, Some(&job_id));
    }
    match unqueued(&app, &project).await {
        Ok(Unqueued::EndedByHub) => accepted(&project, None),
        Ok(Unqueued::Ended(status)) => job_ended(&status),
        Ok(Unqueued::Unknown) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NO_JOB",
            "the hub knows no job of this project",
        )
        .into_response(),
        Err(response) => response,
    }
}

fn job_ended(status: &str) -> Response {
    ApiError::new(
        StatusCode::CONFLICT,
        "JOB_ENDED",
        format!("the project's job already ended ({status})"),
    )
    .into_response()
}

/// The status `job` ended with, if the project's state holds its `complete`.
async fn ended_as(
    app: &AppState,
    project: &ProjectId,
    job: &str,
) -> Result<Option<String>, Response> {
    Ok(project_state(app, project).await?.and_then(|state| {
        state
            .status
            .filter(|status| is_terminal(status) && state.completed_job.as_deref() == Some(job))
    }))
}

/// No body, or an empty JSON object; 400 otherwise.
fn no_body(body: &Bytes) -> Result<(), ApiError> {
    if is_no_body(body) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "cancel takes no body (or {})",
    )
    .with_field("body"))
}

/// No body, or an empty JSON object.
fn is_no_body(body: &[u8]) -> bool {
    let body = body.trim_ascii();
    body.is_empty()
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|object| object.is_empty())
}

fn accepted(project: &ProjectId, job_id: Option<&str>) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"project_id": project.as_str(), "job_id": job_id})),
    )
        .into_response()
}

/// The project has no job in the hub's queue: its state says whether a run ended, is
/// under way elsewhere (the hub ends it), or was never seen.
async fn unqueued(app: &AppState, project: &ProjectId) -> Result<Unqueued, Response> {
    let Some(state) = project_state(app, project).await? else {
        return Ok(Unqueued::Unknown);
    };
    let Some(status) = state.status else {
        return Ok(Unqueued::Unknown);
    };
    if is_terminal(&status) {
        return Ok(Unqueued::Ended(status));
    }
    // Ended as the run's own fence (its job and newest claim), so the run's job is
    // settled in the state: every later event of it is refused as stale, which is how
    // its task learns it was cancelled (the Python SDK's `ProgressTask`).
    let publisher = match state.fence {
        Some((holder, token)) => app.publisher.for_claim(Fence { holder, token }),
        None => app.publisher.clone(),
    };
    match publisher
        .publish_complete(project, CompleteStatus::Cancelled, None)
        .await
    {
        Ok(_) => {
            tracing::info!(project_id = %project, "ended a run no hub worker carries as cancelled");
            Ok(Unqueued::EndedByHub)
        }
        // The run's job completed (or a newer claim published) meanwhile.
        Err(PublishError::Broker(BrokerError::Stale(reason))) => Ok(Unqueued::Ended(reason)),
        Err(err) => Err(unavailable(project, "could not publish the cancel", &err)),
    }
}

fn is_terminal(status: &str) -> bool {
    [
        CompleteStatus::Completed,
        CompleteStatus::Failed,
        CompleteStatus::Cancelled,
    ]
    .iter()
    .any(|s| s.as_str() == status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_takes_no_body_or_an_empty_object() {
        for ok in ["", "  ", "{}", " { } "] {
            assert!(is_no_body(ok.as_bytes()), "{ok:?}");
        }
        for bad in ["[]", "{\"x\":1}", "null", "\"\"", "{", "\u{0}"] {
            assert!(!is_no_body(bad.as_bytes()), "{bad:?}");
        }
        assert!(is_terminal("CANCELLED") && !is_terminal("RENDERING"));
    }
}
