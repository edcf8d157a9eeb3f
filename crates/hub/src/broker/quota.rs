//! How many projects one client may create (issue 23 §6): at most
//! [`ProjectQuota::max_per_client`] of its projects at once, and at most
//! [`ProjectQuota::per_minute`] new ones in any minute. A publish (or a `generate`) over
//! the HTTP API to a project that has no history yet creates it, and is refused (429
//! `TOO_MANY_NEW_PROJECTS`, with `Retry-After`) beyond either; publishing to a project
//! that exists is never refused.
//!
//! In process, the count is of the projects the client holds now (see `budget.rs`);
//! in Redis, kept in Redis so that it holds across hubs (`redis/quota.lua`), it is of
//! the projects it created within the active TTL (the longest a project lives without
//! another event).

use std::time::Duration;

/// The window of [`ProjectQuota::per_minute`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Per-client bounds on new projects; `0` turns a bound off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectQuota {
    /// Most projects of one client at once.
    pub max_per_client: usize,
    /// Most new projects of one client in any minute.
    pub per_minute: usize,
}

impl Default for ProjectQuota {
    fn default() -> Self {
        Self {
            max_per_client: 1000,
            per_minute: 600,
        }
    }
}

/// Which bound refused a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    Count,
    Rate,
}

/// May a client publish to a project (creating it if it has no history)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused {
        limit: QuotaLimit,
        retry_after: Duration,
    },
}

impl Admission {
    /// What `Retry-After` says: whole seconds, at least one.
    pub fn retry_after_secs(retry_after: Duration) -> u64 {
        (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(Admission::retry_after_secs(Duration::ZERO), 1);
        assert_eq!(Admission::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(Admission::retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(Admission::retry_after_secs(Duration::from_secs(60)), 60);
    }
}
