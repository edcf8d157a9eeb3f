//! Which projects a list (`GET /api/v1/projects?status=`) or a tag subscription
//! (`"status": [...]`) wants, by the state's `status`: its values (`QUEUED`, the stage
//! codes, `COMPLETED`, `FAILED`, `CANCELLED`) or the groups `active` (queued or in a
//! stage) and `ended` (a terminal status).

use super::Stage;
use super::event::CompleteStatus;

/// The terminal statuses.
fn ended() -> impl Iterator<Item = &'static str> {
    CompleteStatus::ALL.into_iter().map(CompleteStatus::as_str)
}
/// Most values one filter names.
pub const MAX_STATUS_VALUES: usize = 16;

/// A set of statuses; empty: every status (and a state with none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFilter(Vec<&'static str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStatus {
    #[error(
        "unknown status {0:?}: use QUEUED, a stage code, COMPLETED, FAILED, CANCELLED, active or ended"
    )]
    Unknown(String),
    #[error("at most {MAX_STATUS_VALUES} statuses")]
    TooMany,
}

impl StatusFilter {
    /// The filter naming `values` (each a status or a group).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidStatus> {
        let mut wanted: Vec<&'static str> = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            if i >= MAX_STATUS_VALUES {
                return Err(InvalidStatus::TooMany);
            }
            let group: Vec<&'static str> = match value {
                "active" => active().collect(),
                "ended" => ended().collect(),
                other => vec![
                    active()
                        .chain(ended())
                        .find(|s| *s == other)
                        .ok_or_else(|| InvalidStatus::Unknown(other.chars().take(64).collect()))?,
                ],
            };
            for status in group {
                if !wanted.contains(&status) {
                    wanted.push(status);
                }
            }
        }
        Ok(Self(wanted))
    }

    /// Whether a project whose state's status is `status` is wanted.
    pub fn matches(&self, status: Option<&str>) -> bool {
        self.0.is_empty() || status.is_some_and(|s| self.0.contains(&s))
    }
}

fn active() -> impl Iterator<Item = &'static str> {
    std::iter::once("QUEUED").chain(Stage::ALL.iter().map(|s| s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_groups() {
        let any = StatusFilter::parse([]).unwrap();
        assert!(any.matches(None) && any.matches(Some("RENDERING")));
        let active = StatusFilter::parse(["active"]).unwrap();
        assert!(active.matches(Some("QUEUED")) && active.matches(Some("UPLOADING")));
        assert!(!active.matches(Some("COMPLETED")) && !active.matches(None));
        let ended = StatusFilter::parse(["ended", "RENDERING"]).unwrap();
        for s in ["COMPLETED", "FAILED", "CANCELLED", "RENDERING"] {
            assert!(ended.matches(Some(s)), "{s}");
        }
        assert!(!ended.matches(Some("QUEUED")));
        assert_eq!(
            StatusFilter::parse(["rendering"]),
            Err(InvalidStatus::Unknown("rendering".into()))
        );
        assert_eq!(
            StatusFilter::parse(["active"; MAX_STATUS_VALUES + 1]),
            Err(InvalidStatus::TooMany)
        );
    }
}
