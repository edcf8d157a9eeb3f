//! What a webhook says: its type and its JSON body, built from an outbox entry (a run's
//! end and the project's state as it left it). Plain data, no I/O.

use serde::Serialize;

use crate::broker::outbox::OutboxEntry;
use crate::wire::ProjectState;

/// A webhook's body: `{"type", "timestamp", "data": {"project_id", ...the state}}`.
#[derive(Debug, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct WebhookBody {
    /// `job.completed`, `job.failed`, `job.cancelled`, ...: `job.` and the run's final
    /// status in lower case.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the run ended (its `complete` was published), RFC 3339 UTC.
    pub timestamp: String,
    pub data: WebhookData,
}

/// The project and its state as the `complete` left it (`GET /api/v1/projects/{id}`'s
/// fields: status, job_id, youtube_url, ...).
#[derive(Debug, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct WebhookData {
    pub project_id: String,
    /// Connections watching the project when the event was first attempted, over every
    /// hub (absent when the broker could not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchers: Option<u64>,
    /// `job.stalled` only: why the run is stalled (`silent`: it published nothing for
    /// longer than `--stall-after`; `worker_lost`: the hub's job queue saw its worker's
    /// lease run out) and since when (its last event's `updated_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(flatten)]
    pub state: ProjectState,
}

/// The webhook's type for a run that ended with `status`, taken generically (a new
/// terminal status is a new type with no change here); `None` without one.
pub fn event_type(status: Option<&str>) -> Option<String> {
    let status = status.filter(|s| !s.is_empty())?;
    Some(format!("job.{}", status.to_ascii_lowercase()))
}

/// The body of the webhook for `entry`, or `None` for an entry with no readable state.
pub fn body(entry: &OutboxEntry) -> Option<WebhookBody> {
    let (state, _) = ProjectState::from_hash(&entry.state)?;
    let kind = match &entry.kind {
        Some(kind) => kind.clone(),
        None => event_type(state.status.as_deref())?,
    };
    let stalled = entry.kind.is_some();
    let since = stalled.then(|| state.updated_at.clone()).flatten();
    let timestamp = chrono::DateTime::from_timestamp_millis(entry.enqueued_ms as i64)?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Some(WebhookBody {
        kind,
        timestamp,
        data: WebhookData {
            project_id: entry.project.to_string(),
            watchers: None,
            reason: stalled.then(|| entry.reason.clone()).flatten(),
            since,
            state,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::wire::ProjectId;

    fn entry(status: &str) -> OutboxEntry {
        let state = HashMap::from([
            ("epoch".to_string(), "ep".to_string()),
            ("seq".to_string(), "9".to_string()),
            ("status".to_string(), status.to_string()),
            ("progress".to_string(), "100".to_string()),
            ("youtube_url".to_string(), "https://youtu.be/x".to_string()),
            ("job_id".to_string(), "job-1".to_string()),
        ]);
        OutboxEntry {
            id: "1700000000000-0".into(),
            project: ProjectId::parse("p1").unwrap(),
            state,
            enqueued_ms: 1_700_000_000_000,
            kind: None,
            reason: None,
        }
    }

    #[test]
    fn the_type_follows_the_status_generically() {
        assert_eq!(
            event_type(Some("COMPLETED")).as_deref(),
            Some("job.completed")
        );
        assert_eq!(event_type(Some("FAILED")).as_deref(), Some("job.failed"));
        assert_eq!(
            event_type(Some("CANCELLED")).as_deref(),
            Some("job.cancelled")
        );
        assert_eq!(event_type(Some("")), None);
        assert_eq!(event_type(None), None);
    }

    #[test]
    fn the_body_carries_the_project_and_its_state() {
        let body = serde_json::to_value(body(&entry("COMPLETED")).unwrap()).unwrap();
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["data"]["project_id"], "p1");
        assert_eq!(body["data"]["status"], "COMPLETED");
        assert_eq!(body["data"]["job_id"], "job-1");
        assert_eq!(body["data"]["youtube_url"], "https://youtu.be/x");
        assert_eq!(body["data"]["progress"], 100);
    }

    #[test]
    fn a_stall_says_its_type_reason_and_since() {
        let mut stalled = entry("RENDERING");
        stalled
            .state
            .insert("updated_at".into(), "2023-11-14T22:10:00.000Z".into());
        stalled.kind = Some("job.stalled".into());
        stalled.reason = Some("silent".into());
        let told = serde_json::to_value(body(&stalled).unwrap()).unwrap();
        assert_eq!(told["type"], "job.stalled");
        assert_eq!(told["data"]["reason"], "silent");
        assert_eq!(told["data"]["since"], "2023-11-14T22:10:00.000Z");
        assert_eq!(told["data"]["status"], "RENDERING");
        let ended = serde_json::to_value(body(&entry("COMPLETED")).unwrap()).unwrap();
        assert!(ended["data"].get("reason").is_none(), "{ended}");
    }

    #[test]
    fn an_entry_without_state_has_no_body() {
        let mut broken = entry("COMPLETED");
        broken.state.clear();
        assert!(body(&broken).is_none());
    }
}
