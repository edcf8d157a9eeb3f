//! `generate_video`: the five stages of a generation job, publishing every step.
//!
//! SCRIPT_GENERATING → ASSETS_GENERATING → RENDERING → THUMBNAIL_GENERATING → UPLOADING.
//! The stages are data (`stages.rs`: a stage is its units, a unit one provider call with
//! its weight); one loop runs them all. Each stage opens with a `stage_change`; each
//! unit logs a line; progress rises by the weight of the units done, with an ETA from
//! the measured pace; each failed attempt publishes an `error`; the job ends with
//! exactly one `complete`.
//!
//! The units of a parallel stage (ASSETS: the images and the avatar, after the voice)
//! run up to `asset_concurrency` at once, started in the plan's order; its progress
//! updates carry `units_done` of `units_total`, and progress rises as each unit ends,
//! in whatever order they end.
//!
//! A cancel (`JobQueue::cancel`) is looked for before every unit starts and before every
//! provider call, retries included: no unit starts after it is seen; the units in flight
//! finish (their outputs are recorded, so a retry does not pay for them again), their
//! retries do not start. The run says so in a log line and ends with a `complete` of
//! status `CANCELLED`. A unit that fails for good stops its stage the same way.
//!
//! After each unit's provider call returns, its output is recorded with the job (a
//! [`Checkpoint`], under the run's claim) before its progress is published. A run that
//! takes the job over (its worker died, stalled, or handed it back) skips every recorded
//! unit: it says so in a log line, opens with a `stage_change` whose `previous_stage` is
//! the stage the run was in, and its progress goes on from the recorded work. Only the
//! calls in flight when the old run stopped are made again. A retry
//! (`Job::resume_from`) starts the same way from what the failed job finished, as a new
//! run, and says so in a log line.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Checkpoint, EXPECTED_PARAGRAPHS};
use super::providers::Providers;
use super::queue::{Claimed, JobQueue, Ownership};
use super::stages::{self, Call, Output, Plan, Unit};
use progress_hub::broker::BrokerError;
use progress_hub::catalog::ErrorCode;
use progress_hub::locale::Locale;
use progress_hub::publish::prepare::new_trace_id;
use progress_hub::publish::{PublishError, Publisher};
use progress_hub::wire::event::{CompleteStatus, ErrorReport, LogLevel};
use progress_hub::wire::{Event, EventKind, ProjectId, Stage};

/// How failed provider calls are retried: capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        youtube_url: String,
    },
    Failed {
        error_code: ErrorCode,
    },
    /// A cancel was asked; no provider call was started after it was seen.
    Cancelled,
}

/// Why the stages stopped before the end.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// A unit's retries are spent (or its error cannot be retried).
    Failed(ErrorCode),
    /// A cancel of the job was asked.
    Cancelled,
}

/// Everything a running job needs. Its units in flight share it (`&Run`), so what
/// changes is behind atomics and a lock that is never held across an await.
pub struct Run<'a> {
    publisher: &'a Publisher,
    project: ProjectId,
    locale: Locale,
    retry: RetryPolicy,
    /// Units of a parallel stage in flight at once.
    parallel: usize,
    total_units: u32,
    done_units: AtomicU32,
    /// Units already done when this run started (recorded by an earlier run): the ETA
    /// is measured on this run's own pace.
    start_units: u32,
    started: Instant,
    /// What the job finished so far, recorded after every provider call.
    checkpoint: Mutex<Checkpoint>,
    queue: &'a dyn JobQueue,
    claimed: &'a Claimed,
    /// Set while the first stage of a run that took the job over is still to be
    /// entered: its `stage_change` names the stage the run was in.
    taking_over: AtomicBool,
    /// Cancelled when a stage stops (a cancel seen, a unit failed for good): the units
    /// in flight start no further attempt.
    halt: CancellationToken,
}

