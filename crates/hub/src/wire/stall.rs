//! Stalled runs: a run under way (its status is a stage) that has published nothing for
//! longer than a bound. The hub tells a project's live watchers with a `stalled` frame
//! (`{"stalled": true|false, "reason", "since", "timestamp"}`: no id, not in the
//! history, like `broker_status`), and the backend with the `job.stalled` webhook; `GET
//! /api/v1/projects/{id}` says `stalled`. A queued, ended or unknown run never is.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ProjectState, Stage};

/// Why a run is stalled. The hub knows a worker died only for its own job queue (the
/// job's lease ran out); of any other publisher (Celery) it knows only the silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StallReason {
    /// Nothing published for longer than the bound.
    Silent,
    /// The worker holding the job stopped renewing its lease (it died or hung).
    WorkerLost,
}

impl StallReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::WorkerLost => "worker_lost",
        }
    }
}

/// `stalled`: the project's running job went silent (`stalled: true`) or published
/// again (`false`, with the stall's reason and since).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StalledData {
    pub stalled: bool,
    pub reason: StallReason,
    /// When the run last published (its state's `updated_at`), ISO 8601.
    pub since: String,
    pub timestamp: String,
}

/// How long a run under way may stay silent, by its stage: measured from past runs of
/// the stage (`hub::stage_runs`), else the configured `--stall-after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub configured: Duration,
    pub measured: HashMap<Stage, Duration>,
}

impl Bounds {
    /// The configured bound for every stage.
    pub fn fixed(configured: Duration) -> Self {
        Self {
            configured,
            measured: HashMap::new(),
        }
    }

    /// The bound of a run whose status is `status`.
    pub fn of(&self, status: Option<&str>) -> Duration {
        Stage::ALL
            .iter()
            .find(|s| Some(s.as_str()) == status)
            .and_then(|s| self.measured.get(s))
            .copied()
            .unwrap_or(self.configured)
    }

    /// The shortest bound of any stage.
    pub fn shortest(&self) -> Duration {
        self.measured
            .values()
            .copied()
            .fold(self.configured, Duration::min)
    }
}

/// Whether the run is under way: its status is one of the pipeline's stages.
pub fn running(state: &ProjectState) -> bool {
    state
        .status
        .as_deref()
        .is_some_and(|status| Stage::ALL.iter().any(|s| s.as_str() == status))
}

/// When the run under way last published, if that is longer than `bound` before `now`
/// (its state's `updated_at`); `None` for a run not under way, an unreadable time, or
/// one not yet silent that long.
pub fn silent_since(state: &ProjectState, bound: Duration, now: DateTime<Utc>) -> Option<String> {
    if !running(state) {
        return None;
    }
    let text = state.updated_at.as_deref()?;
    let at = DateTime::parse_from_rfc3339(text).ok()?;
    let silent = (now - at.with_timezone(&Utc)).to_std().ok()?;
    (silent > bound).then(|| text.to_string())
}

/// Whether the run under way is stalled, why and since when: `worker_lost` when its
/// worker is known lost (`worker_lost`: the hub's job queue saw its lease run out),
/// else `silent` once it published nothing for longer than its stage's bound.
pub fn stall(
    state: &ProjectState,
    bounds: &Bounds,
    worker_lost: bool,
    now: DateTime<Utc>,
) -> Option<(StallReason, String)> {
    if worker_lost && running(state) {
        return Some((StallReason::WorkerLost, state.updated_at.clone()?));
    }
    let bound = bounds.of(state.status.as_deref());
    silent_since(state, bound, now).map(|since| (StallReason::Silent, since))
}

/// How long until the run under way would be silent for `bound` (zero: already);
/// `None` for a run not under way or an unreadable time.
pub fn silent_in(state: &ProjectState, bound: Duration, now: DateTime<Utc>) -> Option<Duration> {
    if !running(state) {
        return None;
    }
    let at = DateTime::parse_from_rfc3339(state.updated_at.as_deref()?).ok()?;
    let silent = (now - at.with_timezone(&Utc))
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(bound.saturating_sub(silent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: &str) -> ProjectState {
        ProjectState {
            status: Some(status.into()),
            updated_at: Some("2026-12-06T05:00:00Z".into()),
            ..ProjectState::empty()
        }
    }

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn only_a_silent_run_under_way_is_stalled_since_its_last_event() {
        let bound = Duration::from_secs(60);
        let late = time("2026-12-06T05:01:01Z");
        assert_eq!(
            silent_since(&at("RENDERING"), bound, late).as_deref(),
            Some("2026-12-06T05:00:00Z")
        );
        assert_eq!(
            silent_since(&at("RENDERING"), bound, time("2026-12-06T05:00:59Z")),
            None
        );
        for not_running in ["QUEUED", "COMPLETED", "FAILED", "CANCELLED"] {
            assert_eq!(
                silent_since(&at(not_running), bound, late),
                None,
                "{not_running}"
            );
            assert_eq!(
                silent_in(&at(not_running), bound, late),
                None,
                "{not_running}"
            );
        }
        let mut unreadable = at("RENDERING");
        unreadable.updated_at = Some("yesterday".into());
        assert_eq!(silent_since(&unreadable, bound, late), None);
        assert_eq!(
            silent_since(&at("RENDERING"), bound, time("2026-12-06T04:00:00Z")),
            None,
            "a clock behind the publisher's"
        );
    }

    #[test]
    fn the_time_left_until_a_run_is_silent_counts_down_to_zero() {
        let bound = Duration::from_secs(60);
        assert_eq!(
            silent_in(&at("RENDERING"), bound, time("2026-12-06T05:00:20Z")),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            silent_in(&at("RENDERING"), bound, time("2026-12-06T05:09:00Z")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            silent_in(&at("RENDERING"), bound, time("2026-12-06T04:00:00Z")),
            Some(bound)
        );
    }

    #[test]
    fn a_lost_worker_stalls_its_run_at_once_and_only_a_run_under_way() {
        let bound = &Bounds::fixed(Duration::from_secs(60));
        let soon = time("2026-12-06T05:00:01Z");
        assert_eq!(stall(&at("RENDERING"), bound, false, soon), None);
        assert_eq!(
            stall(&at("RENDERING"), bound, true, soon),
            Some((StallReason::WorkerLost, "2026-12-06T05:00:00Z".into()))
        );
        assert_eq!(
            stall(&at("RENDERING"), bound, false, time("2026-12-06T05:01:01Z")),
            Some((StallReason::Silent, "2026-12-06T05:00:00Z".into()))
        );
        for not_running in ["QUEUED", "COMPLETED", "FAILED", "CANCELLED"] {
            assert_eq!(stall(&at(not_running), bound, true, soon), None);
        }
    }

    #[test]
    fn reasons_are_the_contracts_words() {
        assert_eq!(StallReason::Silent.as_str(), "silent");
        assert_eq!(StallReason::WorkerLost.as_str(), "worker_lost");
        assert_eq!(
            serde_json::to_value(StallReason::WorkerLost).unwrap(),
            "worker_lost"
        );
    }
}
