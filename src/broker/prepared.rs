//! What the broker's atomic publish takes: an event already validated, normalized and
//! turned into a frame with two holes, what it changes in the project's state, its
//! receipt and the job claim it is published under. Built once by the publisher
//! (`publish/prepare.rs`), never patched; both brokers (`publish.lua`, `memory.rs`)
//! complete it the same way.

use crate::wire::EventKind;

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

/// What an event changes in the project's state (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateChange {
    pub status: Option<String>,
    pub current_stage: Option<String>,
    pub estimated_remaining: Option<Option<u64>>,
    pub youtube_url: Option<String>,
    /// Progress the state is raised to regardless of the frame (`complete` → 100).
    pub progress_floor: Option<u8>,
    pub updated_at: String,
    /// A `QUEUED` update: a new run starts, whatever came before (progress from 0, the
    /// last run's status, stage, ETA, link and job gone), with this job and place.
    pub starts_run: bool,
    pub job_id: Option<String>,
    pub queue_position: Option<u64>,
}

/// One claim of a generation job: the job, and its fencing token, which grows with
/// every claim of the job (`job::queue::Claimed::fencing_token`): a worker that stalled
/// and lost its job holds a lower one than the worker that took the job over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaim {
    pub job_id: String,
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
    /// The receipt is a caller's idempotency key, to be remembered for 10 minutes.
    /// (`publish.lua` remembers every receipt that long; the in-process broker, whose
    /// publishes never fail and so are never retried by the publisher, keeps only these.)
    pub keyed: bool,
    /// The generation job's claim this event is published under, if any. The broker
    /// refuses the event ([`super::BrokerError::Stale`]) once a newer claim of the job
    /// has published, or once the job's `complete` is in; a `complete` records the job,
    /// so it never completes twice.
    pub job: Option<JobClaim>,
}
