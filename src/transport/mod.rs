//! Transports: thin adapters that move frames between a session and a socket.
//!
//! The session logic (heartbeat, queue, close reasons) lives once in `session`; a
//! transport only knows how to write frames, read what the client says, and close.

pub mod sse;
pub mod websocket;

use std::future::Future;

use axum::extract::ws::Utf8Bytes;

use crate::wire::{CloseReason, Frame};

/// What arrived from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame, to be parsed as a client frame.
    Text(Utf8Bytes),
    /// A binary frame: not part of the contract, ignored.
    Binary,
    /// A protocol-level ping or pong: proof of life, answered by the transport.
    Control,
    /// A frame over the size limit.
    TooLarge,
    /// The client closed, or the connection broke.
    Closed,
}

/// The socket is gone; nothing more can be written.
#[derive(Debug, thiserror::Error)]
#[error("transport closed: {0}")]
pub struct TransportClosed(pub String);

pub trait Transport: Send {
    /// `websocket` or `sse`, for metrics and logs.
    const NAME: &'static str;

    /// Writes frames in order, then flushes.
    fn send(
        &mut self,
        frames: &[Frame],
    ) -> impl Future<Output = Result<(), TransportClosed>> + Send;

    /// Waits for the client's next frame. Must be cancel-safe: it is raced against the
    /// outbound queue and the heartbeat.
    fn recv(&mut self) -> impl Future<Output = Incoming> + Send;

    /// Ends the session, telling the client why where the transport can.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;

    /// Whether the client can speak on this transport (WebSocket) or only listen (SSE);
    /// the heartbeat timeout applies only to the former.
    fn hears_client(&self) -> bool;
}
