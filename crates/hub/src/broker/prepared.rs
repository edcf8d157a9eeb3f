//! What the broker's atomic publish takes: an event already validated, normalized and
//! turned into a frame with two holes, what it changes in the project's state, its
//! receipt and the fence it is published under. Built once by the publisher
//! (`publish/prepare.rs`), never patched; both brokers (`publish.lua`, `memory.rs`)
//! complete it the same way.

use crate::wire::{EventKind, Tag};

/// A frame with holes for the id and the (clamped) progress:
/// `head + id + mid + ["progress":N] + tail`. Redis's publish script assembles it the
/// same way (see `redis/publish.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTemplate {
    pub head: String,
    pub mid: String,
    pub tail: String,
    /// The progress the publisher asked for; the broker may clamp it upwards.
    pub progress: Option<u8>,
}

impl FrameTemplate {
    pub fn assemble(&self, id: &str, progress: Option<u8>) -> String {
        let mut out = String::with_capacity(
            self.head.len() + id.len() + self.mid.len() + self.tail.len() + 16,
        );
        out.push_str(&self.head);
        out.push_str(id);
        out.push_str(&self.mid);
        if let Some(p) = progress {
            out.push_str("\"progress\":");
            out.push_str(&p.to_string());
        }
        out.push_str(&self.tail);
        out
    }
}

/// What an event changes in the project's state: a patch of product fields (named in
/// `contract/publish-inputs.json`'s `state_fields`), written as given, and what the
/// broker's own bookkeeping needs to know of the event (runs, progress).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateChange {
    /// Field/value pairs written into the state (an empty value is null).
    pub patch: Vec<(&'static str, String)>,
    /// Progress the state is raised to regardless of the frame (`complete` -> 100).
    pub progress_floor: Option<u8>,
    /// The event starts a new run whatever came before (a `QUEUED` update): progress
    /// from 0, every field of the last run gone.
    pub starts_run: bool,
    /// The event ends the run (`complete`): the next event starts a new one.
    pub ends_run: bool,
    /// The fence holder of the run this event starts (the queued job): refused as
    /// stale if that holder has published already (a worker was quicker).
    pub run_holder: Option<String>,
    /// The tags the event gives the project's run (`Some(empty)`: none any more); the
    /// broker writes them into the state (the `tags` field) and, after the atomic
    /// publish, into each tag's index (see `redis/tag_index.rs`).
    pub tags: Option<Vec<Tag>>,
    /// The unit of the fence's holder this event is published by (one of a job's
    /// parallel units, e.g. a Celery group's task), if any: see [`Unit`].
    pub unit: Option<Unit>,
}

/// One of a fence holder's parallel units (issue 25 §1: a Celery group's tasks, each
/// claiming the job anew). The broker compares the fence's token with the unit's own
/// newest, so a sibling's newer claim does not fence it out while its own older
/// attempts stay refused; and it counts the unit done once, however often it is
/// redelivered (`publish.lua`'s `units` hash).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    pub name: String,
    /// The event counts the unit done among this many units of the run's current stage:
    /// the state and the frame carry `units_done` and `units_total`.
    pub done_of: Option<u32>,
    /// With `done_of`: the frame's progress is `from + (to - from) * done / total`.
    pub progress_span: Option<(u8, u8)>,
}

impl StateChange {
    /// Gives the run `tags` (the state's `tags` field, and the tags' indexes).
    pub fn tag(&mut self, tags: Vec<Tag>) {
        self.set("tags", Some(&Tag::join(&tags)));
        self.tags = Some(tags);
    }

    /// The value the patch gives `field`, if it sets it.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.patch
            .iter()
            .rev()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.as_str())
    }

    /// Sets `field` to `value` (`None`: null).
    pub fn set(&mut self, field: &'static str, value: Option<&str>) {
        self.patch
            .push((field, value.unwrap_or_default().to_string()));
    }
}

/// A fence: who an event is published under (the holder, e.g. a generation job) and its
/// token, which grows with every claim of the holder (`progress_hub_jobs::queue::Claimed::fencing_token`):
/// a worker that stalled and lost its job holds a lower one than the worker that took
/// the job over, and a holder that is not the project's current one is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub token: u64,
}

/// A validated, normalized event ready for the broker's atomic publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedEvent {
    pub kind: EventKind,
    pub template: FrameTemplate,
    pub state: StateChange,
    /// Identifies this publish across retries, so a retry never appends twice.
    pub receipt: String,
    /// The receipt is a caller's idempotency key, to be remembered for 10 minutes (in
    /// its own key by `publish.lua`, which remembers other receipts only among the
    /// project's last publishes; the in-process broker, whose publishes never fail and so
    /// are never retried by the publisher, keeps only keyed ones).
    pub keyed: bool,
    /// This publish is sent again (same receipt) after an attempt whose outcome is not
    /// known (its answer was lost, e.g. in an outage): only then does `publish.lua` look
    /// an unkeyed receipt up among the project's last publishes, since a first attempt
    /// cannot have been done before. The publisher sets it on every attempt after the
    /// first (`publish::Publisher`) and on an update it keeps to send again (`Slot::keep`).
    pub retry: bool,
    /// The fence this event is published under, if any. The broker refuses the event
    /// ([`super::BrokerError::Stale`]) once a newer claim of its holder has published,
    /// once the holder's run has ended, or once another holder has published since; an
    /// event that ends the run records the holder, so it never completes twice.
    pub fence: Option<Fence>,
}
