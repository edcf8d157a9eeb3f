//! Generation jobs over REST: `POST /api/v1/projects/{project_id}/generate` (202 with
//! the job id and its place in the queue; 409 while a job of that project exists; 429
//! when the client has as many unfinished jobs as it may or would create a project
//! beyond its quota (the hub's `http::admission`), 503 when the queue is full, all with
//! `Retry-After`;
//! 400/422 for a bad id or body).

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use progress_hub::catalog::ErrorCode;
use progress_hub::http::error::{ApiError, ErrorBody};
use progress_hub::http::project_path::ProjectPath;
use progress_hub::http::{AppState, access, admission};
use progress_hub::wire::{ProjectId, Tag};
use serde_json::json;

use super::Queue;
use super::checks::{Scope, admit, unavailable};
use crate::accept::accept;
use crate::queue::QueueError;
use crate::{GenerateRequest, Job};

/// What a client over its limit of unfinished jobs is told to wait: about one job.
const CLIENT_RETRY_AFTER_SECS: u64 = 60;
/// What everyone is told to wait while the queue is full.
const FULL_RETRY_AFTER_SECS: u64 = 30;
/// The catalog's codes (`ErrorCode::TooManyQueuedJobs`, `JobQueueFull`) as the HTTP
/// error body names them (a test checks they agree).
const TOO_MANY_QUEUED_JOBS: &str = "TOO_MANY_QUEUED_JOBS";
const JOB_QUEUE_FULL: &str = "JOB_QUEUE_FULL";
use axum::http::HeaderMap;

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/generate", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content = Option<GenerateRequest>, description = "optional: topic, tags of the run (at most 8, each ^[A-Za-z0-9_.:@-]{1,64}$) and injected transient failures per stage"),
    responses(
        (status = 202, description = "queued: {\"job_id\": ..., \"project_id\": ..., \"queue_position\": n} (1: no job waited before it)"),
        (status = 400, description = "invalid project id", body = ErrorBody),
        (status = 415, description = "a body (or a browser's request) without Content-Type: application/json", body = ErrorBody),
        (status = 409, description = "a job of this project is queued or running", body = ErrorBody),
        (status = 422, description = "invalid body", body = ErrorBody),
        (status = 429, description = "TOO_MANY_QUEUED_JOBS: this client has as many unfinished jobs as it may; TOO_MANY_NEW_PROJECTS: the project has no history and this client has created as many as it may (both with Retry-After)", body = ErrorBody),
        (status = 503, description = "JOB_QUEUE_FULL (Retry-After), or job queue unavailable", body = ErrorBody)))]
pub async fn generate(
    State(app): State<AppState>,
    Extension(jobs): Extension<Queue>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ProjectPath(project): ProjectPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match admit(&app, &headers, &project, Scope::Publish, body, request_of) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    // The client, for the per-client queue limit: its token when access control is on,
    // else its address (behind a proxy without tokens, the proxy's: raise the cap).
    let client = access::client_key(&app, &headers, peer.ip());
    // A job's QUEUED update creates the project: it counts against the client's quota.
    if let Err(refused) = admission::admit(&app, &project, &client).await {
        return refused;
    }
    match job_of(&app, request, &project, client) {
        Ok((job, tags)) => queue(&app, &jobs, &job, tags, peer).await,
        Err(refused) => refused.into_response(),
    }
}

/// The job a valid request asks for, with its run's tags (none named: `[]`); 422 for a
/// topic, tags or failures out of bounds.
pub(super) fn job_of(
    app: &AppState,
    request: GenerateRequest,
    project: &ProjectId,
    client: String,
) -> Result<(Job, Vec<Tag>), ApiError> {
    let tags = request.tags().map_err(invalid_request)?;
    let default_topic = app
        .publisher
        .locale()
        .pick("AI 如何改變我們的生活", "How AI changes our lives");
    let job = request
        .into_job(project.clone(), default_topic, Some(client))
        .map_err(invalid_request)?;
    Ok((job, tags))
}

/// The body of a `generate` (or a `retry`): none, or a JSON object of
/// [`GenerateRequest`]; a refusal (422) otherwise.
pub(super) fn request_of(body: &Bytes) -> Result<GenerateRequest, ApiError> {
    let request = if body.trim_ascii().is_empty() {
        GenerateRequest::default()
    } else if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
            "the body must be a JSON object {\"topic\": ..., \"inject_failures\": {...}}",
        )
        .with_field("body"));
    } else {
        let de = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, GenerateRequest>(de) {
            Ok(request) => request,
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." || path == "?" {
                    "body".into()
                } else {
                    path
                };
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_REQUEST",
                    err.into_inner().to_string(),
                )
                .with_field(field));
            }
        }
    };
    Ok(request)
}

/// Queues `job` and starts its run with its `tags`: 202 with its id and place, or the
/// refusal (409 while the project has a job, 429/503 at a limit, with `Retry-After`).
pub(super) async fn queue(
    app: &AppState,
    jobs: &Queue,
    job: &Job,
    tags: Vec<Tag>,
    peer: SocketAddr,
) -> Response {
    let project = &job.project;
    match accept(jobs.as_ref(), &app.publisher, job, tags).await {
        Ok(queued) => {
            let position = queued.position;
            tracing::info!(project_id = %project, job_id = %job.id, position, "generation job queued");
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "job_id": job.id,
                    "project_id": project.as_str(),
                    "queue_position": position,
                })),
            )
                .into_response()
        }
        Err(QueueError::Busy { job_id }) => ApiError::new(
            StatusCode::CONFLICT,
            "JOB_RUNNING",
            format!("a generation job is already running for this project ({job_id})"),
        )
        .into_response(),
        Err(err @ QueueError::ClientFull { .. }) => {
            tracing::info!(project_id = %project, peer = %peer.ip(), error = %err, "generate refused: the client's limit");
            let message = ErrorCode::TooManyQueuedJobs
                .entry()
                .message(app.publisher.locale());
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_QUEUED_JOBS, message)
                .retry_after(CLIENT_RETRY_AFTER_SECS)
        }
        Err(err @ QueueError::Full { .. }) => {
            tracing::warn!(project_id = %project, error = %err, "generate refused: the job queue is full");
            let message = ErrorCode::JobQueueFull
                .entry()
                .message(app.publisher.locale());
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, JOB_QUEUE_FULL, message)
                .retry_after(FULL_RETRY_AFTER_SECS)
        }
        Err(QueueError::Unavailable(reason)) => {
            unavailable(project, "cannot queue the job", &reason)
        }
    }
}

/// 422 for a body that breaks the contract, naming the field.
fn invalid_request(invalid: progress_hub::wire::InvalidEvent) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
        invalid.message,
    )
    .with_field(invalid.field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_catalog_codes() {
        for (code, name) in [
            (ErrorCode::TooManyQueuedJobs, TOO_MANY_QUEUED_JOBS),
            (ErrorCode::JobQueueFull, JOB_QUEUE_FULL),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), name);
        }
    }
}
