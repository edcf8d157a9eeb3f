//! Transports: thin adapters that move frames between a session and a socket.
//!
//! The session logic (heartbeat, queue, close reasons) lives once in `session`; a
//! transport only knows how to write frames, read what the client says, and close.

#[cfg(test)]
pub mod channel;
pub mod sse;
pub mod sse_multiplexed;
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
    /// A violation of the WebSocket protocol (close 1002).
    ProtocolError,
    /// A text frame that is not UTF-8 (close 1007).
    InvalidUtf8,
    /// The client closed, or the connection broke.
    Closed,
}

/// The socket is gone; nothing more can be written.
#[derive(Debug, thiserror::Error)]
#[error("transport closed: {0}")]
pub struct TransportClosed(pub String);

/// A client connection, split in two so that each half has a task of its own: the
/// session's task writes, a reader task listens. The writer then wakes only when it has
/// frames to send, and the reader only when the client speaks.
pub trait Transport: Send + 'static {
    /// `websocket` or `sse`, for metrics and logs.
    const NAME: &'static str;

    /// Whether the client can speak on this transport (WebSocket) or only listen (SSE);
    /// the heartbeat timeout applies only to the former.
    const HEARS_CLIENT: bool;

    type Writer: Writer;
    type Reader: Reader;

    fn split(self) -> (Self::Writer, Self::Reader);
}

pub trait Writer: Send {
    /// Writes frames in order, then flushes.
    fn send(
        &mut self,
        frames: &[Frame],
    ) -> impl Future<Output = Result<(), TransportClosed>> + Send;

    /// Ends the connection, telling the client why where the transport can.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;
}

pub trait Reader: Send + 'static {
    /// Waits for the client's next frame.
    fn recv(&mut self) -> impl Future<Output = Incoming> + Send;
}
