//! Server → client frames: `{"event": <name>, "data": {...}}`, encoded exactly once.
//!
//! A `Frame` holds its JSON text as shared bytes: the hub encodes (or validates) a frame
//! once and every recipient's queue holds a reference to the same bytes, so fan-out
//! costs a reference-count bump per client, never a copy or a re-encode.

use std::time::{Instant, SystemTime};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stall::{StallReason, StalledData};
use super::{EventId, EventKind, ProjectId, ProjectState, SubscriptionErrorCode, Tag, now_iso8601};

/// Why a published payload cannot be forwarded. Logged and counted, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPayload {
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is not a JSON object with a string \"event\": {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("payload is not a JSON object")]
    NotObject,
}

/// `connected`: the first frame of every session.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ConnectedData {
    pub project_id: String,
    pub timestamp: String,
    /// Seconds between `ping` frames.
    pub heartbeat_interval: u64,
    /// A `last_event_id` was given.
    pub resumed: bool,
    /// Every event after the client's position follows (see docs/PROTOCOL.md).
    pub recovered: bool,
}

/// A tag subscription's `subscribed`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct TagSubscribedData {
    /// How many `project_state` frames its snapshot holds (they follow at once).
    pub projects: usize,
}

/// `connected` on a multiplexed connection (`GET /api/v1/progress`): no project yet.
#[derive(Serialize, schemars::JsonSchema)]
pub struct MultiplexedConnectedData {
    pub timestamp: String,
    /// Seconds between `ping` frames (one heartbeat per connection).
    pub heartbeat_interval: u64,
}

/// `subscribed`: a project subscription's `connected` (its frame's top-level
/// `project_id` names the project).
#[derive(Serialize, schemars::JsonSchema)]
pub struct SubscribedData {
    /// A `last_event_id` was given.
    pub resumed: bool,
    /// Every event after the client's position follows (see docs/PROTOCOL.md).
    pub recovered: bool,
}

/// `subscription_error`: a client frame refused; the connection and its other
/// subscriptions go on.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SubscriptionErrorData {
    pub code: SubscriptionErrorCode,
    pub message: String,
}

/// `snapshot`: the project's state, and whether the client's position was recovered.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SnapshotData<'a> {
    #[serde(flatten)]
    pub state: &'a ProjectState,
    pub recovered: bool,
}

/// `ping` and `pong`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct TimestampData {
    pub timestamp: String,
}

/// `broker_status`: whether the hub reaches its broker. While `available` is false,
/// events published through the broker wait (or fail) and none reach the session; the
/// `true` that follows the outage comes after the events missed meanwhile.
#[derive(Serialize, schemars::JsonSchema)]
pub struct BrokerStatusData {
    pub available: bool,
    pub timestamp: String,
}

/// One encoded frame, cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Frame {
    kind: EventKind,
    /// Present on events that went through the hub's publish path.
    id: Option<EventId>,
    /// When it was published, as its publisher says (`data.timestamp`): a claim, not
    /// a measurement (a publisher's clock may be off, or the time backdated).
    published_at: Option<SystemTime>,
    /// When the hub received it (from the broker or a history read), for the delivery
    /// latency metric: a clock the hub can trust.
    received_at: Option<Instant>,
    /// On a multiplexed connection, the subscription it belongs to (0: none): the
    /// slow-consumer policy coalesces only frames of one subscription.
    stream: u32,
    text: Utf8Bytes,
}

/// Only the fields the hub reads from a published payload; the rest pass through as bytes.
#[derive(Deserialize)]
struct PublishedProbe<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    /// Any JSON: a legacy publisher may use `id` for something else; only a string in
    /// our `<epoch>:<seq>` form is taken as a position.
    #[serde(default)]
    id: Option<Value>,
    /// Only `data.timestamp`, read leniently: whatever else `data` holds passes through.
    #[serde(default)]
    data: DataProbe,
    /// Top-level `type` and `error`: see [`Frame::from_published`].
    #[serde(default, rename = "type", borrow)]
    tag: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// The publish time of a frame, if its `data` is an object with a string `timestamp`.
/// Anything else (a legacy payload's `data` may be any JSON) simply yields none.
#[derive(Default)]
struct DataProbe(Option<SystemTime>);

