//! The error frame's compatibility shape, in one place: front ends written against the
//! product's error-code catalog read a top-level `type` and `project_id` and an `error`
//! object (`code`, `message`, ...: the same facts as `data`). The publish path stores
//! the top-level fields with the frame ([`top_level`]); the `error` object repeats
//! `data` (message and details twice), so it is not stored but added on the way to
//! clients ([`complete`], from `Frame::from_published`).

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value};

use super::{InvalidPayload, ProjectId};

/// The top-level fields an error frame is published with: `type` and `project_id`.
pub fn top_level(project: &ProjectId) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("type".into(), "error".into());
    map.insert("project_id".into(), project.as_str().into());
    map
}

/// The error frame with its `error` object: the same facts as `data`. A payload that
/// has an `error` field already (even `null`) is kept as it is.
pub(super) fn complete(text: Utf8Bytes) -> Result<Utf8Bytes, InvalidPayload> {
    let frame: Value = serde_json::from_str(&text)?;
    if frame.get("error").is_some() {
        return Ok(text);
    }
    let d = &frame["data"];
    let error = serde_json::json!({
        "code": d["error_code"],
        "message": d["message"],
        "stage": d["stage"],
        "is_retryable": d["is_retryable"],
        "details": d["details"],
        "solutions": d["solutions"],
        "trace_id": d["trace_id"],
        "timestamp": d["timestamp"],
    });
    let open = text.trim_end();
    let open = open.strip_suffix('}').ok_or(InvalidPayload::NotObject)?;
    Ok(Utf8Bytes::from(format!("{open},\"error\":{error}}}")))
}