impl<'a> Run<'a> {
    fn t(&self, zh: &'a str, en: &'a str) -> &'a str {
        self.locale.pick(zh, en)
    }

    /// What the job finished so far (a copy: the lock is not held).
    fn done(&self) -> Checkpoint {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Checkpoint> {
        // A panic while the lock was held left a checkpoint that is still whole.
        self.checkpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn progress(&self) -> u8 {
        let done = self.done_units.load(Ordering::SeqCst);
        ((done * 100) / self.total_units.max(1)).min(100) as u8
    }

    /// Seconds left at the pace measured so far; `None` before anything was measured.
    fn eta(&self) -> Option<u64> {
        let done = self.done_units.load(Ordering::SeqCst);
        let done_here = done.saturating_sub(self.start_units);
        if done_here == 0 {
            return None;
        }
        let per_unit = self.started.elapsed().as_secs_f64() / f64::from(done_here);
        let left = f64::from(self.total_units.saturating_sub(done)) * per_unit;
        Some(left.ceil() as u64)
    }

    /// Records what the job finished so far with the job, under this run's claim. Best
    /// effort, like publishing: if it fails, a run that takes the job over redoes the
    /// unit; a lost claim is the worker's to act on (its keep-alive drops this run).
    async fn save(&self) {
        let checkpoint = self.done();
        match self.queue.record(self.claimed, &checkpoint).await {
            Ok(Ownership::Held) => {}
            Ok(Ownership::Lost { holder }) => {
                tracing::warn!(project_id = %self.project, holder = holder.as_deref().unwrap_or("none"), "the job's claim was lost; its progress was not recorded");
            }
            Err(err) => {
                tracing::warn!(project_id = %self.project, error = %err, "could not record the job's progress; a run that takes it over redoes this unit");
            }
        }
    }

    /// Opens `stage` unless it is finished: publishes its `stage_change` (from the
    /// stage before it; or, for a run that took the job over, from the stage the run
    /// was in, which is this one) and says whether it has work left.
    async fn enter(&self, stage: Stage) -> bool {
        if self.lock().finished(stage) {
            return false;
        }
        let previous = if self.taking_over.swap(false, Ordering::SeqCst) {
            Some(stage)
        } else {
            Stage::ALL
                .iter()
                .position(|s| *s == stage)
                .and_then(|i| i.checked_sub(1))
                .map(|i| Stage::ALL[i])
        };
        self.stage(previous, stage).await;
        true
    }

    /// Publishing is best effort inside a job: a publish error is logged, and the job
    /// goes on (the worker's work is not lost because a watcher may miss a line).
    /// A refusal of a superseded run's event is logged (as a warning) where it happens.
    async fn report<T>(&self, kind: EventKind, result: Result<T, PublishError>) {
        match result {
            Ok(_) | Err(PublishError::Broker(BrokerError::Stale(_))) => {}
            Err(err) => {
                tracing::error!(project_id = %self.project, error = %err, what = kind.name(), "publishing a job event failed");
            }
        }
    }

    async fn log(&self, level: LogLevel, message: &str) {
        let r = self
            .publisher
            .publish_log(&self.project, level, message)
            .await;
        self.report(EventKind::Log, r).await;
    }

    async fn stage(&self, previous: Option<Stage>, current: Stage) {
        let r = self
            .publisher
            .publish_stage_change(&self.project, previous, current, self.progress())
            .await;
        self.report(EventKind::StageChange, r).await;
    }

    /// Publishes the progress of `units` more units of work done; `count`: the units of
    /// a parallel stage done, and how many it has.
    async fn advance(&self, stage: Stage, units: u32, text: &str, count: Option<(u32, u32)>) {
        self.done_units.fetch_add(units, Ordering::SeqCst);
        let r = self
            .publisher
            .publish_units_progress(
                &self.project,
                stage,
                self.progress(),
                text,
                self.eta(),
                count,
            )
            .await;
        self.report(EventKind::ProgressUpdate, r).await;
    }

    /// Whether the job may go on: not if a cancel of it was asked. A queue that cannot
    /// be asked lets it go on (it is logged): the next call asks again.
    async fn go_on(&self) -> Result<(), Stop> {
        match self.queue.cancel_requested(self.claimed).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(Stop::Cancelled),
            Err(err) => {
                tracing::warn!(project_id = %self.project, error = %err, "could not ask whether the job was cancelled; going on");
                Ok(())
            }
        }
    }

    /// Calls a provider, retrying transient failures; publishes an `error` for every
    /// failed attempt. No retry starts once a cancel of the job was asked or its stage
    /// stopped (`halt`); the first attempt's cancel check is the caller's.
    async fn call(&self, stage: Stage, mut call: Call) -> Result<Output, Stop> {
        let mut delays = self.retry.delays();
        let mut retry_count = 0;
        loop {
            if retry_count > 0 {
                if self.halt.is_cancelled() {
                    return Err(Stop::Cancelled);
                }
                self.go_on().await?;
            }
            let err = match call().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let will_retry = err.retryable && retry_count < self.retry.max_retries;
            let delay = if will_retry { delays.next() } else { None };
            let mut details = Map::new();
            details.insert("attempt".into(), json!(retry_count + 1));
            details.insert("will_retry".into(), json!(will_retry));
            if let Some(delay) = delay {
                details.insert("retry_in_ms".into(), json!(delay.as_millis() as u64));
            }
            // The trace id ties the user's error card to this log line.
            let trace_id = new_trace_id();
            tracing::warn!(error_code = ?err.code, stage = stage.as_str(), retry_count, %trace_id, error = %err.message, "provider call failed");
            let report = ErrorReport {
                error_code: err.code,
                message: err.message.clone(),
                stage,
                retry_count,
                max_retries: self.retry.max_retries,
                is_retryable: Some(err.retryable),
                details: Some(details),
                solutions: None,
                trace_id: Some(trace_id),
                timestamp: None,
            };
            let r = self
                .publisher
                .publish(&self.project, Event::Error(report))
                .await;
            self.report(EventKind::Error, r).await;
            let Some(delay) = delay else {
                return Err(Stop::Failed(err.code));
            };
            let message = match self.locale {
                Locale::ZhTw => format!(
                    "將在 {:.1} 秒後重試（第 {}/{} 次）",
                    delay.as_secs_f64(),
                    retry_count + 1,
                    self.retry.max_retries
                ),
                Locale::En => format!(
                    "Retrying in {:.1} s (retry {}/{})",
                    delay.as_secs_f64(),
                    retry_count + 1,
                    self.retry.max_retries
                ),
            };
            self.log(LogLevel::Warning, &message).await;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.halt.cancelled() => return Err(Stop::Cancelled),
            }
            retry_count += 1;
        }
    }

    /// Runs the units of `plan` not done yet: in its order, each after the unit it
    /// needs, up to `parallel` at once for a parallel stage (else one by one). Each
    /// unit's output is recorded, then its progress published. The first stop (a
    /// cancel seen, a unit failed for good) starts no further unit; the units in flight
    /// end first (their outputs recorded).
    async fn run_stage(&self, plan: &Plan, providers: &Providers, topic: &str) -> Result<(), Stop> {
        let limit = if plan.parallel {
            self.parallel.max(1)
        } else {
            1
        };
        let mut waiting: VecDeque<Unit> = {
            let done = self.lock();
            plan.units
                .iter()
                .copied()
                .filter(|u| !done.has(*u))
                .collect()
        };
        let mut running = FuturesUnordered::new();
        let mut stop: Option<Stop> = None;
        loop {
            while stop.is_none() && running.len() < limit {
                let Some(&unit) = waiting.front() else { break };
                if unit.needs().is_some_and(|need| !self.lock().has(need)) {
                    break;
                }
                if let Err(s) = self.go_on().await {
                    stop = Some(s);
                    break;
                }
                waiting.pop_front();
                let done = self.done();
                if let Some(line) = stages::before_line(self.locale, unit, done.script.as_ref()) {
                    self.log(LogLevel::Info, &line).await;
                }
                let Some(call) =
                    unit.call(providers, topic, done.script.as_ref(), done.voice.as_ref())
                else {
                    stop = Some(Stop::Failed(ErrorCode::InternalError));
                    break;
                };
                running.push(async move { (unit, self.call(plan.stage, call).await) });
            }
            if stop.is_some() {
                self.halt.cancel();
            }
            let Some((unit, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(output) => self.finish(plan, unit, output).await,
                Err(s) => {
                    stop.get_or_insert(s);
                }
            }
        }
        match stop {
            Some(s) => Err(s),
            // A unit left waiting for one that never ran: the plan's order rules it out.
            None if !waiting.is_empty() => Err(Stop::Failed(ErrorCode::InternalError)),
            None => Ok(()),
        }
    }

    /// A unit's call returned: its output is recorded with the job, then its lines and
    /// progress published.
    async fn finish(&self, plan: &Plan, unit: Unit, output: Output) {
        let after = stages::after_line(self.locale, unit, &output);
        let (text, count) = {
            let mut done = self.lock();
            done.put(unit, output);
            let count = plan.parallel.then(|| {
                let finished = plan.units.iter().filter(|u| done.has(**u)).count();
                (finished as u32, plan.units.len() as u32)
            });
            let images = done.images.iter().flatten().count();
            let paragraphs = done.script.as_ref().map_or(0, |s| s.paragraphs.len());
            let text = stages::progress_text(self.locale, unit, images, paragraphs);
            (text, count)
        };
        self.save().await;
        if let Some(line) = after {
            self.log(LogLevel::Info, &line).await;
        }
        self.advance(plan.stage, unit.weight(), &text, count).await;
    }
}

