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
use progress_hub::broker::BrokerError;
use progress_hub::locale::Locale;
use progress_hub::publish::{PublishError, Publisher};
use progress_hub::wire::event::{Log, LogLevel, ProgressStatus, ProgressUpdate};
use progress_hub::wire::{Event, Tag};

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
        .publish_tagged(project, start, None, Some(tags.clone()))
        .await
    {
        Ok(_) => {}
        // A worker took the job and published first: its run is the news, but it was
        // started without the run's tags (a worker does not know them). They ride on a
        // log line saying where the job was queued, or the run is in no tag's index.
        Err(PublishError::Broker(BrokerError::Stale(_))) => {
            tracing::debug!(project_id = %project, job_id = %job.id, "the job's run began before its QUEUED update");
            if !tags.is_empty() {
                let line = Event::Log(Log {
                    level: LogLevel::Info,
                    message: queued_text(locale, position),
                    timestamp: None,
                });
                if let Err(err) = publisher
                    .publish_tagged(project, line, None, Some(tags))
                    .await
                {
                    tracing::warn!(project_id = %project, job_id = %job.id, error = %err, "could not tag the job's run");
                }
            }
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

#[cfg(test)]
mod tests {
    //! Found by a flaky TypeScript tag test under load: a worker that took the job and
    //! published before the QUEUED update left the run with no tags, in no tag's index.
    use super::*;
    use crate::queue::MemoryQueue;
    use progress_hub::broker::{Fence, HistoryConfig};
    use progress_hub::hub::Hub;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn a_run_a_quick_worker_began_still_carries_its_tags() {
        let (hub, changes) = Hub::new(1000);
        let broker = progress_hub::broker::start(
            None,
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
            HistoryConfig::default(),
            hub,
            changes,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
        .unwrap();
        let publisher = Publisher::new(Arc::clone(&broker), Locale::En, Duration::ZERO);
        let queue = MemoryQueue::new(Duration::from_secs(60));
        let job = Job::for_test("quick", "job-quick");
        let tag = Tag::parse("team:quick").unwrap();
        // The worker's first event, under the job's claim, before the QUEUED update.
        let worker = publisher.for_claim(Fence {
            holder: job.id.clone(),
            token: 1,
        });
        worker
            .publish_log(&job.project, LogLevel::Info, "started")
            .await
            .unwrap();
        accept(&queue, &publisher, &job, vec![tag.clone()])
            .await
            .unwrap();
        let state = broker.replay(&job.project, None).await.unwrap().state;
        assert_eq!(state.unwrap().0.tags, vec!["team:quick".to_string()]);
        let tagged = broker.tagged(&tag, 0, None, 10).await.unwrap();
        assert_eq!(
            tagged.iter().map(|e| e.project.clone()).collect::<Vec<_>>(),
            vec![job.project.clone()]
        );
    }
}
