//! What a webhook says: its type and its JSON body, built from an outbox entry (a run's
//! end and the project's state as it left it). Plain data, no I/O.

use serde::Serialize;

use crate::broker::outbox::{OutboxEntry, STALLED, VACANT_SINCE, VACATED};
use crate::wire::ProjectState;

/// A webhook's body: `{"type", "timestamp", "data": {"project_id", ...the state}}`.
#[derive(Debug, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct WebhookBody {
    /// `job.completed`, `job.failed`, `job.cancelled`, ...: `job.` and the run's final
    /// status in lower case; `job.stalled`; `project.vacated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the run ended (its `complete` was published), or a hub found it stalled or
    /// the project vacated, RFC 3339 UTC.
    pub timestamp: String,
    pub data: WebhookData,
}

/// The project and its state as the `complete` left it (`GET /api/v1/projects/{id}`'s
/// fields: status, job_id, youtube_url, ...).
#[derive(Debug, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct WebhookData {
    pub project_id: String,
    /// Connections watching the project when the event was first attempted, over every
    /// hub (absent when the broker could not say); `project.vacated`: 0, the count that
    /// made it vacated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchers: Option<u64>,
    /// `job.stalled` only: why the run is stalled (`silent`: it published nothing for
    /// longer than its stage's bound; `worker_lost`: the hub's job queue saw its worker's
    /// lease run out). `since`: for `job.stalled`, its last event's `updated_at`; for
    /// `project.vacated`, when the last watcher was found gone (RFC 3339 UTC).
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

/// The body of the webhook for `entry`, or `None` for an entry with no readable state
/// (a vacated project may have none: it was watched before anything was published).
pub fn body(entry: &OutboxEntry) -> Option<WebhookBody> {
    let state = ProjectState::from_hash(&entry.state).map(|(state, _)| state);
    let (kind, watchers, since, state) = match entry.kind.as_deref() {
        None => {
            let state = state?;
            (event_type(state.status.as_deref())?, None, None, state)
        }
        Some(STALLED) => {
            let state = state?;
            let since = state.updated_at.clone();
            (STALLED.to_string(), None, since, state)
        }
        Some(VACATED) => {
            let since = entry
                .state
                .get(VACANT_SINCE)
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(rfc3339_of_ms);
            let state = state.unwrap_or_else(ProjectState::empty);
            (VACATED.to_string(), Some(0), since, state)
        }
        Some(other) => (other.to_string(), None, None, state?),
    };
    Some(WebhookBody {
        timestamp: rfc3339_of_ms(entry.enqueued_ms as i64)?,
        data: WebhookData {
            project_id: entry.project.to_string(),
            watchers,
            reason: (kind == STALLED).then(|| entry.reason.clone()).flatten(),
            since,
            state,
        },
        kind,
    })
}

fn rfc3339_of_ms(ms: i64) -> Option<String> {
    Some(
        chrono::DateTime::from_timestamp_millis(ms)?
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
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
    fn a_vacancy_says_nobody_watches_and_since_when() {
        let mut vacated = entry("COMPLETED");
        vacated.kind = Some("project.vacated".into());
        vacated
            .state
            .insert("vacant_since".into(), "1699999990000".into());
        let told = serde_json::to_value(body(&vacated).unwrap()).unwrap();
        assert_eq!(told["type"], "project.vacated");
        assert_eq!(told["data"]["watchers"], 0);
        assert_eq!(told["data"]["since"], "2023-11-14T22:13:10.000Z");
        assert_eq!(told["data"]["status"], "COMPLETED");
        assert!(told["data"].get("reason").is_none(), "{told}");
        // Watched before anything was published: no state, still told.
        vacated.state.retain(|k, _| k == "vacant_since");
        let bare = serde_json::to_value(body(&vacated).unwrap()).unwrap();
        assert_eq!(bare["data"]["project_id"], "p1");
        assert_eq!(bare["data"]["watchers"], 0);
    }

    #[test]
    fn an_entry_without_state_has_no_body() {
        let mut broken = entry("COMPLETED");
        broken.state.clear();
        assert!(body(&broken).is_none());
    }
}
