//! A transport over in-process channels, so the session logic can be unit-tested
//! without a socket (the habit of axum's `testing-websockets` example: the session is
//! generic over its transport, and a test plays the client through two channels).

use tokio::sync::mpsc;

use super::{Incoming, Reader, Transport, TransportClosed, Writer};
use crate::wire::{CloseReason, Frame};

/// What the session wrote to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Frame(String),
    Close(CloseReason),
}

/// The server's end, handed to the session.
#[derive(Debug)]
pub struct ChannelTransport {
    written: mpsc::UnboundedSender<Written>,
    said: mpsc::UnboundedReceiver<Incoming>,
}

/// The test's end: what the session wrote, and a way to speak as the client.
#[derive(Debug)]
pub struct FakeClient {
    pub written: mpsc::UnboundedReceiver<Written>,
    pub say: mpsc::UnboundedSender<Incoming>,
}

/// A connected pair. Dropping the client's `say` is the client going away.
pub fn pair() -> (ChannelTransport, FakeClient) {
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let (say_tx, say_rx) = mpsc::unbounded_channel();
    (
        ChannelTransport {
            written: written_tx,
            said: say_rx,
        },
        FakeClient {
            written: written_rx,
            say: say_tx,
        },
    )
}

pub struct ChannelWriter(mpsc::UnboundedSender<Written>);
pub struct ChannelReader(mpsc::UnboundedReceiver<Incoming>);

impl Transport for ChannelTransport {
    const NAME: &'static str = "channel";
    const HEARS_CLIENT: bool = true;
    type Writer = ChannelWriter;
    type Reader = ChannelReader;

    fn split(self) -> (ChannelWriter, ChannelReader) {
        (ChannelWriter(self.written), ChannelReader(self.said))
    }
}

impl Writer for ChannelWriter {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportClosed> {
        for frame in frames {
            self.0
                .send(Written::Frame(frame.as_str().to_string()))
                .map_err(|_| TransportClosed("the test client is gone".into()))?;
        }
        Ok(())
    }

    async fn close(&mut self, reason: CloseReason) {
        let _ = self.0.send(Written::Close(reason));
    }
}

impl Reader for ChannelReader {
    async fn recv(&mut self) -> Incoming {
        self.0.recv().await.unwrap_or(Incoming::Closed)
    }
}
