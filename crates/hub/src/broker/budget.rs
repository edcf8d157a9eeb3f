//! The in-process broker's memory budget, charged to the client that created each
//! project (issue 23 §5): a project's frames and its overhead count against its
//! creator, and when the hub is over budget, memory is taken back from the client
//! holding the most, so one client's traffic cannot evict another's finished run while
//! it has anything of its own to give back.
//!
//! The same record bounds how many projects a client holds and how fast it opens new
//! ones ([`Budget::admit`], the in-process half of [`super::quota`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::quota::{Admission, ProjectQuota, QuotaLimit, RATE_WINDOW};
use crate::wire::ProjectId;

/// What a project costs beyond its frames (its state, its map and LRU entries), charged
/// against the memory budget with them: issue 23 §5 measured ≈1 KB per project that the
/// budget did not see (300,000 one-event projects: RSS 11 → 333 MB, ~60 MB counted).
pub const PROJECT_OVERHEAD: usize = 1024;

/// Who a project's bytes are charged to: the client that created it over the HTTP API
/// (its token digest or its address, `http::access::client_key`), or `None` for the
/// hub's own publishers (the library, the in-process worker of an unowned project).
pub type Owner = Option<Arc<str>>;

/// Every client's holdings, and their bytes in all.
#[derive(Default)]
pub struct Budget {
    total: usize,
    holders: HashMap<Owner, Holding>,
    /// (bytes, owner) of every holder: the heaviest is the last.
    by_weight: BTreeSet<(usize, Owner)>,
    next_use: u64,
}

/// One client's projects, least recently used first, what they weigh, and when it
/// opened its latest ones (for the rate).
#[derive(Default)]
struct Holding {
    bytes: usize,
    lru: BTreeMap<u64, ProjectId>,
    opened: VecDeque<Instant>,
}

impl Budget {
    /// Bytes held in all: every frame, and [`PROJECT_OVERHEAD`] per project.
    pub fn total(&self) -> usize {
        self.total
    }

    /// May `owner` open one more project now? Counts it against the rate when it may.
    pub fn admit(&mut self, owner: &Owner, quota: &ProjectQuota, now: Instant) -> Admission {
        let holding = self.holders.entry(owner.clone()).or_default();
        holding.forget_opened_before(now);
        if quota.max_per_client > 0 && holding.lru.len() >= quota.max_per_client {
            return Admission::Refused {
                limit: QuotaLimit::Count,
                // Places free up as its projects expire or are evicted: about a minute.
                retry_after: RATE_WINDOW,
            };
        }
        if quota.per_minute > 0 && holding.opened.len() >= quota.per_minute {
            let oldest = holding.opened.front().copied().unwrap_or(now);
            return Admission::Refused {
                limit: QuotaLimit::Rate,
                retry_after: (oldest + RATE_WINDOW).saturating_duration_since(now),
            };
        }
        holding.opened.push_back(now);
        Admission::Admitted
    }

    /// A new project of `owner`, used now: charges its overhead; returns its use stamp.
    pub fn open(&mut self, owner: &Owner, project: &ProjectId) -> u64 {
        let stamp = self.stamp();
        self.holders
            .entry(owner.clone())
            .or_default()
            .lru
            .insert(stamp, project.clone());
        self.grow(owner, PROJECT_OVERHEAD);
        stamp
    }

    /// The project (stamped `stamp`) used again now; returns its new stamp.
    pub fn reuse(&mut self, owner: &Owner, stamp: u64, project: &ProjectId) -> u64 {
        let new = self.stamp();
        if let Some(holding) = self.holders.get_mut(owner) {
            holding.lru.remove(&stamp);
            holding.lru.insert(new, project.clone());
        }
        new
    }

    /// The project is gone: its `bytes` of frames and its overhead are given back.
    pub fn close(&mut self, owner: &Owner, stamp: u64, bytes: usize) {
        if let Some(holding) = self.holders.get_mut(owner) {
            holding.lru.remove(&stamp);
        }
        self.shrink(owner, bytes + PROJECT_OVERHEAD);
    }

    pub fn grow(&mut self, owner: &Owner, bytes: usize) {
        self.total += bytes;
        self.reweigh(owner, |held| held + bytes);
    }

    pub fn shrink(&mut self, owner: &Owner, bytes: usize) {
        self.total = self.total.saturating_sub(bytes);
        self.reweigh(owner, |held| held.saturating_sub(bytes));
    }

    /// Holders, heaviest first, each with its projects least recently used first: the
    /// order in which memory is taken back.
    pub fn heaviest_first(
        &self,
    ) -> impl Iterator<Item = (&Owner, impl Iterator<Item = &ProjectId>)> {
        self.by_weight.iter().rev().filter_map(|(_, owner)| {
            self.holders
                .get(owner)
                .map(|holding| (owner, holding.lru.values()))
        })
    }

    /// Forgets rate records older than the window, and holders with nothing left.
    pub fn sweep(&mut self, now: Instant) {
        let mut empty = Vec::new();
        for (owner, holding) in &mut self.holders {
            holding.forget_opened_before(now);
            if holding.lru.is_empty() && holding.opened.is_empty() {
                empty.push(owner.clone());
            }
        }
        for owner in empty {
            if let Some(holding) = self.holders.remove(&owner) {
                self.by_weight.remove(&(holding.bytes, owner));
            }
        }
    }

    /// Projects `owner` holds.
    #[cfg(test)]
    pub fn projects_of(&self, owner: &Owner) -> usize {
        self.holders.get(owner).map_or(0, |h| h.lru.len())
    }

    fn stamp(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }

    fn reweigh(&mut self, owner: &Owner, change: impl FnOnce(usize) -> usize) {
        let holding = self.holders.entry(owner.clone()).or_default();
        self.by_weight.remove(&(holding.bytes, owner.clone()));
        holding.bytes = change(holding.bytes);
        self.by_weight.insert((holding.bytes, owner.clone()));
    }
}

impl Holding {
    fn forget_opened_before(&mut self, now: Instant) {
        while let Some(at) = self.opened.front()
            && now.duration_since(*at) >= RATE_WINDOW
        {
            self.opened.pop_front();
        }
    }
}