impl<'de> Deserialize<'de> for DataProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> serde::de::Visitor<'de> for DataVisitor {
    type Value = DataProbe;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<DataProbe, A::Error> {
        let mut at = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "timestamp" {
                at = map.next_value::<Option<Value>>()?.and_then(|v| match v {
                    Value::String(ts) => chrono::DateTime::parse_from_rfc3339(&ts)
                        .ok()
                        .map(SystemTime::from),
                    _ => None,
                });
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(DataProbe(at))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<DataProbe, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(DataProbe(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
    fn visit_unit<E>(self) -> Result<DataProbe, E> {
        Ok(DataProbe(None))
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    event: &'a str,
    data: T,
}

/// At most 64 characters of what a client sent.
fn at_most_64(raw: &str) -> &str {
    match raw.char_indices().nth(64) {
        Some((end, _)) => &raw[..end],
        None => raw,
    }
}

impl Frame {
    /// Accepts a payload published on a project's channel: it must be a JSON object
    /// with a string `event`. The bytes are kept exactly as published, but for one case:
    /// an `error` event of the publish path (our id, top-level `"type":"error"`) is
    /// published and kept in history without its `error` compatibility object, which
    /// repeats `data`'s facts (`message` and `details` twice would double what history
    /// holds); it is added here, once per frame, on the way to clients.
    pub fn from_published(payload: Bytes) -> Result<Self, InvalidPayload> {
        let text = Utf8Bytes::try_from(payload).map_err(|_| InvalidPayload::NotUtf8)?;
        // serde would also accept a JSON array for a struct; the contract wants an object.
        if !text.trim_start().starts_with('{') {
            return Err(InvalidPayload::NotObject);
        }
        let probe: PublishedProbe<'_> = serde_json::from_str(&text)?;
        let id: Option<EventId> = match &probe.id {
            Some(Value::String(id)) => id.parse().ok(),
            _ => None,
        };
        let kind = EventKind::from_name(&probe.event);
        let published_at = probe.data.0;
        let compat_due = kind == EventKind::Error
            && id.is_some()
            && probe.tag.as_deref() == Some("error")
            && probe.error.is_none();
        let text = if compat_due {
            super::error_compat::complete(text)?
        } else {
            text
        };
        Ok(Self {
            kind,
            id,
            published_at,
            received_at: Some(Instant::now()),
            stream: 0,
            text,
        })
    }

    /// Encodes a frame the hub itself sends.
    pub fn encode(kind: EventKind, data: &impl Serialize) -> Self {
        let envelope = Envelope {
            event: kind.name(),
            data,
        };
        // Serializing plain data structs and `serde_json::Value` into a String cannot fail:
        // there are no maps with non-string keys and no failing `Serialize` impls here.
        let text = serde_json::to_string(&envelope).unwrap_or_else(|_| String::from("{}"));
        Self {
            kind,
            id: None,
            published_at: None,
            received_at: None,
            stream: 0,
            text: Utf8Bytes::from(text),
        }
    }

    /// This frame on a multiplexed connection: with a top-level `"project_id"` (added
    /// in front, or replaced if the frame has another), in subscription `stream`.
    pub fn for_subscription(&self, project: &ProjectId, stream: u32) -> Self {
        #[derive(Deserialize)]
        struct TopLevel {
            #[serde(default)]
            project_id: Option<Value>,
        }
        let text = self.as_str();
        let present = serde_json::from_str::<TopLevel>(text)
            .ok()
            .and_then(|t| t.project_id);
        let text = match present {
            Some(Value::String(id)) if id == project.as_str() => self.text.clone(),
            None => match text.trim_start().strip_prefix('{') {
                Some(rest) => {
                    let comma = if rest.trim_start().starts_with('}') {
                        ""
                    } else {
                        ","
                    };
                    // Project ids are `[A-Za-z0-9_-]`: nothing to escape.
                    Utf8Bytes::from(format!(r#"{{"project_id":"{project}"{comma}{rest}"#))
                }
                None => self.text.clone(),
            },
            Some(_) => match serde_json::from_str::<serde_json::Map<String, Value>>(text) {
                Ok(mut map) => {
                    map.insert("project_id".into(), project.as_str().into());
                    Utf8Bytes::from(Value::Object(map).to_string())
                }
                Err(_) => self.text.clone(),
            },
        };
        Self {
            stream,
            text,
            ..self.clone()
        }
    }

    /// Which subscription of a multiplexed connection this frame belongs to (0: none).
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// `connected` on a multiplexed connection.
    pub fn connected_multiplexed(heartbeat_interval_secs: u64) -> Self {
        let data = MultiplexedConnectedData {
            timestamp: now_iso8601(),
            heartbeat_interval: heartbeat_interval_secs,
        };
        Self::encode(EventKind::Connected, &data)
    }

    /// A subscription's `connected` (tag it with [`Frame::for_subscription`]).
    pub fn subscribed(resumed: bool, recovered: bool) -> Self {
        Self::encode(
            EventKind::Subscribed,
            &SubscribedData { resumed, recovered },
        )
    }

    /// The answer to `unsubscribe`: nothing of the project follows it.
    pub fn unsubscribed(project: &ProjectId) -> Self {
        Self::encode(EventKind::Unsubscribed, &serde_json::json!({})).for_subscription(project, 0)
    }

    /// A refused client frame; `project_id`, when the frame named one (as sent; at most
    /// 64 characters of it).
    pub fn subscription_error(project_id: Option<&str>, code: SubscriptionErrorCode) -> Self {
        let data = SubscriptionErrorData {
            code,
            message: code.message().to_string(),
        };
        Self::addressed(
            EventKind::SubscriptionError,
            project_id.map(at_most_64),
            None,
            &data,
        )
    }

    /// A refused tag subscription (or tag unsubscribe): `tag` as sent, at most 64
    /// characters of it.
    pub fn tag_subscription_error(tag: Option<&str>, code: SubscriptionErrorCode) -> Self {
        let data = SubscriptionErrorData {
            code,
            message: code.message().to_string(),
        };
        Self::addressed(
            EventKind::SubscriptionError,
            None,
            tag.map(at_most_64),
            &data,
        )
    }

    /// A tag subscription's `subscribed`: `projects`, how many its snapshot holds.
    pub fn tag_subscribed(tag: &Tag, projects: usize) -> Self {
        let data = TagSubscribedData { projects };
        Self::addressed(EventKind::Subscribed, None, Some(tag.as_str()), &data)
    }

    /// The answer to a tag's `unsubscribe`: nothing of the tag follows it.
    pub fn tag_unsubscribed(tag: &Tag) -> Self {
        let data = serde_json::json!({});
        Self::addressed(EventKind::Unsubscribed, None, Some(tag.as_str()), &data)
    }

    /// One project's state, for a subscription to `tag`: its [`StateOfProject`](super::StateOfProject) (what
    /// `GET /api/v1/projects/{id}` answers, without watchers and stall).
    pub fn project_state(project: &ProjectId, tag: &Tag, state: &ProjectState) -> Self {
        let data = state.to_json(project);
        Self::addressed(
            EventKind::ProjectState,
            Some(project.as_str()),
            Some(tag.as_str()),
            &data,
        )
    }

    /// `{"event":...,"project_id":...,"tag":...,"data":...}` (either left out if `None`).
    fn addressed(
        kind: EventKind,
        project_id: Option<&str>,
        tag: Option<&str>,
        data: &impl Serialize,
    ) -> Self {
        #[derive(Serialize)]
        struct Addressed<'a, D> {
            event: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            project_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tag: Option<&'a str>,
            data: &'a D,
        }
        let frame = Addressed {
            event: kind.name(),
            project_id,
            tag,
            data,
        };
        let text = serde_json::to_string(&frame).unwrap_or_else(|_| String::from("{}"));
        Self {
            kind,
            id: None,
            published_at: None,
            received_at: None,
            stream: 0,
            text: Utf8Bytes::from(text),
        }
    }

    /// The late joiner's (or failed resumer's) view of the project.
    /// Its id is the state's position (the newest event it includes), so that an SSE
    /// client's `Last-Event-ID` moves to where the snapshot stands.
    pub fn snapshot(state: &ProjectState, recovered: bool) -> Self {
        let mut frame = Self::encode(EventKind::Snapshot, &SnapshotData { state, recovered });
        frame.id = state
            .last_event_id
            .as_deref()
            .and_then(|id| id.parse().ok());
        frame
    }

    /// The first frame of every session.
    pub fn connected(
        project: &ProjectId,
        heartbeat_interval_secs: u64,
        resumed: bool,
        recovered: bool,
    ) -> Self {
        let data = ConnectedData {
            project_id: project.to_string(),
            timestamp: now_iso8601(),
            heartbeat_interval: heartbeat_interval_secs,
            resumed,
            recovered,
        };
        Self::encode(EventKind::Connected, &data)
    }

    pub fn ping() -> Self {
        Self::timestamp_only(EventKind::Ping)
    }

    pub fn pong() -> Self {
        Self::timestamp_only(EventKind::Pong)
    }

    pub fn broker_status(available: bool) -> Self {
        Self::encode(
            EventKind::BrokerStatus,
            &BrokerStatusData {
                available,
                timestamp: now_iso8601(),
            },
        )
    }

    /// `stalled`: the project's running job went silent (`true`) or published again.
    pub fn stalled(stalled: bool, reason: StallReason, since: &str) -> Self {
        Self::encode(
            EventKind::Stalled,
            &StalledData {
                stalled,
                reason,
                since: since.to_string(),
                timestamp: now_iso8601(),
            },
        )
    }

    fn timestamp_only(kind: EventKind) -> Self {
        Self::encode(
            kind,
            &TimestampData {
                timestamp: now_iso8601(),
            },
        )
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    pub fn id(&self) -> Option<&EventId> {
        self.id.as_ref()
    }

    pub fn published_at(&self) -> Option<SystemTime> {
        self.published_at
    }

    /// When the hub received this published frame (`None` for the hub's own frames).
    pub fn received_at(&self) -> Option<Instant> {
        self.received_at
    }

    pub fn text(&self) -> &Utf8Bytes {
        &self.text
    }

    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// Its size in bytes, as encoded (what a queue holding it is charged).
    #[allow(clippy::len_without_is_empty, reason = "a frame is never empty")]
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// The frame as a JSON value, for tests and diagnostics (not on the hot path).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(s: &str) -> Result<Frame, InvalidPayload> {
        Frame::from_published(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn keeps_published_bytes_unchanged() {
        let raw = r#"{"event":"log","data":{"level":"INFO","message":"[1/15] 段落 1"},"x":1}"#;
        let frame = published(raw).unwrap();
        assert_eq!(frame.as_str(), raw);
        assert_eq!(frame.kind(), EventKind::Log);
    }

    #[test]
    fn only_a_publish_path_error_frame_without_error_gets_it() {
        let stored = r#"{"event":"error","id":"ep:2","data":{"error_code":"X","message":"m","details":{"k":1}},"project_id":"p","type":"error"}"#;
        let v = published(stored).unwrap().to_value();
        assert_eq!(v["error"]["code"], "X");
        assert_eq!(v["error"]["message"], "m");
        assert_eq!(v["error"]["details"]["k"], 1);
        assert_eq!(v["project_id"], "p");
        // Kept byte for byte: a legacy one (no id of ours), one that has `error` (even
        // null), one without `"type":"error"`, and any other event.
        for raw in [
            r#"{"event":"error","data":{"message":"m"},"type":"error"}"#,
            r#"{"event":"error","id":"ep:2","data":{"message":"m"},"type":"error","error":null}"#,
            r#"{"event":"error","id":"ep:2","data":{"message":"m"}}"#,
            r#"{"event":"log","id":"ep:2","data":{"message":"m"},"type":"error"}"#,
        ] {
            assert_eq!(published(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn reads_the_event_id_when_it_is_ours() {
        let f = published(r#"{"event":"log","id":"ep:5","data":{}}"#).unwrap();
        assert_eq!(f.id(), Some(&EventId::new("ep", 5)));
        for foreign in [
            r#"{"event":"log","id":5}"#,
            r#"{"event":"log","id":"x"}"#,
            r#"{"event":"log","id":{"a":1}}"#,
        ] {
            let f = published(foreign).unwrap();
            assert_eq!(f.id(), None, "{foreign}");
        }
    }

    #[test]
    fn reads_the_publish_time_leniently() {
        let f = published(
            r#"{"event":"log","data":{"x":[1,{"a":2}],"timestamp":"2025-10-19T10:35:00.5Z"}}"#,
        )
        .unwrap();
        let at = f.published_at().unwrap();
        let expected = chrono::DateTime::parse_from_rfc3339("2025-10-19T10:35:00.5Z").unwrap();
        assert_eq!(at, SystemTime::from(expected));
        for other in [
            r#"{"event":"log","data":"text"}"#,
            r#"{"event":"log","data":[1,2]}"#,
            r#"{"event":"log","data":null}"#,
            r#"{"event":"log","data":3.5}"#,
            r#"{"event":"log","data":true}"#,
            r#"{"event":"log","data":{"timestamp":5}}"#,
            r#"{"event":"log","data":{"timestamp":"yesterday"}}"#,
            r#"{"event":"log"}"#,
        ] {
            assert_eq!(published(other).unwrap().published_at(), None, "{other}");
        }
    }

    #[test]
    fn unknown_event_names_are_forwarded_as_other() {
        assert_eq!(
            published(r#"{"event":"custom"}"#).unwrap().kind(),
            EventKind::Other
        );
    }

    #[test]
    fn refuses_payloads_that_are_not_event_objects() {
        assert!(matches!(
            published("not json"),
            Err(InvalidPayload::NotObject)
        ));
        assert!(matches!(
            published("{not json"),
            Err(InvalidPayload::Malformed(_))
        ));
        assert!(matches!(
            published(r#"["log"]"#),
            Err(InvalidPayload::NotObject)
        ));
        assert!(matches!(published("42"), Err(InvalidPayload::NotObject)));
        assert!(matches!(
            published(r#"{"data":{}}"#),
            Err(InvalidPayload::Malformed(_))
        ));
        assert!(matches!(
            published(r#"{"event":5}"#),
            Err(InvalidPayload::Malformed(_))
        ));
        assert!(matches!(
            published(r#"{"event":"log""#),
            Err(InvalidPayload::Malformed(_))
        ));
        assert!(matches!(
            Frame::from_published(Bytes::from_static(b"{\"event\":\"\xff\"}")),
            Err(InvalidPayload::NotUtf8)
        ));
    }

    #[test]
    fn escaped_event_names_are_understood() {
        assert_eq!(
            published(r#"{"event":"lo\u0067"}"#).unwrap().kind(),
            EventKind::Log
        );
    }

    #[test]
    fn connected_frame_has_contract_fields() {
        let p = ProjectId::parse("p1").unwrap();
        let v = Frame::connected(&p, 30, false, true).to_value();
        assert_eq!(v["event"], "connected");
        assert_eq!(v["data"]["project_id"], "p1");
        assert_eq!(v["data"]["heartbeat_interval"], 30);
        assert_eq!(v["data"]["resumed"], false);
        assert_eq!(v["data"]["recovered"], true);
        assert!(v["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_subscriptions_frames_carry_its_project_id_once() {
        let p = ProjectId::parse("p1").unwrap();
        let tag = |raw: &str| published(raw).unwrap().for_subscription(&p, 7);
        let f = tag(r#"{"event":"log","id":"e:1","data":{"n":1}}"#);
        assert_eq!(
            f.as_str(),
            r#"{"project_id":"p1","event":"log","id":"e:1","data":{"n":1}}"#
        );
        assert_eq!(f.stream(), 7);
        assert_eq!(f.id(), Some(&EventId::new("e", 1)));
        assert_eq!(f.kind(), EventKind::Log);
        // Already there (the publish path's error frames): kept as it is.
        let same = r#"{"event":"error","data":{},"project_id":"p1"}"#;
        assert_eq!(tag(same).as_str(), same);
        // Another project's id, or not a string: replaced, once.
        for raw in [
            r#"{"event":"log","data":{},"project_id":"other"}"#,
            r#"{"event":"log","data":{},"project_id":5}"#,
        ] {
            let v = tag(raw).to_value();
            assert_eq!(v["project_id"], "p1", "{raw}");
            assert_eq!(tag(raw).as_str().matches("project_id").count(), 1);
        }
        let v = Frame::subscribed(true, false)
            .for_subscription(&p, 1)
            .to_value();
        assert_eq!(
            v,
            serde_json::json!({"project_id":"p1","event":"subscribed","data":{"resumed":true,"recovered":false}})
        );
    }

    #[test]
    fn a_refusal_names_its_code_and_at_most_64_characters_of_the_id() {
        let v = Frame::subscription_error(
            Some(&"é".repeat(100)),
            SubscriptionErrorCode::InvalidProjectId,
        )
        .to_value();
        assert_eq!(v["event"], "subscription_error");
        assert_eq!(v["project_id"].as_str().unwrap().chars().count(), 64);
        assert_eq!(v["data"]["code"], "INVALID_PROJECT_ID");
        let v = Frame::subscription_error(None, SubscriptionErrorCode::InvalidFrame).to_value();
        assert!(v.get("project_id").is_none());
        assert_eq!(v["data"]["code"], "INVALID_FRAME");
    }

    #[test]
    fn every_kind_round_trips_its_name() {
        for kind in [
            EventKind::Connected,
            EventKind::Snapshot,
            EventKind::ProgressUpdate,
            EventKind::StageChange,
            EventKind::Log,
            EventKind::Error,
            EventKind::Complete,
            EventKind::Ping,
            EventKind::Pong,
            EventKind::BrokerStatus,
            EventKind::Subscribed,
            EventKind::Unsubscribed,
            EventKind::SubscriptionError,
        ] {
            assert_eq!(EventKind::from_name(kind.name()), kind);
        }
        assert!(EventKind::ProgressUpdate.is_superseded_by_newer());
        assert!(!EventKind::Log.is_superseded_by_newer());
    }
}
