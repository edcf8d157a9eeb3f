//! Accepting connections: the HTTP server loop, with the timeouts a public server needs.
//!
//! `axum::serve` sets no timer on hyper, so a client that opens a connection and never
//! finishes its request (slowloris), or an idle keep-alive connection, would hold a file
//! descriptor and a task forever. This loop is `axum::serve` plus those bounds:
//!
//! - **handshake timeout**: a new connection, and a kept-alive one between requests,
//!   must deliver a complete request head within it, else it is closed (hyper's
//!   `header_read_timeout`, which runs whenever the connection waits for a request);
//! - **request timeout**: reading a request's body and producing the response (not a
//!   WebSocket or SSE stream, which have their own heartbeat) is bounded; past it the
//!   client gets a JSON 408 (`request_timeout`, a middleware of the router).
//!
//! Upgraded WebSocket connections leave hyper's hands; the sessions on them are tracked
//! and closed by the server's shutdown, not here.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Answers 408 (JSON) when a request is not read and answered within `limit`.
pub async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            axum::response::IntoResponse::into_response(super::ApiError::request_timeout(limit))
        }
    }
}

/// After a failed `accept` (out of file descriptors, usually), wait this long before
/// the next: retrying at once would spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown`, then stops accepting and returns the
/// connections still finishing their request in flight (closed tracker: wait on it).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) -> TaskTracker {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request.map(axum::body::Body::new)
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request in flight (if any), then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, client = %remote, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections
}