/// Runs a generation job to its one `complete`, from the first unit `claimed` has not
/// finished, recording each unit with the job in `queue`; the units of a parallel stage
/// run up to `parallel` at once.
pub async fn generate_video(
    publisher: &Publisher,
    providers: &Providers,
    retry: RetryPolicy,
    parallel: usize,
    queue: &dyn JobQueue,
    claimed: &Claimed,
) -> Outcome {
    let job = &claimed.job;
    // A retry's first run starts where the failed job before it stopped; any later run
    // of it, where the job's own record says.
    let retrying = claimed.checkpoint.is_empty() && job.resume_from.is_some();
    let checkpoint = match &job.resume_from {
        Some(from) if retrying => from.clone(),
        _ => claimed.checkpoint.clone(),
    };
    let done_units = checkpoint.done_units();
    let run = Run {
        publisher,
        project: job.project.clone(),
        locale: publisher.locale(),
        retry,
        parallel,
        total_units: checkpoint::total_units(EXPECTED_PARAGRAPHS),
        done_units: AtomicU32::new(done_units),
        start_units: done_units,
        started: Instant::now(),
        checkpoint: Mutex::new(checkpoint),
        queue,
        claimed,
        taking_over: AtomicBool::new(claimed.taken_over()),
        halt: CancellationToken::new(),
    };
    if claimed.taken_over() {
        say_taken_over(&run).await;
    } else if retrying {
        // Recorded with this job at once: a run taking it over, or the next retry,
        // starts here too.
        run.save().await;
        say_retrying(&run).await;
    }
    let outcome = match stages(&run, providers, &job.topic).await {
        Ok(youtube_url) => Outcome::Completed { youtube_url },
        Err(Stop::Failed(error_code)) => Outcome::Failed { error_code },
        Err(Stop::Cancelled) => Outcome::Cancelled,
    };
    let (status, url) = match &outcome {
        Outcome::Completed { youtube_url } => {
            (CompleteStatus::Completed, Some(youtube_url.as_str()))
        }
        Outcome::Failed { error_code } => {
            let message = format!(
                "{} ({error_code:?})",
                run.t(
                    "生成失敗：重試次數已用盡",
                    "Generation failed: retries exhausted"
                )
            );
            run.log(LogLevel::Error, &message).await;
            (CompleteStatus::Failed, None)
        }
        Outcome::Cancelled => {
            let message = run.t(
                "工作已取消：不再呼叫任何服務",
                "The job was cancelled: no further provider is called",
            );
            run.log(LogLevel::Warning, message).await;
            (CompleteStatus::Cancelled, None)
        }
    };
    let r = publisher.publish_complete(&job.project, status, url).await;
    run.report(EventKind::Complete, r).await;
    outcome
}

