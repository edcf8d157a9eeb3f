//! A project's current state: what a late joiner's `snapshot` and
//! `GET /api/v1/projects/{id}` show.

use std::collections::HashMap;

use serde::Serialize;

use super::event::ProgressStatus;
use super::{EventId, ProjectId, Tag};

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct ProjectState {
    /// The stage (SCRIPT_GENERATING, ...) while running; COMPLETED, FAILED or CANCELLED at the end.
    pub status: Option<String>,
    pub progress: u8,
    /// Human text of what is happening now.
    pub current_stage: Option<String>,
    pub estimated_remaining: Option<u64>,
    /// The id of the newest event in the history; resume from it.
    pub last_event_id: Option<String>,
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub youtube_url: Option<String>,
    /// The generation job of the current run, once it was accepted (`QUEUED`) or has
    /// completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// While the run is `QUEUED`: the job's place among the jobs waiting when it was
    /// accepted (1: none waited before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// While the stage runs parallel units (ASSETS 37/120): how many are done, and how
    /// many it has (the state's `units_done`, `units_total`; a stage change clears them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_done: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_total: Option<u32>,
    /// The run's tags (`user:7`, `team:2`), as its publisher gave them; `[]`: none.
    pub tags: Vec<String>,
    /// The last generation job whose `complete` is in (the state's `fence_ended`, kept
    /// across later runs), so a worker that takes such a job again settles it at once.
    #[serde(skip)]
    pub completed_job: Option<String>,
    /// The fence the run publishes under (its holder, e.g. a job, and the newest token
    /// of it: the state's `fence_holder`, `fence_token`), so that the hub can end a run
    /// it does not carry as that run (a cancel), fencing out the run's later events.
    #[serde(skip)]
    pub fence: Option<(String, u64)>,
}

/// A project's state with the project it is of: a tag subscription's `project_state`
/// data, an entry of the project list, and the start of what
/// `GET /api/v1/projects/{id}` answers (`http::projects::ProjectStateBody`, which adds
/// watchers and stall).
#[derive(Debug, Serialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct StateOfProject<'a> {
    #[serde(flatten)]
    pub state: &'a ProjectState,
    pub project_id: &'a str,
}

impl ProjectState {
    /// The state of a project with no history: nothing known yet.
    pub fn empty() -> Self {
        Self {
            status: None,
            progress: 0,
            current_stage: None,
            estimated_remaining: None,
            last_event_id: None,
            updated_at: None,
            youtube_url: None,
            job_id: None,
            queue_position: None,
            units_done: None,
            units_total: None,
            tags: Vec::new(),
            completed_job: None,
            fence: None,
        }
    }

    /// The state with its `project_id` ([`StateOfProject`]) as a JSON value.
    pub fn to_json(&self, project: &ProjectId) -> serde_json::Value {
        let of_project = StateOfProject {
            state: self,
            project_id: project.as_str(),
        };
        serde_json::to_value(of_project).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// Reads the state from Redis's state hash (its fields: `contract/publish-inputs.json`'s
    /// `state_fields` and `script_fields`).
    /// `None` when the hash holds no history (never published, or lost).
    pub fn from_hash(hash: &HashMap<String, String>) -> Option<(Self, EventId)> {
        let epoch = hash.get("epoch")?;
        let seq: u64 = hash.get("seq")?.parse().ok()?;
        if seq == 0 {
            return None;
        }
        let last = EventId::new(epoch, seq);
        let text = |k: &str| hash.get(k).filter(|v| !v.is_empty()).cloned();
        let status = text("status");
        // The place in the queue says something only while the run waits there.
        let queue_position = (status.as_deref() == Some(ProgressStatus::Queued.as_str()))
            .then(|| text("queue_position").and_then(|p| p.parse().ok()))
            .flatten();
        // Both or neither: a count is read only with its total.
        let units = text("units_done")
            .and_then(|d| d.parse().ok())
            .zip(text("units_total").and_then(|t| t.parse().ok()));
        Some((
            Self {
                status,
                progress: text("progress").and_then(|p| p.parse().ok()).unwrap_or(0),
                current_stage: text("current_stage"),
                estimated_remaining: text("estimated_remaining").and_then(|e| e.parse().ok()),
                last_event_id: Some(last.to_string()),
                updated_at: text("updated_at"),
                youtube_url: text("youtube_url"),
                job_id: text("job_id"),
                queue_position,
                units_done: units.map(|(done, _)| done),
                units_total: units.map(|(_, total)| total),
                tags: text("tags")
                    .map(|t| Tag::split(&t).iter().map(|t| t.to_string()).collect())
                    .unwrap_or_default(),
                completed_job: text("fence_ended"),
                fence: text("fence_holder").zip(text("fence_token").and_then(|t| t.parse().ok())),
            },
            last,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hash() {
        let hash: HashMap<String, String> = [
            ("epoch", "ep"),
            ("seq", "7"),
            ("status", "RENDERING"),
            ("progress", "60"),
            ("current_stage", "渲染中"),
            ("estimated_remaining", ""),
            ("updated_at", "2025-10-19T10:35:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (state, last) = ProjectState::from_hash(&hash).unwrap();
        assert_eq!(last, EventId::new("ep", 7));
        assert_eq!(state.progress, 60);
        assert_eq!(state.estimated_remaining, None);
        assert_eq!(state.last_event_id.as_deref(), Some("ep:7"));
        let json = serde_json::to_value(&state).unwrap();
        assert!(json.get("youtube_url").is_none());
        assert_eq!(json["tags"], serde_json::json!([]));
        let mut tagged = hash.clone();
        tagged.insert("tags".into(), "user:7,team:2".into());
        let (state, _) = ProjectState::from_hash(&tagged).unwrap();
        assert_eq!(state.tags, ["user:7", "team:2"]);
        assert!(json.get("units_done").is_none() && json.get("units_total").is_none());
        let mut counting = hash.clone();
        counting.insert("units_done".into(), "37".into());
        counting.insert("units_total".into(), "120".into());
        let (state, _) = ProjectState::from_hash(&counting).unwrap();
        assert_eq!((state.units_done, state.units_total), (Some(37), Some(120)));
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            (json["units_done"].as_u64(), json["units_total"].as_u64()),
            (Some(37), Some(120))
        );
        counting.insert("units_total".into(), String::new());
        let (state, _) = ProjectState::from_hash(&counting).unwrap();
        assert_eq!(
            (state.units_done, state.units_total),
            (None, None),
            "a count without its total"
        );
    }

    #[test]
    fn no_history_is_no_state() {
        assert!(ProjectState::from_hash(&HashMap::new()).is_none());
        let fresh: HashMap<String, String> = [
            ("epoch".to_string(), "e".to_string()),
            ("seq".to_string(), "0".to_string()),
        ]
        .into();
        assert!(ProjectState::from_hash(&fresh).is_none());
    }
}
