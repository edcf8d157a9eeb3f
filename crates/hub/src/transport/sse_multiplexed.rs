//! Server-Sent Events for a multiplexed connection (`GET /api/v1/progress/events`): the
//! SSE transport ([`super::sse`]: its records, its one-record channel, its end when the
//! body is dropped), with two differences.
//!
//! - The client cannot send `subscribe` frames, so the request's subscriptions are
//!   heard first, as if it had sent them ([`MultiplexedSseReader`]); the multiplexed
//!   session answers them as it answers a WebSocket's.
//! - A record's `id:` holds every project's position ([`Positions`]): a frame that moves
//!   its project's position (an event, a snapshot) writes them all, so the browser's
//!   `Last-Event-ID` resumes every subscription at once. Other frames carry no `id:`.

use std::collections::HashMap;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;

use super::sse::{SseReader, SseTransport};
use super::{Incoming, Reader, Transport, TransportClosed, Writer};
use crate::wire::positions::Positions;
use crate::wire::{CloseReason, EventKind, Frame};

/// A multiplexed SSE connection: the SSE transport, the client frames that stand for
/// the request's subscriptions, and the projects' positions.
pub struct MultiplexedSse {
    sse: SseTransport,
    subscribes: Vec<Utf8Bytes>,
    places: HashMap<String, usize>,
    positions: Positions,
}

impl MultiplexedSse {
    /// `projects`: the request's list, in its order (the places of `positions`);
    /// `subscribes`: the client frames the request stands for, heard in order.
    pub fn new(
        sse: SseTransport,
        projects: &[&str],
        positions: Positions,
        subscribes: Vec<Utf8Bytes>,
    ) -> Self {
        let mut places = HashMap::with_capacity(projects.len());
        for (place, project) in projects.iter().enumerate() {
            places.entry((*project).to_string()).or_insert(place);
        }
        Self {
            sse,
            subscribes,
            places,
            positions,
        }
    }
}

pub struct MultiplexedSseWriter {
    sse: SseTransport,
    places: HashMap<String, usize>,
    positions: Positions,
    /// Each subscription's place in the list, once learnt from its first frame.
    streams: HashMap<u32, usize>,
}

pub struct MultiplexedSseReader {
    subscribes: std::vec::IntoIter<Utf8Bytes>,
    sse: SseReader,
}

impl Transport for MultiplexedSse {
    const NAME: &'static str = "sse";
    const HEARS_CLIENT: bool = false;
    type Writer = MultiplexedSseWriter;
    type Reader = MultiplexedSseReader;

    fn split(self) -> (MultiplexedSseWriter, MultiplexedSseReader) {
        let (sse, reader) = self.sse.split();
        (
            MultiplexedSseWriter {
                sse,
                places: self.places,
                positions: self.positions,
                streams: HashMap::new(),
            },
            MultiplexedSseReader {
                subscribes: self.subscribes.into_iter(),
                sse: reader,
            },
        )
    }
}

impl MultiplexedSseWriter {
    /// The place of the frame's project in the list, if the frame moves its position.
    fn place_of(&mut self, frame: &Frame) -> Option<usize> {
        if frame.stream() == 0 || (frame.id().is_none() && frame.kind() != EventKind::Snapshot) {
            return None;
        }
        if let Some(place) = self.streams.get(&frame.stream()) {
            return Some(*place);
        }
        let place = *self.places.get(project_of(frame.as_str())?)?;
        self.streams.insert(frame.stream(), place);
        Some(place)
    }
}

/// The top-level `project_id` of a subscription's frame: `for_subscription` writes it
/// first, so it is read without parsing the rest (or, where it replaced another, by
/// parsing the top level).
fn project_of(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix(r#"{"project_id":""#) {
        return rest.split_once('"').map(|(project, _)| project);
    }
    #[derive(Deserialize)]
    struct TopLevel<'a> {
        #[serde(borrow)]
        project_id: Option<&'a str>,
    }
    serde_json::from_str::<TopLevel<'_>>(text).ok()?.project_id
}

impl Writer for MultiplexedSseWriter {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportClosed> {
        for frame in frames {
            let id = self.place_of(frame).map(|place| {
                self.positions.set(place, frame.id().cloned());
                self.positions.encode()
            });
            self.sse.send_record(frame, id).await?;
        }
        Ok(())
    }

    async fn close(&mut self, reason: CloseReason) {
        self.sse.close(reason).await;
    }
}

impl Reader for MultiplexedSseReader {
    async fn recv(&mut self) -> Incoming {
        match self.subscribes.next() {
            Some(subscribe) => Incoming::Text(subscribe),
            None => self.sse.recv().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EventId, ProjectId};
    use bytes::Bytes;

    #[test]
    fn reads_the_project_of_a_tagged_frame() {
        let event = r#"{"event":"log","id":"e:1","data":{}}"#;
        let frame = Frame::from_published(Bytes::from(event)).unwrap();
        let tagged = frame.for_subscription(&ProjectId::parse("p-1").unwrap(), 4);
        assert_eq!(project_of(tagged.as_str()), Some("p-1"));
        assert_eq!(project_of(r#"{"event":"log","project_id":"q"}"#), Some("q"));
        assert_eq!(project_of(r#"{"event":"ping"}"#), None);
    }

    #[tokio::test]
    async fn an_event_writes_every_position() {
        let (sse, mut stream) = super::super::sse::channel();
        let positions = Positions::new("a,b", 2);
        let transport = MultiplexedSse::new(sse, &["a", "b"], positions.clone(), Vec::new());
        let (mut writer, _reader) = transport.split();
        let event = |seq: u64| {
            let text = format!(r#"{{"event":"log","id":"e:{seq}","data":{{}}}}"#);
            Frame::from_published(Bytes::from(text)).unwrap()
        };
        let b = ProjectId::parse("b").unwrap();
        let frames = [
            event(3).for_subscription(&b, 2),
            Frame::subscribed(false, true).for_subscription(&b, 2),
        ];
        let sending = tokio::spawn(async move { writer.send(&frames).await.is_ok() });
        use futures_util::StreamExt;
        let mut expected = positions;
        expected.set(1, Some(EventId::new("e", 3)));
        let first = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(first.contains(&expected.encode()), "{first}");
        let second = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(!second.contains("id:"), "no position moved: {second}");
        assert!(sending.await.unwrap());
    }
}
