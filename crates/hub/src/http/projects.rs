//! `GET /api/v1/projects/{project_id}`: the project's current state, the same facts a
//! late joiner's `snapshot` carries, with how many watch it now (over every hub) and
//! `stalled`: whether a run under way has published nothing for longer than its
//! stage's bound (`hub::stage_runs`, else `--stall-after`), or lost its worker (the
//! hub's `WorkerProbe`, the job queue's in the binary, saw its lease run out), and
//! `stall_reason` when it is (a queued or ended run never is). 404 for a project with no
//! history.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::project_path::ProjectPath;
use super::{AppState, access};
use crate::wire::stall::{self, Bounds, StallReason};
use crate::wire::{ProjectState, StateOfProject};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

/// The answer: the state (a snapshot's fields), its project, and its watchers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectStateBody<'a> {
    /// The state and its project, as a tag's `project_state` frame carries them.
    #[serde(flatten)]
    #[schema(inline)]
    pub project: StateOfProject<'a>,
    /// How many connections watch the project now, over every hub: a single-project
    /// WebSocket or SSE stream counts one, and so does each subscription of a
    /// multiplexed connection (a hub that died stops counting within the presence TTL).
    pub watchers: u64,
    /// A run under way that has published nothing for longer than its stage's bound
    /// (measured from past runs, else `--stall-after`), or whose worker is lost.
    pub stalled: bool,
    /// Why it is stalled (only when it is): `silent` or `worker_lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_reason: Option<StallReason>,
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}", tag = "projects",
    params(("project_id" = String, Path, description = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "the project's state (the snapshot's fields plus project_id, watchers, and stalled: a run under way silent for longer than its stage's bound (measured from past runs, else --stall-after) or whose worker is lost, with stall_reason when it is)", body = ProjectStateBody),
        (status = 400, description = "invalid project id", body = ErrorBody),
        (status = 404, description = "no history for this project", body = ErrorBody),
        (status = 503, description = "broker unavailable", body = ErrorBody)))]
pub async fn state(
    State(app): State<AppState>,
    ProjectPath(project): ProjectPath,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = access::read(&app, &headers, &project) {
        return denied.into_response();
    }
    let broker = &app.sessions.broker;
    let (replay, watchers) = tokio::join!(broker.replay(&project, None), broker.watchers(&project));
    match replay.and_then(|replay| Ok((replay, watchers?))) {
        Ok((replay, watchers)) => match replay.state {
            Some((state, _)) => {
                // Only a run under way can have lost its worker: ask the probe only then.
                let lost = match &app.worker_probe {
                    Some(probe) if stall::running(&state) => probe.lost().await.contains(&project),
                    _ => false,
                };
                let bounds = app
                    .sessions
                    .hub
                    .stage_runs
                    .bounds(app.stall_after, app.stall_floor);
                let stall_reason = stalled(&state, &bounds, lost, Utc::now());
                Json(ProjectStateBody {
                    project: StateOfProject {
                        state: &state,
                        project_id: project.as_str(),
                    },
                    watchers,
                    stalled: stall_reason.is_some(),
                    stall_reason,
                })
                .into_response()
            }
            None => ApiError::new(
                StatusCode::NOT_FOUND,
                "PROJECT_NOT_FOUND",
                "no events have been published for this project (or they have expired)",
            )
            .into_response(),
        },
        Err(err) => {
            tracing::error!(project_id = %project, error = %err, "reading project state failed");
            ApiError::unavailable().into_response()
        }
    }
}

/// Why a run under way is stalled, if it is: its worker is `lost`, or it has published
/// nothing for longer than its stage's bound. A queued, ended or unknown run never is.
fn stalled(
    state: &ProjectState,
    bounds: &Bounds,
    lost: bool,
    now: DateTime<Utc>,
) -> Option<StallReason> {
    stall::stall(state, bounds, lost, now).map(|(reason, _)| reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_states_json_with_watchers_and_stall() {
        let state = ProjectState {
            status: Some("ASSETS_GENERATING".into()),
            progress: 40,
            job_id: Some("j1".into()),
            units_done: Some(1),
            units_total: Some(2),
            tags: vec!["user:7".into()],
            completed_job: Some("j0".into()),
            fence: Some(("j1".into(), 3)),
            ..ProjectState::empty()
        };
        let project = crate::wire::ProjectId::parse("p1").unwrap();
        let body = ProjectStateBody {
            project: StateOfProject {
                state: &state,
                project_id: project.as_str(),
            },
            watchers: 2,
            stalled: true,
            stall_reason: Some(StallReason::Silent),
        };
        let mut answer = serde_json::to_value(&body).unwrap();
        let answer = answer.as_object_mut().unwrap();
        assert_eq!(answer.remove("watchers"), Some(2.into()));
        assert_eq!(answer.remove("stalled"), Some(true.into()));
        assert_eq!(answer.remove("stall_reason"), Some("silent".into()));
        assert_eq!(answer.get("project_id"), Some(&"p1".into()));
        assert_eq!(
            serde_json::Value::from(answer.clone()),
            state.to_json(&project)
        );
    }

    #[test]
    fn only_a_run_under_way_silent_or_without_its_worker_is_stalled() {
        let at = |status: &str| ProjectState {
            status: Some(status.into()),
            updated_at: Some("2026-12-06T05:00:00Z".into()),
            ..ProjectState::empty()
        };
        let bound = &Bounds::fixed(std::time::Duration::from_secs(60));
        let soon = DateTime::parse_from_rfc3339("2026-12-06T05:00:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let late = DateTime::parse_from_rfc3339("2026-12-06T05:01:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(stalled(&at("RENDERING"), bound, false, soon), None);
        assert_eq!(
            stalled(&at("RENDERING"), bound, true, soon),
            Some(StallReason::WorkerLost)
        );
        assert_eq!(
            stalled(&at("RENDERING"), bound, false, late),
            Some(StallReason::Silent)
        );
        for not_running in ["QUEUED", "COMPLETED", "FAILED", "CANCELLED"] {
            assert_eq!(
                stalled(&at(not_running), bound, true, late),
                None,
                "{not_running}"
            );
        }
        let mut unreadable = at("RENDERING");
        unreadable.updated_at = Some("yesterday".into());
        assert!(stalled(&unreadable, bound, false, late).is_none());
        let ahead = DateTime::parse_from_rfc3339("2026-12-06T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            stalled(&at("RENDERING"), bound, false, ahead).is_none(),
            "a clock behind the publisher's"
        );
    }
}
