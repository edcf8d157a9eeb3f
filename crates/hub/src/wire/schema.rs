//! The JSON Schema of every server → client frame, generated from the same Rust types
//! that produce the frames, so the published schema cannot drift from the wire.

use schemars::JsonSchema;
use serde_json::Value;

use super::event::{Complete, ErrorReport, Log, ProgressUpdate, StageChange};
use super::frame::{
    BrokerStatusData, ConnectedData, MultiplexedConnectedData, SubscribedData,
    SubscriptionErrorData, TagSubscribedData, TimestampData,
};
use super::stall::StalledData;
use super::{ProjectState, StateOfProject};

/// `snapshot` data as a schema type (the frame itself borrows the state).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SnapshotFrameData {
    #[serde(flatten)]
    state: ProjectState,
    recovered: bool,
}

/// `connected` on a project's stream, or (no project) on a multiplexed connection.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ConnectedFrameData {
    Project(ConnectedData),
    Multiplexed(MultiplexedConnectedData),
}

/// `subscribed` of a project subscription, or of a tag subscription.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SubscribedFrameData {
    Project(SubscribedData),
    Tag(TagSubscribedData),
}

/// `unsubscribed` carries nothing but its top-level `project_id`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct EmptyData {}

/// Every frame the hub sends: `{"event": <name>, "data": {...}}`, plus `id` on events of
/// the publish path (and, on `error`, the catalog-shaped `type`/`project_id`/`error`).
/// On a multiplexed connection (`/api/v1/progress`) every frame of a subscription, and
/// `subscribed`, `unsubscribed` and most `subscription_error`s, carry a top-level
/// `project_id` (a tag subscription's: a top-level `tag`; its `project_state`: both;
/// the subscription to every project has the reserved tag `*`).
/// Unknown top-level fields must be ignored.
#[derive(JsonSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
#[allow(dead_code)]
enum ServerFrame {
    Connected(ConnectedFrameData),
    Snapshot(SnapshotFrameData),
    ProgressUpdate(ProgressUpdate),
    StageChange(StageChange),
    Log(Log),
    Error(ErrorReport),
    Complete(Complete),
    Ping(TimestampData),
    Pong(TimestampData),
    BrokerStatus(BrokerStatusData),
    /// The project's running job went silent for longer than `--stall-after`, or
    /// published again (no id, not in the history).
    Stalled(StalledData),
    Subscribed(SubscribedFrameData),
    Unsubscribed(EmptyData),
    SubscriptionError(SubscriptionErrorData),
    /// A tag subscription's view of one project (top-level `project_id` and `tag`).
    ProjectState(StateOfProject<'static>),
}

/// The schema served at `/api/v1/schema/events.json`.
pub fn events_schema() -> Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(ServerFrame)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.insert("title".into(), "progress-hub server frames (v1)".into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_event() {
        let text = events_schema().to_string();
        for name in [
            "connected",
            "snapshot",
            "progress_update",
            "stage_change",
            "log",
            "error",
            "complete",
            "ping",
            "pong",
            "broker_status",
            "stalled",
            "subscribed",
            "unsubscribed",
            "subscription_error",
            "project_state",
        ] {
            assert!(text.contains(&format!("\"{name}\"")), "{name}");
        }
        assert!(text.contains("GEMINI_QUOTA_EXCEEDED"));
        assert!(text.contains("TOO_MANY_SUBSCRIPTIONS"));
    }
}
