//! Accepting a job: queue it, then start its run in the project's state, so that no one
//! watching the project takes the last run's end for this one's (issue 23 §1).
//!
//! The run starts with a `progress_update` of status `QUEUED` (progress 0, the job's id
//! and its place in the queue) on the hub's publish path: the state shows it at once
//! (`GET /api/v1/projects/{id}`, a late joiner's `snapshot`), live watchers receive it,
//! and resumers replay it in order with the rest. It is published after the job is
//! queued, so a refused submit (`Busy`, a limit) changes nothing; a worker quick enough
//! to publish the job's first event before it makes the broker refuse it (the run has
//! begun, see `publish.lua`), so it never resets a run under way.

use super::Job;
use super::queue::{JobQueue, QueueError, Queued};
use crate::broker::BrokerError;
use crate::locale::Locale;
use crate::publish::{PublishError, Publisher};
use crate::wire::event::{LogLevel, ProgressStatus, ProgressUpdate};
use crate::wire::{Event, Tag};

/// Queues `job` and publishes the start of its run, which carries the run's `tags` (and,
/// when it waits behind others, a log line giving its place). The job is queued whatever becomes of the publishes:
/// they are logged, and the worker's first event starts the run in any case.
pub async fn accept(
    queue: &dyn JobQueue,
    publisher: &Publisher,
    job: &Job,
    tags: Vec<Tag>,
) -> Result<Queued, QueueError> {
    let queued = queue.submit(job).await?;
    let position = queued.position;
    let project = &job.project;
    let locale = publisher.locale();
    let start = Event::ProgressUpdate(ProgressUpdate {
        status: ProgressStatus::Queued,
        progress: 0,
        current_stage: queued_text(locale, position),
        estimated_remaining: None,
        job_id: Some(job.id.clone()),
        queue_position: Some(position),
        units_done: None,
        units_total: None,
        timestamp: None,
    });
    match publisher
        .publish_tagged(project, start, None, Some(tags))
        .await
    {
        Ok(_) => {}
        // A worker took the job and published first: its run is the news.
        Err(PublishError::Broker(BrokerError::Stale(_))) => {
            tracing::debug!(project_id = %project, job_id = %job.id, "the job's run began before its QUEUED update");
            return Ok(queued);
        }
        Err(err) => {
            tracing::warn!(project_id = %project, job_id = %job.id, error = %err, "could not publish the start of the job's run");
        }
    }
    if position > 1 {
        // The job waits behind others: its first log line says where it is.
        let text = waiting_text(locale, position);
        if let Err(err) = publisher.publish_log(project, LogLevel::Info, &text).await {
            tracing::warn!(project_id = %project, error = %err, "could not publish the job's queue position");
        }
    }
    Ok(queued)
}

/// The `current_stage` of a queued run.
fn queued_text(locale: Locale, position: u64) -> String {
    match locale {
        Locale::ZhTw => format!("已排入佇列（第 {position} 位）"),
        Locale::En => format!("Queued (position {position})"),
    }
}

/// The log line of a job waiting behind others.
fn waiting_text(locale: Locale, position: u64) -> String {
    let ahead = position - 1;
    match locale {
        Locale::ZhTw => format!("已排入佇列：第 {position} 位（前面還有 {ahead} 個工作等待中）"),
        Locale::En => format!("Queued: position {position} ({ahead} jobs waiting ahead)"),
    }
}
