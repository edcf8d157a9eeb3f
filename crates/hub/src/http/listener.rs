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
//! and closed by the server's shutdown, not here. An SSE session stays in them: when it
//! ends, it says so through the connection's [`ConnectionEnd`], and the connection is
//! closed after at most [`CLOSE_GRACE`] (a reader that stalled never takes the rest).
//! What hyper buffers per connection is bounded by [`MAX_BUFFER`].
//!
//! Every accepted connection takes a slot of the connection limits (`limits.rs`) and
//! carries it in its requests' extensions, so a WebSocket or SSE session holds its
//! connection's slot instead of a second one. A connection over a limit is answered
//! once (503 `TOO_MANY_CONNECTIONS`, or close 1013 after a WebSocket upgrade) and
//! closed; beyond `MAX_REFUSING` of those at once, it is closed as soon as accepted.
//! A failed `accept` (out of file descriptors) backs off, doubling up to
//! [`MAX_ACCEPT_BACKOFF`], and logs at most one line per [`ACCEPT_ERROR_LOG_INTERVAL`].

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
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

use crate::limits::{ConnectionLimits, ConnectionSlot};
use crate::telemetry::Throttle;

/// Bytes hyper buffers per connection (each way: a request head must fit, and a
/// response stream to a client that does not read holds at most this, plus a frame).
/// hyper's default is ~400 KiB; a WebSocket's write side is capped at 256 KiB.
pub const MAX_BUFFER: usize = 64 * 1024;

/// How long a connection whose streaming response ended may take to send the rest.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Ends the connection a request came on, from the response: an SSE session calls
/// [`ConnectionEnd::end`] when it is over, and the listener closes the connection once
/// what is in flight went out, or after [`CLOSE_GRACE`].
#[derive(Debug, Clone, Default)]
pub struct ConnectionEnd(CancellationToken);

impl ConnectionEnd {
    pub fn end(&self) {
        self.0.cancel();
    }
}

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

/// Refuses every request on a connection over a limit with 503 (and closes the
/// connection after it), except a WebSocket upgrade, which is answered after the
/// upgrade with close 1013 (what a browser can read).
pub async fn refuse_over_limit(
    axum::extract::State(limits): axum::extract::State<Arc<ConnectionLimits>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let refused = request
        .extensions()
        .get::<Arc<ConnectionSlot>>()
        .and_then(|slot| slot.refused());
    let upgrade = request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match refused {
        // Passed on to be refused with close 1013 after the upgrade; anything else the
        // request turns out to be (an `Upgrade` header on another route) still ends
        // the connection, which must not stay alive on a refused slot.
        Some(_) if upgrade => {
            let mut response = next.run(request).await;
            if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            response
        }
        Some(limit) => {
            if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
                limits.log_refusal("an HTTP connection", peer.ip(), limit, false);
            }
            // `connection: close`: hyper ends the connection after this answer.
            let mut response = axum::response::IntoResponse::into_response(
                super::ApiError::too_many_connections(limit),
            );
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            response
        }
        _ => next.run(request).await,
    }
}

/// The listen backlog asked for: connections the kernel completes and queues before
/// the accept loop takes them. The kernel caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4). std's (and so tokio's) `bind` asks for 128, which a
/// reconnect storm overflows whenever the acceptor is not scheduled in time: each
/// dropped SYN costs that client a 1 s retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener as `TcpListener::bind` does (`SO_REUSEADDR` on Unix, as std sets
/// it), but with a backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The first wait after a failed `accept` (out of file descriptors, usually): retrying
/// at once would spin while nothing can be accepted. It doubles while accepts keep
/// failing, up to [`MAX_ACCEPT_BACKOFF`], and starts again after a success.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// At most one WARN line per this about failed accepts (it counts the others).
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a connection over a limit gets when it is closed as soon as accepted (too many
/// refusals in flight): written if the socket takes it at once, never waited for.
static SHED_ANSWER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":{"code":"TOO_MANY_CONNECTIONS","message":"the hub is refusing connections over its limits; retry later"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Whether a failed `accept` concerns only that connection (the peer gave up before
/// it was accepted): go on at once. Anything else (EMFILE, ENFILE, ENOBUFS) backs off.
fn only_that_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and returns the
/// connections still finishing their request in flight (closed tracker: wait on it).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<ConnectionLimits>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) -> TaskTracker {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(MAX_BUFFER);
    let connections = TaskTracker::new();
    let accept_errors = Throttle::new(ACCEPT_ERROR_LOG_INTERVAL);
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF;
                accepted
            }
            Err(err) if only_that_connection(&err) => continue,
            Err(err) => {
                crate::metrics::accept_failed();
                if let Some(more) = accept_errors.admit() {
                    tracing::warn!(error = %err, failed_since_last_line = more, retry_in = ?backoff, "cannot accept connections");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let slot = match limits.admit(remote.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(limit) => {
                limits.log_refusal("a connection (closed at once)", remote.ip(), limit, true);
                let _ = stream.try_write(&SHED_ANSWER);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let held = Arc::clone(&slot);
        let end = ConnectionEnd::default();
        let ending = end.clone();
        let service = app
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo::<SocketAddr>(remote));
                extensions.insert(Arc::clone(&held));
                extensions.insert(ending.clone());
                request.map(axum::body::Body::new)
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            // The slot is this connection's until it ends (and an upgraded session's
            // after that: it holds a clone).
            let _slot = slot;
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = end.0.cancelled() => {
                    // Its stream's session ended: no more requests on it, and what is
                    // left to send has a moment to go out.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// 300 connects to a listener that accepts none all complete at once: the kernel
    /// queues them (a backlog of 128 would drop the SYNs past it, and those clients
    /// would wait a 1 s retransmission).
    #[tokio::test]
    async fn a_connect_burst_fits_the_backlog_without_an_accept() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(4096);
        let burst = 300.min(somaxconn as usize);
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..burst).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures_util::future::join_all(connects).await;
        let completed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            completed, burst,
            "connects completed before 0.8 s, none accepted"
        );
        drop(listener);
    }
}
