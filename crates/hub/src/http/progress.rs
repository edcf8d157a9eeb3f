//! Watching a project: `GET /api/v1/projects/{project_id}/progress` (WebSocket, or SSE
//! with `Accept: text/event-stream`) and `GET /api/v1/projects/{project_id}/events`
//! (SSE).
//!
//! The id and the resume position are validated before the upgrade, so a bad request
//! costs a 400 and no socket.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use std::net::SocketAddr;

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::listener::ConnectionEnd;
use super::project_path::ProjectPath;
use super::{AppState, access};
use crate::limits::ConnectionSlot;
use crate::session::{Access, Ended, Sessions};
use crate::transport::{Transport, Writer, sse, websocket::WebSocketTransport};
use crate::wire::CloseReason;
use crate::wire::{EventId, ProjectId};

/// tungstenite's read buffer is 128 KiB per connection by default; client frames are
/// tiny (`pong`, a `refresh` token), so 512 bytes is plenty (a larger frame is read in
/// pieces). It matters twice: it is allocated per connection, and tungstenite zeroes
/// this much before every read attempt — a profile showed a 4 KiB memset per wake-up
/// among the top costs of delivering a frame.
const READ_BUFFER: usize = 512;
/// Frames are batched up to this size before a write to the socket.
const WRITE_BUFFER: usize = 8 * 1024;
/// Bytes the write side may hold for a client that does not read, beyond which writes
/// fail; the outbound queue already bounds frames, this bounds bytes.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct WatchQuery {
    last_event_id: Option<String>,
    token: Option<String>,
}

/// Checks access, and reads the resume position (`?last_event_id=` wins over the SSE
/// `Last-Event-ID` header).
fn admit(
    app: &AppState,
    project: &ProjectId,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Result<(Option<EventId>, Option<Access>), ApiError> {
    let query = query.map(|Query(q)| q).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "the query string is malformed",
        )
    })?;
    let access = access::watch(app, headers, query.token.as_deref(), project)?;
    let raw = match query.last_event_id {
        Some(raw) => Some(raw),
        None => match headers.get("last-event-id") {
            Some(value) => Some(value.to_str().map_err(|_| invalid_event_id())?.to_string()),
            None => None,
        },
    };
    let position = match raw.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(raw.parse().map_err(|_| invalid_event_id())?),
    };
    Ok((position, access))
}

fn invalid_event_id() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_EVENT_ID",
        "last_event_id must be an id the hub gave, like k3J9x2Qa7b:42",
    )
}

/// What the listener attached to the connection a request came on: its slot of the
/// connection limits, and the way to end it (see `listener::ConnectionEnd`). A request
/// that did not come through the listener has neither.
pub struct Connection {
    slot: Option<Arc<ConnectionSlot>>,
    end: Option<ConnectionEnd>,
}

impl<S: Send + Sync> FromRequestParts<S> for Connection {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            slot: parts.extensions.get::<Arc<ConnectionSlot>>().cloned(),
            end: parts.extensions.get::<ConnectionEnd>().cloned(),
        })
    }
}

impl Connection {
    /// Its slot; a request that did not come through the listener takes one of its own.
    pub(super) fn slot(&mut self, app: &AppState, peer: SocketAddr) -> Arc<ConnectionSlot> {
        match self.slot.take() {
            Some(slot) => slot,
            None => Arc::new(ConnectionSlot::from(app.limits.try_acquire(peer.ip()))),
        }
    }

    /// The way to end it, taken once (see `listener::ConnectionEnd`).
    pub(super) fn end(&mut self) -> Option<ConnectionEnd> {
        self.end.take()
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}/progress", tag = "watching",
    description = "WebSocket upgrade (or SSE with Accept: text/event-stream). Frames: see /api/v1/schema/events.json and /api/v1/asyncapi.json.",
    params(
        ("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$"),
        ("last_event_id" = Option<String>, Query, description = "resume after this event id"),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE resume position")),
    responses(
        (status = 101, description = "switching to WebSocket"),
        (status = 200, description = "SSE stream", content_type = "text/event-stream"),
        (status = 400, description = "invalid project id or event id, or neither WebSocket nor SSE", body = ErrorBody)))]
pub async fn progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    connection: Connection,
    ProjectPath(project): ProjectPath,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    watch(
        app,
        peer,
        connection,
        project,
        query,
        &headers,
        Some(upgrade),
    )
}

/// `GET /api/v1/projects/{project_id}/events`: always SSE.
#[utoipa::path(get, path = "/api/v1/projects/{project_id}/events", tag = "watching",
    params(
        ("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$"),
        ("last_event_id" = Option<String>, Query, description = "resume after this event id"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses(
        (status = 200, description = "SSE stream", content_type = "text/event-stream"),
        (status = 400, description = "invalid project id or event id", body = ErrorBody)))]
