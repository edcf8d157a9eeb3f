//! One connection, many projects: `GET /api/v1/progress` (WebSocket). The client
//! subscribes and unsubscribes with frames of its own (see `session::multiplex`).
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

use super::error::{ApiError, ErrorBody};
use super::progress::{Connection, upgrade_to};
use super::{AppState, access};

#[derive(Debug, Default, Deserialize)]
pub struct MultiplexedQuery {
    token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/progress", tag = "watching",
    description = "WebSocket upgrade: one connection, many projects. Send {\"event\":\"subscribe\",\"data\":{\"project_id\":\"p1\",\"last_event_id\":\"<id>\"}} and {\"event\":\"unsubscribe\",\"data\":{\"project_id\":\"p1\"}}; every frame of a subscription carries a top-level project_id. See docs/PROTOCOL.md and /api/v1/asyncapi.json.",
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
