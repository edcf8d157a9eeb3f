//! Generation jobs (package `progress-hub-jobs`): the `generate_video` pipeline
//! (`pipeline.rs`) over mock providers (`providers.rs`), carried by a job queue
//! (`queue.rs`: in-process, or Redis Streams so that `progress-hub worker` processes
//! anywhere can run them) and run by workers (`worker.rs`). Accepting one starts its run
//! in the project's state (`accept.rs`). What a job finished is kept with it
//! (`checkpoint.rs`), so a run that takes it over goes on from there. The routes that
//! generate, retry and cancel jobs (`http/`) and the worker join a hub as its extension
//! (`extension.rs`: [`Jobs`]); the hub library knows none of this.

pub mod accept;
pub mod checkpoint;
mod extension;
pub mod http;
pub mod pipeline;
mod probe;
pub mod providers;
pub mod queue;
pub mod redis_queue;
pub mod stages;
#[cfg(test)]
mod test_broker;
pub mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use checkpoint::Checkpoint;
pub use extension::{Jobs, JobsConfig};
pub use pipeline::{Outcome, RetryPolicy};
use progress_hub::wire::{InvalidEvent, ProjectId, Stage, Tag};

/// One `generate_video` request, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub project: ProjectId,
    pub topic: String,
    /// Transient failures the mock provider of each stage injects.
    pub inject_failures: BTreeMap<Stage, u32>,
    /// How many times the job was queued again as a new entry (handed back at a
    /// worker's shutdown, or queued again after Redis lost it). A new entry's delivery
    /// count starts again at 1, so this comes first in the claim's fencing token.
    pub requeued: u32,
    /// Who asked for it (its token's digest with access control on, else its address),
    /// for the per-client queue limit.
    pub client: Option<String>,
    /// A retry (`POST .../retry`): what the failed or cancelled job before it finished,
    /// so this one starts at the first unfinished step.
    pub resume_from: Option<Checkpoint>,
}

/// The queued form of a job (project ids travel as text and are validated on read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    project: String,
    topic: String,
    #[serde(default)]
    inject_failures: BTreeMap<Stage, u32>,
    #[serde(default)]
    requeued: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_from: Option<Checkpoint>,
}

impl Job {
    /// A job of `project` with no injected failures, as the unit tests queue it.
    #[cfg(test)]
    pub(crate) fn for_test(project: &str, id: &str) -> Self {
        Job {
            id: id.into(),
            project: ProjectId::parse(project).expect("a valid project id"),
            topic: "t".into(),
            inject_failures: BTreeMap::new(),
            requeued: 0,
            client: None,
            resume_from: None,
        }
    }

    pub fn to_json(&self) -> String {
        let record = JobRecord {
            id: self.id.clone(),
            project: self.project.to_string(),
            topic: self.topic.clone(),
            inject_failures: self.inject_failures.clone(),
            requeued: self.requeued,
            client: self.client.clone(),
            resume_from: self.resume_from.clone(),
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Self> {
        let record: JobRecord = serde_json::from_str(text).ok()?;
        Some(Self {
            id: record.id,
            project: ProjectId::parse(&record.project).ok()?,
            topic: record.topic,
            inject_failures: record.inject_failures,
            requeued: record.requeued,
            client: record.client,
            resume_from: record.resume_from,
        })
    }

    /// The job as it is queued again as a new entry.
    pub fn requeued_again(&self) -> Self {
        Self {
            requeued: self.requeued.saturating_add(1),
            ..self.clone()
        }
    }
}

/// The body of `POST /api/v1/projects/{id}/generate` (all optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub topic: Option<String>,
    /// e.g. {"ASSETS_GENERATING": 2}: that stage's mock provider fails twice, then succeeds.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inject_failures: BTreeMap<Stage, u32>,
    /// e.g. ["user:7", "team:2"]: the tags of the run (see `wire::Tag`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub tags: Option<serde_json::Value>,
}

/// Longest topic accepted.
pub const MAX_TOPIC: usize = 200;
/// Most failures that may be injected into one stage.
pub const MAX_INJECTED_FAILURES: u32 = 20;

impl GenerateRequest {
    /// The run's tags, validated (none when the request names none).
    pub fn tags(&self) -> Result<Vec<Tag>, InvalidEvent> {
        Tag::parse_field(self.tags.as_ref()).map(Option::unwrap_or_default)
    }

