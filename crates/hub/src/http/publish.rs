//! `POST /api/v1/projects/{project_id}/events`: the hub's publish path over HTTP.
//!
//! 202 `{"id": ...}` once the event is in the history and on the channel, or
//! `{"id": null, "coalesced": true}` for a `progress_update` held by coalescing.
//! 400 for a bad id or `Idempotency-Key`, 413 over the size limit, 422 naming the
//! invalid field, 429 for a new project over the client's quota (`admission.rs`), 503
//! while the broker is unreachable. With an `Idempotency-Key`, a
//! retry (after a timeout or a 503 whose publish did land) gets the first id.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::project_path::ProjectPath;
use super::{AppState, access, admission};
use crate::publish::{IdempotencyKey, InvalidIdempotencyKey, PublishError, Published};
use crate::wire::{Event, Tag};
use axum::http::HeaderMap;

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/events", tag = "publishing",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional, ^[A-Za-z0-9_.:-]{1,128}$: a retry with the same key within 10 minutes gets the first publish's id and appends nothing")),
    request_body(content = Event, description = "one event: {\"event\": ..., \"data\": {...}}, and optionally \"tags\": [\"user:7\", ...] (at most 8, each ^[A-Za-z0-9_.:@-]{1,64}$), which become the tags of the project's run (the state's tags, GET /api/v1/projects?tag=)"),
    responses(
        (status = 202, description = "in the history and on the channel: {\"id\": \"<epoch>:<seq>\"}; or held by coalescing: {\"id\": null, \"coalesced\": true}"),
        (status = 400, description = "invalid project id or idempotency key", body = ErrorBody),
        (status = 413, description = "body over the size limit", body = ErrorBody),
        (status = 415, description = "not Content-Type: application/json", body = ErrorBody),
        (status = 422, description = "invalid event; error.field names the culprit", body = ErrorBody),
        (status = 429, description = "TOO_MANY_NEW_PROJECTS: the event would create a project (one with no history), and this client (its token with access control on, else its address) has as many as it may at once or has created as many in the last minute (Retry-After)", body = ErrorBody),
        (status = 503, description = "broker unavailable", body = ErrorBody)))]
pub async fn publish(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
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
    let key = match headers.get("idempotency-key").map(|v| {
        v.to_str()
            .map_err(|_| InvalidIdempotencyKey)
            .and_then(IdempotencyKey::parse)
    }) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(invalid)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_IDEMPOTENCY_KEY",
                invalid.to_string(),
            )
            .into_response();
        }
    };
    let event = match Event::from_json(&body) {
        Ok(event) => event,
        Err(invalid) => return invalid_event(invalid).into_response(),
    };
    let tags = match tags_of(&body) {
        Ok(tags) => tags,
        Err(invalid) => return invalid_event(invalid).into_response(),
    };
    // The client, for its project quota: its token when access control is on, else
    // its address (behind a proxy without tokens, the proxy's: raise the quota).
    let client = access::client_key(&app, &headers, peer.ip());
    if let Err(refused) = admission::admit(&app, &project, &client).await {
        return refused;
    }
    match app
        .publisher
        .publish_tagged(&project, event, key.as_ref(), tags)
        .await
    {
        Ok(Published::Sent(id)) => {
            (StatusCode::ACCEPTED, Json(json!({ "id": id.to_string() }))).into_response()
        }
        Ok(Published::Coalesced) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": null, "coalesced": true })),
        )
            .into_response(),
        Err(PublishError::Invalid(invalid)) => invalid_event(invalid).into_response(),
        Err(PublishError::Broker(err)) => {
            tracing::error!(project_id = %project, error = %err, "publish failed");
            ApiError::unavailable().into_response()
        }
    }
}

/// The body's optional top-level `tags` (beside `event` and `data`, so the frame stays
/// as it is): the tags the event gives the project's run.
fn tags_of(body: &[u8]) -> Result<Option<Vec<Tag>>, crate::wire::InvalidEvent> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        tags: Option<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| crate::wire::InvalidEvent::new("body", format!("not valid JSON: {e}")))?;
    Tag::parse_field(envelope.tags.as_ref())
}

fn invalid_event(invalid: crate::wire::InvalidEvent) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_EVENT",
        invalid.to_string(),
    )
    .with_field(invalid.field)
}
