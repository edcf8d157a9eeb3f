//! A page of a tag's projects with their states, newest first: what
//! `GET /api/v1/projects?tag=` answers (and a tag subscription's snapshot reads).
//!
//! The tag's index orders and finds them; each project's state (the truth) decides: an
//! entry whose project's state is gone or no longer carries the tag is skipped and
//! removed from the index, and the status filter applies to the state. A page scans at
//! most [`MAX_SCANNED`] entries, so a filter that matches few of many returns a short
//! (even empty) page with a cursor to go on from, never an unbounded read.

use super::{Broker, BrokerError, TagEntry};
use crate::wire::{ProjectId, ProjectState, StatusFilter, Tag};

/// Most index entries one page reads.
pub const MAX_SCANNED: usize = 1000;

/// What a page asks for.
pub struct TagQuery<'a> {
    pub tag: &'a Tag,
    pub status: &'a StatusFilter,
    /// Only projects tagged at or after (ms since the epoch).
    pub since_ms: u64,
    /// Go on after this entry (the cursor of the page before).
    pub after: Option<TagEntry>,
    pub limit: usize,
}

/// A page: the projects (with their index entries) and where the next one starts.
#[derive(Debug, Default)]
pub struct TagPage {
    pub projects: Vec<(TagEntry, ProjectState)>,
    /// `None`: the index holds nothing more.
    pub next: Option<TagEntry>,
}

pub async fn read(broker: &dyn Broker, query: TagQuery<'_>) -> Result<TagPage, BrokerError> {
    let mut page = TagPage::default();
    let mut after = query.after;
    let mut scanned = 0;
    let mut stale: Vec<ProjectId> = Vec::new();
    let batch = query.limit.clamp(1, MAX_SCANNED);
    let outcome = 'scan: loop {
        let entries = broker
            .tagged(query.tag, query.since_ms, after.as_ref(), batch)
            .await?;
        let exhausted = entries.len() < batch;
        for entry in entries {
            scanned += 1;
            after = Some(entry.clone());
            match broker.replay(&entry.project, None).await?.state {
                Some((state, _)) if query.tag.selects(&state.tags) => {
                    if query.status.matches(state.status.as_deref()) {
                        page.projects.push((entry, state));
                    }
                }
                _ => stale.push(entry.project),
            }
            if page.projects.len() == query.limit || scanned >= MAX_SCANNED {
                break 'scan after;
            }
        }
        if exhausted {
            break None;
        }
    };
    page.next = outcome;
    if !stale.is_empty() {
        broker.untag(query.tag, &stale).await?;
    }
    Ok(page)
}