    pub fn into_job(
        self,
        project: ProjectId,
        default_topic: &str,
        client: Option<String>,
    ) -> Result<Job, InvalidEvent> {
        let topic = self.topic.unwrap_or_else(|| default_topic.to_string());
        if topic.trim().is_empty() || topic.chars().count() > MAX_TOPIC {
            return Err(InvalidEvent {
                field: "topic".into(),
                message: format!("must be 1 to {MAX_TOPIC} characters"),
            });
        }
        if let Some((stage, _)) = self
            .inject_failures
            .iter()
            .find(|(_, n)| **n > MAX_INJECTED_FAILURES)
        {
            return Err(InvalidEvent {
                field: format!("inject_failures.{}", stage.as_str()),
                message: format!("at most {MAX_INJECTED_FAILURES}"),
            });
        }
        Ok(Job {
            id: new_job_id(),
            project,
            topic,
            inject_failures: self.inject_failures,
            requeued: 0,
            client,
            resume_from: None,
        })
    }
}

pub fn new_job_id() -> String {
    use rand::Rng;
    format!("job-{:016x}", rand::rng().random::<u64>())
}

/// How many jobs may wait in the queue (taken jobs are bounded by the workers). A
/// `generate` past a limit is refused (429 per client, 503 for all) rather than queued
/// for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Jobs waiting to be taken, from every client.
    pub max_queued: usize,
    /// Jobs of one client (its token with access control on, else its address) not yet
    /// finished, waiting or running.
    pub max_queued_per_client: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_queued: 1000,
            max_queued_per_client: 20,
        }
    }
}

/// How workers run jobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Delay of one unit of mock work (a full run is 36 units).
    pub mock_delay: Duration,
    pub retry: RetryPolicy,
    /// Jobs one worker runs at once.
    pub concurrency: usize,
    /// Provider calls one job's ASSETS stage makes at once (its images and avatar run
    /// in parallel, after the voice); 1 runs them one by one.
    pub asset_concurrency: usize,
    /// A job whose worker has not shown life for this long is taken over.
    pub claim_idle: Duration,
    /// How long a stopping worker lets its jobs finish before handing them back.
    pub shutdown_grace: Duration,
    /// How long a job's publish waits out a broker outage before it reports an error.
    pub publish_retry: Duration,
    /// Where the mock providers log every call they start (tests count them there).
    pub mock_call_log: Option<std::path::PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            mock_delay: Duration::from_millis(1600),
            retry: RetryPolicy::default(),
            concurrency: 4,
            asset_concurrency: 4,
            claim_idle: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            publish_retry: Duration::from_secs(120),
            mock_call_log: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_through_json() {
        let job = Job {
            id: "job-1".into(),
            project: ProjectId::parse("p").unwrap(),
            topic: "AI".into(),
            inject_failures: BTreeMap::from([(Stage::Rendering, 2)]),
            requeued: 3,
            client: Some("127.0.0.1".into()),
            resume_from: Some(Checkpoint {
                youtube_url: Some("u".into()),
                ..Checkpoint::default()
            }),
        };
        assert_eq!(Job::from_json(&job.to_json()), Some(job));
        assert_eq!(
            Job::from_json(r#"{"id":"x","project":"../bad","topic":"t"}"#),
            None
        );
        assert_eq!(Job::from_json("nope"), None);
    }

    #[test]
    fn generate_requests_are_validated() {
        let p = ProjectId::parse("p").unwrap();
        let ok = GenerateRequest::default()
            .into_job(p.clone(), "AI", None)
            .unwrap();
        assert_eq!(ok.topic, "AI");
        assert!(ok.id.starts_with("job-"));
        let long = GenerateRequest {
            topic: Some("x".repeat(201)),
            ..Default::default()
        };
        assert_eq!(
            long.into_job(p.clone(), "AI", None).unwrap_err().field,
            "topic"
        );
        let many = GenerateRequest {
            inject_failures: BTreeMap::from([(Stage::Uploading, 21)]),
            ..Default::default()
        };
        assert_eq!(
            many.into_job(p, "AI", None).unwrap_err().field,
            "inject_failures.UPLOADING"
        );
    }
}
