//! JSON errors for HTTP clients: `{"error":{"code":...,"message":...}}`.
//!
//! The message is written for the client and never carries internals (paths, Redis
//! errors, stack traces); those go to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::wire::InvalidProjectId;

/// The JSON body of every error response (for the API docs).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable code, e.g. INVALID_PROJECT_ID, INVALID_EVENT, JOB_RUNNING.
    code: String,
    /// For people; never carries internals.
    message: String,
    /// For validation errors: the JSON path of the offending field.
    field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The JSON path of the offending field, for validation errors.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A request body that could not be read: 413 over the size limit, else 400.
    pub fn unreadable_body(
        rejection: &axum::extract::rejection::BytesRejection,
        limit: usize,
    ) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("a request body may be at most {limit} bytes"),
            )
        } else {
            Self::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "the request body could not be read",
            )
        }
    }

    /// The broker (Redis) cannot be reached; the details stay in the log.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BROKER_UNAVAILABLE",
            "the event store is unavailable right now; retry shortly",
        )
    }

    /// The client did not finish its request in time.
    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!(
                "the request was not completed within {}",
                humantime::format_duration(limit)
            ),
        )
    }

    /// A connection over a limit (per address, per process).
    pub fn too_many_connections(limit: crate::limits::LimitExceeded) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            limit.to_string(),
        )
    }

    /// This error, telling the client when to try again (`Retry-After`, in seconds).
    pub fn retry_after(self, seconds: u64) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
        response
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }
}

impl From<InvalidProjectId> for ApiError {
    fn from(err: InvalidProjectId) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PROJECT_ID",
            err.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(field) = self.field {
            body["error"]["field"] = field.into();
        }
        (self.status, Json(body)).into_response()
    }
}
