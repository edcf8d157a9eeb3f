//! `POST /api/v1/projects` (201): a fresh project id to generate into (or publish to)
//! and watch.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::{AppState, access};

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
