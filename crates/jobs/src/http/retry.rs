//! `POST /api/v1/projects/{project_id}/retry`: starts a failed or cancelled job again
//! from its last finished step.
//!
//! The new job carries what the last one finished (its retry point, kept by the queue
//! when it failed or was cancelled), so its worker calls no provider of a finished step;
//! it is a new run of the project (its own job id and `QUEUED` update: fresh progress
//! rules, and the old job's events stay fenced). The body is `generate`'s (topic,
//! injected failures: those of the old job are not carried over). 409 `NOT_RETRYABLE`
//! unless the project's last run failed or was cancelled, 404 `NO_JOB` for a project
//! with no run.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Queue;
use super::checks::{Scope, admit, project_state, unavailable};
use super::generate::{job_of, queue, request_of};
use crate::GenerateRequest;
use progress_hub::http::error::{ApiError, ErrorBody};
use progress_hub::http::project_path::ProjectPath;
use progress_hub::http::{AppState, access};
use progress_hub::wire::Tag;
use progress_hub::wire::event::CompleteStatus;

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/retry", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content = Option<GenerateRequest>, description = "optional, as generate's: topic and injected transient failures per stage (the failed job's are not carried over)"),
    responses(
        (status = 202, description = "queued from the last finished step: {\"job_id\": ..., \"project_id\": ..., \"queue_position\": n}"),
        (status = 400, description = "invalid project id", body = ErrorBody),
        (status = 404, description = "NO_JOB: no run of this project is known", body = ErrorBody),
        (status = 409, description = "NOT_RETRYABLE: the last run did not fail and was not cancelled (it runs, waits, or completed)", body = ErrorBody),
        (status = 422, description = "invalid body", body = ErrorBody),
        (status = 503, description = "job queue or broker unavailable", body = ErrorBody)))]
pub async fn retry(
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
    let state = match project_state(&app, &project).await {
        Ok(state) => state,
        Err(refused) => return refused,
    };
    let Some((status, last_tags)) = state.and_then(|s| Some((s.status?, s.tags))) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "NO_JOB",
            "the hub knows no job of this project",
        )
        .into_response();
    };
    let retryable = [CompleteStatus::Failed, CompleteStatus::Cancelled]
        .iter()
        .any(|s| s.as_str() == status);
    if !retryable {
        return ApiError::new(
            StatusCode::CONFLICT,
            "NOT_RETRYABLE",
            format!(
                "the project's last run is {status}: only a failed or cancelled run is retried"
            ),
        )
        .into_response();
    }
    let resume_from = match jobs.retry_point(&project).await {
        Ok(point) => point.filter(|p| !p.is_empty()),
        Err(err) => return unavailable(&project, "reading the retry point failed", &err),
    };
    let client = access::client_key(&app, &headers, peer.ip());
    let named_tags = request.tags.is_some();
    let (mut job, mut tags) = match job_of(&app, request, &project, client) {
        Ok(job) => job,
        Err(refused) => return refused.into_response(),
    };
    // A retry without tags of its own keeps the failed run's.
    if !named_tags {
        tags = last_tags
            .iter()
            .filter_map(|t| Tag::parse(t).ok())
            .collect();
    }
    tracing::info!(project_id = %project, job_id = %job.id, resumes = resume_from.is_some(), "retrying the project's job");
    job.resume_from = resume_from;
    queue(&app, &jobs, &job, tags, peer).await
}
