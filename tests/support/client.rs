//! A real WebSocket client, and the reads tests make of it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::PATIENCE;

/// A real WebSocket client.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the client saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(Value),
    Close(Option<(u16, String)>),
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Self { ws }
    }

    /// Connects and reads the `connected` frame.
    pub async fn connected(url: &str) -> Self {
        let mut client = Self::connect(url).await;
        let first = client.next_json().await;
        assert_eq!(first["event"], "connected", "{first}");
        client
    }

    /// The next text frame or close, whatever it is.
    pub async fn next_seen(&mut self) -> Seen {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Seen::Frame(serde_json::from_str(&t).expect("frames are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Seen::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Seen::Close(None),
            }
        }
    }

    /// The next text frame as raw text, skipping control frames and the hub's
    /// `broker_status` frames (which outage tests may see at any point).
    pub async fn next_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("no protocol error");
            if let Message::Text(t) = msg
                && !t.starts_with(r#"{"event":"broker_status""#)
            {
                return t.to_string();
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next_seen().await {
            Seen::Frame(v) => v,
            Seen::Close(c) => panic!("expected a frame, got close {c:?}"),
        }
    }

    /// Connects with `?last_event_id=` and reads the `connected` frame.
    pub async fn resume(url: &str, last_event_id: &str) -> (Self, Value) {
        let mut client = Self::connect(&format!("{url}?last_event_id={last_event_id}")).await;
        let first = client.next_json().await;
        assert_eq!(first["event"], "connected", "{first}");
        (client, first)
    }

    /// The next frame that is not a `ping` or a `broker_status` (which outage tests
    /// may see at any point; `tests/it/first_hour.rs` checks them).
    pub async fn next_event(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v["event"] != "ping" && v["event"] != "broker_status" {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code (None: no close frame).
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_seen().await {
                Seen::Frame(_) => continue,
                Seen::Close(c) => return c.map(|(code, _)| code),
            }
        }
    }

    /// Reads frames until `complete` (inclusive), skipping pings and the opening frames
    /// (`connected`, `snapshot`), waiting up to `patience` for each (as long as an outage
    /// may take, when one is under way).
    pub async fn until_complete(&mut self, patience: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = tokio::time::timeout(patience, self.next_event())
                .await
                .expect("the run goes on to its complete");
            if matches!(frame["event"].as_str(), Some("connected" | "snapshot")) {
                continue;
            }
            let done = frame["event"] == "complete";
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Read until the server acknowledges, so the hub has seen the close.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }
}

/// Reads `id:`/`data:` records from an SSE response.
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    pub async fn next(&mut self) -> (Option<String>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let record: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in record.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                let frame: Value = serde_json::from_str(&data).unwrap();
                if frame["event"] == "ping" {
                    continue;
                }
                return (id, frame);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("an SSE record in time")
                .expect("stream open")
                .expect("no error");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