/// The log line of a retry: where it starts.
async fn say_retrying(run: &Run<'_>) {
    let at = run
        .done()
        .current_stage()
        .map_or("UPLOADING", Stage::as_str);
    let message = match run.locale {
        Locale::ZhTw => format!("重試：從 {at} 繼續（已完成的步驟不重做）"),
        Locale::En => format!("Retrying from {at} (finished steps are not redone)"),
    };
    run.log(LogLevel::Info, &message).await;
}

/// The log line of a run that takes a job over: where it goes on, and why.
async fn say_taken_over(run: &Run<'_>) {
    let at = run.done().current_stage();
    tracing::info!(
        project_id = %run.project,
        job_id = %run.claimed.job.id,
        reclaimed = run.claimed.reclaimed(),
        resume_at = at.map_or("complete", Stage::as_str),
        done_units = run.start_units,
        "job taken over; resuming at its first unfinished step"
    );
    let why = if run.claimed.reclaimed() {
        run.t(
            "先前的 worker 已停止回應，",
            "The previous worker stopped responding; ",
        )
    } else {
        ""
    };
    let message = match (run.locale, at) {
        (Locale::ZhTw, Some(stage)) => format!(
            "{why}工作由其他 worker 接手，從 {} 繼續（已完成的步驟不重做）",
            stage.as_str()
        ),
        (Locale::En, Some(stage)) => format!(
            "{why}another worker took the job over and goes on at {} (finished steps are not redone)",
            stage.as_str()
        ),
        (Locale::ZhTw, None) => format!("{why}工作由其他 worker 接手：所有步驟皆已完成"),
        (Locale::En, None) => {
            format!("{why}another worker took the job over: every step was finished")
        }
    };
    run.log(LogLevel::Warning, &message).await;
}

