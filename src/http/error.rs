//! JSON errors for HTTP clients: `{"error":{"code":...,"message":...}}`.
//!
//! The message is written for the client and never carries internals (paths, Redis
//! errors, stack traces); those go to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::wire::InvalidProjectId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
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
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
