//! The JSON Schema of every server → client frame, generated from the same Rust types
//! that produce the frames, so the published schema cannot drift from the wire.

use schemars::JsonSchema;
use serde_json::Value;

use super::ProjectState;
use super::event::{Complete, ErrorReport, Log, ProgressUpdate, StageChange};
use super::frame::{BrokerStatusData, ConnectedData, TimestampData};

/// `snapshot` data as a schema type (the frame itself borrows the state).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SnapshotFrameData {
    #[serde(flatten)]
    state: ProjectState,
    recovered: bool,
}

/// Every frame the hub sends: `{"event": <name>, "data": {...}}`, plus `id` on events of
/// the publish path (and, on `error`, the catalog-shaped `type`/`project_id`/`error`).
/// Unknown top-level fields must be ignored.
#[derive(JsonSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
#[allow(dead_code)]
enum ServerFrame {
    Connected(ConnectedData),
    Snapshot(SnapshotFrameData),
    ProgressUpdate(ProgressUpdate),
    StageChange(StageChange),
    Log(Log),
    Error(ErrorReport),
    Complete(Complete),
    Ping(TimestampData),
    Pong(TimestampData),
    BrokerStatus(BrokerStatusData),
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
        ] {
            assert!(text.contains(&format!("\"{name}\"")), "{name}");
        }
        assert!(text.contains("GEMINI_QUOTA_EXCEEDED"));
    }
}
