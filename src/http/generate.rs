//! Projects and generation jobs over REST:
//! `POST /api/v1/projects` (201, a new id) and
//! `POST /api/v1/projects/{project_id}/generate` (202 with the job id; 409 while a job
//! of that project runs; 400/422 for a bad id or body).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::project_path::ProjectPath;
use super::{AppState, access};
use crate::job::GenerateRequest;
use crate::job::queue::QueueError;
use axum::http::HeaderMap;

/// `POST /api/v1/projects`: a fresh project id to generate into and watch.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    responses((status = 201, description = "a new project id: {\"id\": \"p-...\"}")))]
pub async fn create(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(denied) = access::publish(&app, &headers, None) {
        return denied.into_response();
    }
    let id: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({ "id": format!("p-{id}") })),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/generate", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    request_body(content = Option<GenerateRequest>, description = "optional: topic and injected transient failures per stage"),
    responses(
        (status = 202, description = "queued: {\"job_id\": ..., \"project_id\": ...}"),
        (status = 400, description = "invalid project id", body = ErrorBody),
        (status = 415, description = "a body (or a browser's request) without Content-Type: application/json", body = ErrorBody),
        (status = 409, description = "a job of this project is running", body = ErrorBody),
        (status = 422, description = "invalid body", body = ErrorBody),
        (status = 503, description = "job queue unavailable", body = ErrorBody)))]
pub async fn generate(
    State(app): State<AppState>,
    ProjectPath(project): ProjectPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(denied) = access::publish(&app, &headers, Some(&project)) {
        return denied.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::unreadable_body(&rejection, app.max_frame_bytes).into_response();
        }
    };
    let request = if body.trim_ascii().is_empty() {
        GenerateRequest::default()
    } else if body.trim_ascii_start().first() != Some(&b'{') {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
            "the body must be a JSON object {\"topic\": ..., \"inject_failures\": {...}}",
        )
        .with_field("body")
        .into_response();
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        match serde_path_to_error::deserialize::<_, GenerateRequest>(de) {
            Ok(request) => request,
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." || path == "?" {
                    "body".into()
                } else {
                    path
                };
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_REQUEST",
                    err.into_inner().to_string(),
                )
                .with_field(field)
                .into_response();
            }
        }
    };
    let default_topic = app
        .publisher
        .locale()
        .pick("AI 如何改變我們的生活", "How AI changes our lives");
    let job = match request.into_job(project.clone(), default_topic) {
        Ok(job) => job,
        Err(invalid) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                invalid.message,
            )
            .with_field(invalid.field)
            .into_response();
        }
    };
    match app.jobs.submit(&job).await {
        Ok(()) => {
            tracing::info!(project_id = %project, job_id = %job.id, "generation job queued");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "job_id": job.id, "project_id": project.as_str() })),
            )
                .into_response()
        }
        Err(QueueError::Busy { job_id }) => ApiError::new(
            StatusCode::CONFLICT,
            "JOB_RUNNING",
            format!("a generation job is already running for this project ({job_id})"),
        )
        .into_response(),
        Err(QueueError::Unavailable(reason)) => {
            tracing::error!(project_id = %project, error = %reason, "cannot queue the job");
            ApiError::unavailable().into_response()
        }
    }
}
