//! How much history a project keeps, and for how long: the hubs' policy. The hubs
//! announce it in Redis (`redis/history_policy.rs`) and every publisher there (the
//! worker, `progress-hub publish`, the Python SDK) follows what they announce, so no
//! publisher's setting has to be kept equal by hand. Nonsense (nothing kept, keys that
//! expire at once) is refused where it is set, with a clear error.

use std::time::Duration;

/// How much history is kept, and for how long; and how many projects one client may
/// create (the hub's HTTP publish API only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Events kept per project; older ones are trimmed (a resume from before them
    /// gets `recovered: false`).
    pub max_len: usize,
    /// Bytes of frames kept per project: the oldest are trimmed beyond it as well as
    /// beyond `max_len`, so a project's history costs at most this much whatever its
    /// events weigh (1,000 events of 64 KB would otherwise be 64 MB per project).
    pub max_bytes: usize,
    /// The in-process broker only: bytes of frames (and a per-project overhead) kept
    /// across all projects, each charged to the client that created it. Beyond it
    /// memory is taken from the client holding the most: its least recently used
    /// projects nobody watches are forgotten (then the oldest frames of its watched
    /// ones), so the number of projects with history cannot grow the process without
    /// bound, and one client's flood is paid for by its own projects (`budget.rs`).
    pub memory_budget: usize,
    /// How long history and state live after the last event while a job runs.
    pub active_ttl: Duration,
    /// How long history and state live after `complete`.
    pub retention: Duration,
    /// New projects per client (see [`super::quota`]).
    pub project_quota: super::quota::ProjectQuota,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_len: 1000,
            max_bytes: 4 << 20,
            memory_budget: 256 << 20,
            active_ttl: Duration::from_secs(7 * 24 * 3600),
            retention: Duration::from_secs(24 * 3600),
            project_quota: super::quota::ProjectQuota::default(),
        }
    }
}

/// A history setting that makes no sense: each names the setting and its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} (--{flag}) must be more than 0")]
pub struct InvalidHistory {
    pub setting: &'static str,
    pub flag: &'static str,
}

impl HistoryConfig {
    /// Refuses a history that keeps nothing (0 events, 0 bytes: every history empty)
    /// or keys that expire at once (a TTL of 0; Redis keeps a key at least 1 s).
    pub fn check(&self) -> Result<(), InvalidHistory> {
        let checks = [
            ("the history length", "history-len", self.max_len == 0),
            ("the history bytes", "history-bytes", self.max_bytes == 0),
            (
                "the memory budget",
                "memory-budget",
                self.memory_budget == 0,
            ),
            ("the active TTL", "active-ttl", self.active_ttl.is_zero()),
            ("the retention", "retention", self.retention.is_zero()),
        ];
        for (setting, flag, nothing) in checks {
            if nothing {
                return Err(InvalidHistory { setting, flag });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_is_refused_and_the_defaults_are_not() {
        assert_eq!(HistoryConfig::default().check(), Ok(()));
        let zero_len = HistoryConfig {
            max_len: 0,
            ..HistoryConfig::default()
        };
        assert_eq!(zero_len.check().unwrap_err().flag, "history-len");
        let zero_bytes = HistoryConfig {
            max_bytes: 0,
            ..HistoryConfig::default()
        };
        assert_eq!(zero_bytes.check().unwrap_err().flag, "history-bytes");
        let instant = HistoryConfig {
            retention: Duration::ZERO,
            ..HistoryConfig::default()
        };
        let err = instant.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the retention (--retention) must be more than 0"
        );
    }
}
