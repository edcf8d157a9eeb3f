//! `GET /api/v1/projects/{project_id}/progress`: the WebSocket endpoint.
//!
//! The id is validated before the upgrade, so a bad id costs a 400 and no socket.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::project_path::ProjectPath;
use crate::transport::websocket::WebSocketTransport;

/// tungstenite's read buffer is 128 KiB per connection by default; client frames are
/// tiny (`pong`), so 4 KiB is plenty and keeps an idle connection lean.
const READ_BUFFER: usize = 4 * 1024;
/// Frames are batched up to this size before a write to the socket.
const WRITE_BUFFER: usize = 8 * 1024;
/// Bytes the write side may hold for a client that does not read, beyond which writes
/// fail; the outbound queue already bounds frames, this bounds bytes.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

pub async fn progress(
    State(app): State<AppState>,
    ProjectPath(project): ProjectPath,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "UPGRADE_REQUIRED",
                "this endpoint speaks WebSocket: send an Upgrade: websocket request",
            )
            .into_response();
        }
    };
    let limit = app.max_frame_bytes;
    let sessions = app.sessions.clone();
    let tracker = app.tracker.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                sessions.run(project, WebSocketTransport::new(socket)).await;
            })
        })
}
