//! One connection, many projects: `GET /api/v1/progress` (WebSocket). The client
//! subscribes and unsubscribes with frames of its own (see `session::multiplex`).
//! `GET /api/v1/progress/events` is the same feed over SSE: the subscriptions are named
//! in the query, and every project resumes from the one `Last-Event-ID`
//! (`wire::positions`).
//!
//! The token (`?token=` or `Authorization: Bearer`, when access control is on) is
//! checked before the upgrade, as on the single-project endpoint; each subscription is
//! then checked against it.

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::progress::{Connection, serve_events, upgrade_to};
use super::{AppState, access};
use crate::transport::sse_multiplexed::MultiplexedSse;
use crate::wire::positions::{InvalidPositions, MAX_PROJECTS, Positions};

#[derive(Debug, Default, Deserialize)]
pub struct MultiplexedQuery {
    token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/progress", tag = "watching",
    description = "WebSocket upgrade: one connection, many projects. Send {\"event\":\"subscribe\",\"data\":{\"project_id\":\"p1\",\"last_event_id\":\"<id>\"}} and {\"event\":\"unsubscribe\",\"data\":{\"project_id\":\"p1\"}}; a tag's projects' states: {\"event\":\"subscribe\",\"data\":{\"tag\":\"user:7\",\"status\":[\"active\"]}}, every project's: {\"tag\":\"*\"} (with access control on, only for a token whose projects include *). Every frame of a subscription carries a top-level project_id (a tag subscription's also its tag). See docs/PROTOCOL.md and /api/v1/asyncapi.json.",
    params(("token" = Option<String>, Query, description = "access token (or Authorization: Bearer), when access control is on")),
    responses(
        (status = 101, description = "switching to WebSocket"),
        (status = 400, description = "not a WebSocket upgrade, or a malformed query", body = ErrorBody),
        (status = 401, description = "missing, invalid or expired token", body = ErrorBody)))]
pub async fn progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut connection: Connection,
    query: Result<Query<MultiplexedQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "the query string is malformed",
        )
        .into_response();
    };
    let access = match access::watch_any(&app, &headers, query.token.as_deref()) {
        Ok(access) => access,
        Err(err) => return err.into_response(),
    };
    let Ok(upgrade) = upgrade else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "UPGRADE_REQUIRED",
            "this endpoint speaks WebSocket (Upgrade: websocket)",
        )
        .into_response();
    };
    let slot = connection.slot(&app, peer);
    upgrade_to(app, peer, slot, upgrade, move |sessions, transport| {
        sessions.run_multiplexed(access, transport)
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct MultiplexedEventsQuery {
    projects: Option<String>,
    tags: Option<String>,
    token: Option<String>,
    last_event_id: Option<String>,
}

/// The request's subscriptions, as the client frames a WebSocket client would send.
fn subscribes(
    projects: &[&str],
    tags: &[&str],
    positions: &Positions,
) -> Vec<axum::extract::ws::Utf8Bytes> {
    let projects = projects.iter().enumerate().map(|(place, project)| {
        let mut data = json!({ "project_id": project });
        if let Some(position) = positions.get(place) {
            data["last_event_id"] = json!(position.to_string());
        }
        json!({"event": "subscribe", "data": data})
    });
    let tags = tags
        .iter()
        .map(|tag| json!({"event": "subscribe", "data": {"tag": tag}}));
    projects
        .chain(tags)
        .map(|frame| frame.to_string().into())
        .collect()
}

/// A comma-separated query value's items (none for an absent or empty value).
fn items(value: Option<&str>) -> Vec<&str> {
    match value {
        None | Some("") => Vec::new(),
        Some(value) => value.split(',').collect(),
    }
}

#[utoipa::path(get, path = "/api/v1/progress/events", tag = "watching",
    description = "SSE: one stream, many projects and tags, the frames of the multiplexed WebSocket (each subscription's with a top-level project_id or tag). Each record that moves a project's position has an id: holding every project's position (m1.<list>.<epoch>:<seq>,...), so Last-Event-ID resumes every project at once. A refused subscription gets a subscription_error frame; the others go on. See docs/PROTOCOL.md.",
    params(
        ("projects" = Option<String>, Query, description = "comma-separated project ids, at most 100"),
        ("tags" = Option<String>, Query, description = "comma-separated tags; `*`: every project (with access control on, only for a token whose projects include `*`)"),
        ("token" = Option<String>, Query, description = "access token (or Authorization: Bearer), when access control is on"),
        ("last_event_id" = Option<String>, Query, description = "resume every project (wins over Last-Event-ID)"),
        ("Last-Event-ID" = Option<String>, Header, description = "an id: this stream gave: resume every project where it stood")),
    responses(
        (status = 200, description = "SSE stream", content_type = "text/event-stream"),
        (status = 400, description = "INVALID_QUERY (no project or tag, too many, a malformed query) or INVALID_EVENT_ID (a Last-Event-ID this stream's project list did not give, or over the size bound)", body = ErrorBody),
        (status = 401, description = "missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "too many connections", body = ErrorBody)))]
pub async fn events(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut connection: Connection,
    query: Result<Query<MultiplexedEventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let invalid = |code, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let Ok(Query(query)) = query else {
        return invalid("INVALID_QUERY", "the query string is malformed".into()).into_response();
    };
    let list = query.projects.as_deref().unwrap_or("");
    let projects = items(query.projects.as_deref());
    let tags = items(query.tags.as_deref());
    if projects.is_empty() && tags.is_empty() {
        return invalid(
            "INVALID_QUERY",
            "name at least one project (projects=a,b) or tag (tags=user:7)".into(),
        )
        .with_field("projects")
        .into_response();
    }
    if projects.len() > MAX_PROJECTS {
        return invalid(
            "INVALID_QUERY",
            format!("an SSE stream names at most {MAX_PROJECTS} projects (more: a tag, or the WebSocket GET /api/v1/progress)"),
        )
        .with_field("projects")
        .into_response();
    }
    let access = match access::watch_any(&app, &headers, query.token.as_deref()) {
        Ok(access) => access,
        Err(err) => return err.into_response(),
    };
    let raw = match query.last_event_id {
        Some(raw) => Some(raw),
        None => match headers.get("last-event-id").map(|v| v.to_str()) {
            Some(Ok(value)) => Some(value.to_string()),
            Some(Err(_)) => {
                return invalid("INVALID_EVENT_ID", InvalidPositions::Malformed.to_string())
                    .into_response();
            }
            None => None,
        },
    };
    let positions = match raw {
        Some(raw) => match Positions::parse(&raw, list, projects.len()) {
            Ok(positions) => positions,
            Err(err) => return invalid("INVALID_EVENT_ID", err.to_string()).into_response(),
        },
        None => Positions::new(list, projects.len()),
    };
    let subscribes = subscribes(&projects, &tags, &positions);
    let slot = connection.slot(&app, peer);
    let end = connection.end();
    serve_events(app, peer, slot, end, move |sessions, sse| {
        let transport = MultiplexedSse::new(sse, &projects, positions, subscribes);
        sessions.run_multiplexed(access, transport)
    })
}
