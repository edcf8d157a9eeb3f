//! How long each stage took in past runs, as this hub saw them live, for the stall
//! bound per stage (`wire::stall::Bounds`): a stage that usually takes minutes is not
//! stalled at a global bound set for quick ones, and a quick stage silent for far longer
//! than it ever took is stalled long before that bound.
//!
//! A stage's run is measured from the `stage_change` that entered it to the frame that
//! entered the next stage, or to a `COMPLETED` `complete` (a failed or cancelled run's
//! last stage did not run to its end); only when this hub fanned both out (it had
//! watchers all along). The last [`KEPT`] runs of each stage are kept, in memory: a
//! restarted hub learns again, and each hub learns from the runs it watched.
//!
//! The bound of a stage with at least [`MIN_RUNS`] runs is [`FACTOR`] times the longest
//! of them, and at least the floor (`--stall-floor`); before that, `--stall-after`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::wire::Stage;
use crate::wire::stall::Bounds;

/// Runs of a stage kept.
pub const KEPT: usize = 20;
/// Runs of a stage needed before its bound is measured.
pub const MIN_RUNS: usize = 3;
/// The bound is this many times the longest run kept.
pub const FACTOR: u32 = 3;

#[derive(Debug, Default)]
pub struct StageRuns {
    runs: Mutex<HashMap<Stage, VecDeque<Duration>>>,
}

impl StageRuns {
    /// A run of `stage` took `took`.
    pub fn record(&self, stage: Stage, took: Duration) {
        let mut runs = self.runs.lock();
        let kept = runs.entry(stage).or_default();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(took);
    }

    /// The bounds now: measured for the stages with enough runs (never below `floor`),
    /// `configured` for the others.
    pub fn bounds(&self, configured: Duration, floor: Duration) -> Bounds {
        let measured = self
            .runs
            .lock()
            .iter()
            .filter(|(_, kept)| kept.len() >= MIN_RUNS)
            .filter_map(|(stage, kept)| Some((*stage, kept.iter().max()?.saturating_mul(FACTOR))))
            .map(|(stage, bound)| (stage, bound.max(floor)))
            .collect();
        Bounds {
            configured,
            measured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_bounded_by_its_longest_recent_run_once_it_has_enough() {
        let runs = StageRuns::default();
        let (configured, floor) = (Duration::from_secs(120), Duration::from_secs(10));
        let secs = Duration::from_secs;
        runs.record(Stage::Rendering, secs(100));
        runs.record(Stage::Rendering, secs(300));
        assert_eq!(
            runs.bounds(configured, floor).of(Some("RENDERING")),
            configured,
            "too few runs"
        );
        runs.record(Stage::Rendering, secs(200));
        for _ in 0..3 {
            runs.record(Stage::ScriptGenerating, Duration::from_millis(500));
        }
        let bounds = runs.bounds(configured, floor);
        assert_eq!(bounds.of(Some("RENDERING")), secs(900));
        assert_eq!(bounds.of(Some("SCRIPT_GENERATING")), floor, "the floor");
        assert_eq!(bounds.of(Some("UPLOADING")), configured, "never run");
        assert_eq!(bounds.of(Some("QUEUED")), configured);
        assert_eq!(bounds.shortest(), floor);
        // Only the last KEPT runs count: the 300 s run is forgotten.
        for _ in 0..KEPT {
            runs.record(Stage::Rendering, secs(50));
        }
        assert_eq!(
            runs.bounds(configured, floor).of(Some("RENDERING")),
            secs(150)
        );
    }
}
