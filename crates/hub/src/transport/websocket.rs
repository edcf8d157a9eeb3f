//! The WebSocket transport over axum's `WebSocket`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::{Incoming, Reader, Transport, TransportClosed, Writer};
use crate::wire::{CloseReason, Frame};

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct WebSocketTransport {
    socket: WebSocket,
}

impl WebSocketTransport {
    pub fn new(socket: WebSocket) -> Self {
        Self { socket }
    }
}

pub struct WebSocketWriter {
    sink: SplitSink<WebSocket, Message>,
}

pub struct WebSocketReader {
    stream: SplitStream<WebSocket>,
}

impl Transport for WebSocketTransport {
    const NAME: &'static str = "websocket";
    const HEARS_CLIENT: bool = true;
    type Writer = WebSocketWriter;
    type Reader = WebSocketReader;

    fn split(self) -> (WebSocketWriter, WebSocketReader) {
        let (sink, stream) = self.socket.split();
        (WebSocketWriter { sink }, WebSocketReader { stream })
    }
}

impl Writer for WebSocketWriter {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportClosed> {
        for frame in frames {
            self.sink
                .feed(Message::Text(frame.text().clone()))
                .await
                .map_err(|e| TransportClosed(e.to_string()))?;
        }
        self.sink
            .flush()
            .await
            .map_err(|e| TransportClosed(e.to_string()))
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.text()),
        };
        // The client may already be gone; a close frame is a courtesy, not a promise.
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, self.sink.send(Message::Close(Some(frame)))).await;
    }
}

impl Reader for WebSocketReader {
    async fn recv(&mut self) -> Incoming {
        match self.stream.next().await {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(_))) => Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
            Some(Ok(Message::Close(_))) | None => Incoming::Closed,
            Some(Err(err)) => {
                let inner = err.into_inner();
                // The socket stays writable after these, so the client hears why.
                match inner.downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Capacity(_)) => Incoming::TooLarge,
                    Some(tungstenite::Error::Protocol(_)) => Incoming::ProtocolError,
                    Some(tungstenite::Error::Utf8(_)) => Incoming::InvalidUtf8,
                    _ => Incoming::Closed,
                }
            }
        }
    }
}