/// Every stage not finished, in order, each with its plan; the script's link at the end.
async fn stages(run: &Run<'_>, providers: &Providers, topic: &str) -> Result<String, Stop> {
    // A job cancelled while it waited in the queue ends before it starts.
    run.go_on().await?;
    for stage in Stage::ALL {
        if !run.enter(stage).await {
            continue;
        }
        if let Some(line) = stages::opening_line(run.locale, stage) {
            run.log(LogLevel::Info, line).await;
        }
        // The stages after the script are planned on it (a paragraph, an image).
        let paragraphs = run
            .lock()
            .script
            .as_ref()
            .map_or(EXPECTED_PARAGRAPHS, |s| s.paragraphs.len());
        run.run_stage(&stages::plan(stage, paragraphs), providers, topic)
            .await?;
    }
    run.lock()
        .youtube_url
        .clone()
        .ok_or(Stop::Failed(ErrorCode::InternalError))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::Job;
    use crate::providers::{Asset, CallLog, Paragraph, Script};
    use crate::queue::MemoryQueue;
    use progress_hub::broker::Broker;
    use progress_hub::broker::memory::MemoryBroker;
    use progress_hub::wire::EventId;
    use serde_json::Value;

    /// Every frame of the project's history, as JSON.
    async fn frames(broker: &MemoryBroker, project: &ProjectId) -> Vec<Value> {
        let replay = broker.replay(project, None).await.unwrap();
        let Some((_, last)) = replay.state else {
            return Vec::new();
        };
        let start = EventId::new(last.epoch(), 0);
        broker
            .replay(project, Some(&start))
            .await
            .unwrap()
            .after
            .iter()
            .map(|f| serde_json::from_str(f.text().as_str()).unwrap())
            .collect()
    }

    // The in-process queue carries what a job finished as the Redis queue does: a run
    // that takes over a job whose script, voice and images are recorded calls the
    // avatar provider and the later ones only, says it took over, and opens with a
    // stage_change from the stage the run was in, at the progress of the work done.
    #[tokio::test(start_paused = true)]
    async fn a_run_taking_a_job_over_calls_no_provider_of_a_finished_step() {
        let (broker, shutdown) = crate::test_broker::memory_broker();
        let publisher = Publisher::new(broker.clone(), Locale::En, Duration::ZERO);
        let idle = Duration::from_secs(30);
        let wait = Duration::from_millis(10);
        let queue = MemoryQueue::new(idle);
        let project = ProjectId::parse("resumed").unwrap();
        let job = Job::for_test("resumed", "job-resumed");
        queue.submit(&job).await.unwrap();
        let first = queue.take("w1", wait).await.unwrap().unwrap();
        let asset = |name: String| Asset { name };
        let done = Checkpoint {
            script: Some(Script {
                title: "t".into(),
                paragraphs: (1..=EXPECTED_PARAGRAPHS)
                    .map(|n| Paragraph {
                        title: format!("p{n}"),
                        text: "x".into(),
                    })
                    .collect(),
            }),
            voice: Some(asset("voice.mp3".into())),
            images: (1..=EXPECTED_PARAGRAPHS)
                .map(|n| Some(asset(format!("image-{n:02}.png"))))
                .collect(),
            ..Checkpoint::default()
        };
        assert_eq!(queue.record(&first, &done).await.unwrap(), Ownership::Held);
        tokio::time::advance(idle).await;
        let second = queue.take("w2", wait).await.unwrap().unwrap();

        let log = std::env::temp_dir().join(format!("resumed-calls-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let providers = Providers::mock(
            Duration::from_millis(10),
            &BTreeMap::new(),
            Locale::En,
            Some(CallLog::new(&log)),
        );
        let outcome = generate_video(
            &publisher,
            &providers,
            RetryPolicy::default(),
            4,
            &queue,
            &second,
        )
        .await;
        assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
        let calls = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                "ASSETS_GENERATING avatar",
                "RENDERING part-1",
                "RENDERING part-2",
                "RENDERING part-3",
                "RENDERING part-4",
                "THUMBNAIL_GENERATING thumbnail",
                "UPLOADING upload",
            ]
        );

        let frames = frames(&broker, &project).await;
        assert_eq!(frames[0]["event"], "log");
        assert_eq!(frames[0]["data"]["level"], "WARNING");
        let said = frames[0]["data"]["message"].as_str().unwrap();
        assert!(
            said.contains("took the job over") && said.contains("ASSETS_GENERATING"),
            "{said}"
        );
        let changes: Vec<&Value> = frames
            .iter()
            .filter(|f| f["event"] == "stage_change")
            .collect();
        let done_progress =
            u64::from(done.done_units() * 100 / checkpoint::total_units(EXPECTED_PARAGRAPHS));
        assert_eq!(changes[0]["data"]["previous_stage"], "ASSETS_GENERATING");
        assert_eq!(changes[0]["data"]["current_stage"], "ASSETS_GENERATING");
        assert_eq!(changes[0]["data"]["progress"], done_progress);
        let stages: Vec<&str> = changes
            .iter()
            .map(|f| f["data"]["current_stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "ASSETS_GENERATING",
                "RENDERING",
                "THUMBNAIL_GENERATING",
                "UPLOADING"
            ]
        );
        let progress: Vec<u64> = frames
            .iter()
            .filter(|f| f["event"] == "progress_update")
            .map(|f| f["data"]["progress"].as_u64().unwrap())
            .collect();
        assert!(
            progress[0] > done_progress && progress.windows(2).all(|w| w[0] < w[1]),
            "goes on from {done_progress}, no repeats: {progress:?}"
        );
        assert_eq!(frames.last().unwrap()["event"], "complete");
        shutdown.cancel();
    }

    /// Images that take `delay`, but paragraph `bad`'s, which fails for good at once;
    /// every call is noted when it starts.
    struct OneBadImage {
        delay: Duration,
        bad: usize,
        started: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    #[async_trait::async_trait]
    impl crate::providers::ImageGenerator for OneBadImage {
        async fn generate_image(
            &self,
            _paragraph: &Paragraph,
            index: usize,
        ) -> Result<Asset, crate::providers::ProviderError> {
            self.started.lock().unwrap().push(index);
            if index == self.bad {
                return Err(crate::providers::ProviderError {
                    code: ErrorCode::StabilityAiError,
                    message: "refused".into(),
                    retryable: false,
                });
            }
            tokio::time::sleep(self.delay).await;
            Ok(Asset {
                name: format!("image-{index:02}.png"),
            })
        }
    }

    // A unit of a parallel stage that fails for good stops the stage: no queued unit
    // starts, the units in flight end and are recorded (a retry does not pay for them
    // again), and the job ends FAILED with one complete.
    #[tokio::test(start_paused = true)]
    async fn a_unit_failing_for_good_starts_no_queued_unit_and_keeps_those_in_flight() {
        let (broker, shutdown) = crate::test_broker::memory_broker();
        let publisher = Publisher::new(broker.clone(), Locale::En, Duration::ZERO);
        let idle = Duration::from_secs(30);
        let wait = Duration::from_millis(10);
        let queue = MemoryQueue::new(idle);
        let project = ProjectId::parse("one-bad").unwrap();
        queue
            .submit(&Job::for_test("one-bad", "job-one-bad"))
            .await
            .unwrap();
        let claimed = queue.take("w1", wait).await.unwrap().unwrap();
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut providers = Providers::mock(
            Duration::from_millis(10),
            &BTreeMap::new(),
            Locale::En,
            None,
        );
        providers.images = Arc::new(OneBadImage {
            delay: Duration::from_millis(50),
            bad: 2,
            started: started.clone(),
        });
        let outcome = generate_video(
            &publisher,
            &providers,
            RetryPolicy::default(),
            4,
            &queue,
            &claimed,
        )
        .await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                error_code: ErrorCode::StabilityAiError
            }
        );
        assert_eq!(
            *started.lock().unwrap(),
            [1, 2, 3, 4],
            "the first four start together; none after the failure"
        );
        tokio::time::advance(idle).await;
        let next = queue.take("w2", wait).await.unwrap().unwrap();
        let made: Vec<usize> = (1..=15)
            .filter(|n| next.checkpoint.has(Unit::Image(*n)))
            .collect();
        assert_eq!(made, [1, 3, 4], "the images in flight are recorded");
        let frames = frames(&broker, &project).await;
        let ends: Vec<&Value> = frames.iter().filter(|f| f["event"] == "complete").collect();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0]["data"]["status"], "FAILED");
        let counts: Vec<u64> = frames
            .iter()
            .filter_map(|f| f["data"]["units_done"].as_u64())
            .collect();
        assert_eq!(counts, [1, 2, 3, 4], "the voice, then images 1, 3 and 4");
        shutdown.cancel();
    }
}
