//! The Server-Sent Events transport, for networks that block WebSocket.
//!
//! The session writes frames into a small channel; the HTTP response streams them as
//! `id:` + `data:` records (no `event:` line, so `EventSource.onmessage` sees every
//! frame, each the same JSON as on the WebSocket). The client cannot speak here, so
//! silence cannot end the session; a write that does not go through can (the
//! heartbeat's write bound), and a dropped connection is noticed when the response body
//! is dropped. When the session ends, the listener drops the connection shortly after
//! (`http::listener::ConnectionEnd`): a client that does not read would otherwise keep
//! what hyper still buffers for it.

use std::convert::Infallible;

use axum::response::sse::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Incoming, Reader, Transport, TransportClosed, Writer};
use crate::wire::{CloseReason, EventKind, Frame};

/// Frames buffered between the session and the response body; the session's own
/// queue is the real buffer (bounded in frames and bytes). Each record here is a copy
/// of its frame, so one: a reader that stalled costs one copy here, and hyper's own
/// write buffer (bounded by the listener), not sixteen.
const CHANNEL_CAPACITY: usize = 1;

pub struct SseTransport {
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

/// A transport and the event stream to hand to `axum::response::Sse`.
pub fn channel() -> (SseTransport, ReceiverStream<Result<Event, Infallible>>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    (SseTransport { tx }, ReceiverStream::new(rx))
}

/// Hears only that the response body was dropped: the client cannot speak on SSE.
pub struct SseReader {
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

impl Transport for SseTransport {
    const NAME: &'static str = "sse";
    const HEARS_CLIENT: bool = false;
    type Writer = Self;
    type Reader = SseReader;

    fn split(self) -> (Self, SseReader) {
        let tx = self.tx.clone();
        (self, SseReader { tx })
    }
}

impl SseTransport {
    /// Writes one frame as a record, with `id` as its `id:` line (none: no line).
    pub(super) async fn send_record(
        &mut self,
        frame: &Frame,
        id: Option<String>,
    ) -> Result<(), TransportClosed> {
        let mut event = Event::default().data(frame.as_str());
        if let Some(id) = id {
            event = event.id(id);
        }
        self.tx
            .send(Ok(event))
            .await
            .map_err(|_| TransportClosed("SSE client gone".into()))
    }
}

impl Writer for SseTransport {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportClosed> {
        for frame in frames {
            let id = match frame.id() {
                Some(id) => Some(id.to_string()),
                // A snapshot of a project with no history: an empty `id:` clears the
                // browser's stale Last-Event-ID (HTML standard, SSE "id" field).
                None if frame.kind() == EventKind::Snapshot => Some(String::new()),
                None => None,
            };
            self.send_record(frame, id).await?;
        }
        Ok(())
    }

    async fn close(&mut self, _reason: CloseReason) {
        // SSE has no close frame: ending the stream is the close. The client's
        // EventSource reconnects with Last-Event-ID by itself.
    }
}

impl Reader for SseReader {
    async fn recv(&mut self) -> Incoming {
        self.tx.closed().await;
        Incoming::Closed
    }
}