pub async fn events(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    connection: Connection,
    ProjectPath(project): ProjectPath,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    watch(app, peer, connection, project, query, &headers, None)
}

/// Both routes' watch of one project, once access and the resume position are checked:
/// over the WebSocket the request upgrades to (`upgrade`), else SSE, which `progress`
/// serves only to a request that accepts `text/event-stream` and `events` to any.
fn watch(
    app: AppState,
    peer: SocketAddr,
    mut connection: Connection,
    project: ProjectId,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    upgrade: Option<Result<WebSocketUpgrade, WebSocketUpgradeRejection>>,
) -> Response {
    let (last_event_id, access) = match admit(&app, &project, query, headers) {
        Ok(admitted) => admitted,
        Err(err) => return err.into_response(),
    };
    let slot = connection.slot(&app, peer);
    match upgrade {
        Some(Ok(upgrade)) => upgrade_to(app, peer, slot, upgrade, move |sessions, transport| {
            sessions.run(project, last_event_id, access, transport)
        }),
        Some(Err(_)) if !wants_event_stream(headers) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "UPGRADE_REQUIRED",
            "this endpoint speaks WebSocket (Upgrade: websocket) or SSE (Accept: text/event-stream)",
        )
        .into_response(),
        Some(Err(_)) | None => {
            serve_events(app, peer, slot, connection.end(), move |sessions, transport| {
                sessions.run(project, last_event_id, access, transport)
            })
        }
    }
}

/// Upgrades to a WebSocket and runs the session `start` makes on it (or closes with
/// 1013 when the connection limits refused it).
pub(super) fn upgrade_to<S, F>(
    app: AppState,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
    upgrade: WebSocketUpgrade,
    start: S,
) -> Response
where
    S: FnOnce(Sessions, WebSocketTransport) -> F + Send + 'static,
    F: Future<Output = Ended> + Send + 'static,
{
    let limit = app.max_frame_bytes;
    // One box for what the callback needs: axum's upgrade task keeps room for the
    // callback as long as the session lives, so 8 bytes rather than ~170 per idle
    // connection.
    let context = Box::new((app, peer, slot, start));
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let (app, peer, slot, start) = *context;
            let (sessions, tracker, limits) = (app.sessions, app.tracker, app.limits);
            let transport = WebSocketTransport::new(socket);
            match slot.refused() {
                None => {
                    // Built here and not awaited inside an async block, which would
                    // keep room for the session twice (and for the socket) for the
                    // session's whole life (see `Sessions::run`).
                    let session = start(sessions, transport);
                    Either::Left(tracker.track_future(holding(slot, session)))
                }
                // Refused after the upgrade, so that a browser sees why (close 1013).
                Some(limit) => {
                    limits.log_refusal("a WebSocket connection", peer.ip(), limit, false);
                    let (mut writer, _reader) = transport.split();
                    // The slot counts this socket among those being refused until
                    // the close is out (that count is capped).
                    Either::Right(tracker.track_future(async move {
                        writer.close(CloseReason::Overloaded).await;
                        drop(slot);
                    }))
                }
            }
        })
}

/// The session, holding its connection slot until it ends (a combinator rather than an
/// `async` block, which would keep room for the session twice).
fn holding<F: Future>(slot: Arc<ConnectionSlot>, session: F) -> impl Future<Output = ()> {
    session.map(move |_| drop(slot))
}

/// Streams the session `start` makes on an SSE transport (or refuses with 503 when the
/// connection limits refused it).
pub(super) fn serve_events<S, F>(
    app: AppState,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
    end: Option<ConnectionEnd>,
    start: S,
) -> Response
where
    S: FnOnce(Sessions, sse::SseTransport) -> F,
    F: Future<Output = Ended> + Send + 'static,
{
    if let Some(limit) = slot.refused() {
        app.limits
            .log_refusal("an SSE connection", peer.ip(), limit, false);
        return ApiError::too_many_connections(limit).into_response();
    }
    let (transport, stream) = sse::channel();
    let session = start(app.sessions.clone(), transport)
        // The session is over: so is its connection, even if the client takes nothing
        // more off it (see `listener::ConnectionEnd`).
        .inspect(move |_| {
            if let Some(end) = end {
                end.end();
            }
        });
    app.tracker.spawn(holding(slot, session));
    (
        // Tell proxies (nginx) not to buffer the stream.
        [("x-accel-buffering", "no"), ("cache-control", "no-cache")],
        Sse::new(stream),
    )
        .into_response()
}
