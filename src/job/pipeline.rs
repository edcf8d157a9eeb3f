//! `generate_video`: the five stages of a generation job, publishing every step.
//!
//! SCRIPT_GENERATING → ASSETS_GENERATING → RENDERING → THUMBNAIL_GENERATING → UPLOADING.
//! Each stage opens with a `stage_change`; each step logs a line; progress rises by the
//! weight of the work done (see `providers::weight`), with an ETA from the measured
//! pace; each failed attempt publishes an `error`; the job ends with exactly one
//! `complete`.
//!
//! A cancel (`JobQueue::cancel`) is looked for before every provider call, retries
//! included: the run stops between calls (the one in flight finishes, none starts
//! after it), says so in a log line and ends with a `complete` of status `CANCELLED`.
//!
//! After each provider call returns, its output is recorded with the job (a
//! [`Checkpoint`], under the run's claim) before the step's progress is published. A run
//! that takes the job over (its worker died, stalled, or handed it back) skips every
//! recorded step: it says so in a log line, opens with a `stage_change` whose
//! `previous_stage` is the stage the run was in, and its progress goes on from the
//! recorded work. Only a call in flight when the old run stopped is made again. A retry
//! (`Job::resume_from`) starts the same way from what the failed job finished, as a new
//! run, and says so in a log line.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::{Map, json};
use tokio::time::Instant;

use super::checkpoint::{self, Checkpoint, EXPECTED_PARAGRAPHS, RENDER_PARTS};
use super::providers::{ProviderError, Providers, weight};
use super::queue::{Claimed, JobQueue, Ownership};
use crate::broker::BrokerError;
use crate::catalog::ErrorCode;
use crate::locale::Locale;
use crate::publish::prepare::new_trace_id;
use crate::publish::{PublishError, Publisher};
use crate::wire::event::{CompleteStatus, ErrorReport, LogLevel};
use crate::wire::{Event, EventKind, ProjectId, Stage};

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
enum Stop {
    /// A stage's retries are spent (or its error cannot be retried).
    Failed(ErrorCode),
    /// A cancel of the job was asked.
    Cancelled,
}

/// Everything a running job needs.
pub struct Run<'a> {
    publisher: &'a Publisher,
    project: ProjectId,
    locale: Locale,
    retry: RetryPolicy,
    total_units: u32,
    done_units: u32,
    /// Units already done when this run started (recorded by an earlier run): the ETA
    /// is measured on this run's own pace.
    start_units: u32,
    started: Instant,
    /// What the job finished so far, recorded after every provider call.
    checkpoint: Checkpoint,
    queue: &'a dyn JobQueue,
    claimed: &'a Claimed,
    /// Set while the first stage of a run that took the job over is still to be
    /// entered: its `stage_change` names the stage the run was in.
    taking_over: bool,
}

impl<'a> Run<'a> {
    fn t(&self, zh: &'a str, en: &'a str) -> &'a str {
        self.locale.pick(zh, en)
    }

    fn progress(&self) -> u8 {
        ((self.done_units * 100) / self.total_units.max(1)).min(100) as u8
    }

    /// Seconds left at the pace measured so far; `None` before anything was measured.
    fn eta(&self) -> Option<u64> {
        let done_here = self.done_units.saturating_sub(self.start_units);
        if done_here == 0 {
            return None;
        }
        let per_unit = self.started.elapsed().as_secs_f64() / f64::from(done_here);
        let left = f64::from(self.total_units.saturating_sub(self.done_units)) * per_unit;
        Some(left.ceil() as u64)
    }

    /// Records what the job finished so far with the job, under this run's claim. Best
    /// effort, like publishing: if it fails, a run that takes the job over redoes the
    /// step; a lost claim is the worker's to act on (its keep-alive drops this run).
    async fn save(&self) {
        match self.queue.record(self.claimed, &self.checkpoint).await {
            Ok(Ownership::Held) => {}
            Ok(Ownership::Lost { holder }) => {
                tracing::warn!(project_id = %self.project, holder = holder.as_deref().unwrap_or("none"), "the job's claim was lost; its progress was not recorded");
            }
            Err(err) => {
                tracing::warn!(project_id = %self.project, error = %err, "could not record the job's progress; a run that takes it over redoes this step");
            }
        }
    }

    /// Opens `stage` unless it is finished: publishes its `stage_change` (from the
    /// stage before it; or, for a run that took the job over, from the stage the run
    /// was in, which is this one) and says whether it has work left.
    async fn enter(&mut self, stage: Stage) -> bool {
        if self.checkpoint.finished(stage) {
            return false;
        }
        let previous = if std::mem::take(&mut self.taking_over) {
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

    async fn advance(&mut self, stage: Stage, units: u32, text: &str) {
        self.done_units += units;
        let r = self
            .publisher
            .publish_progress(&self.project, stage, self.progress(), text, self.eta())
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
    /// failed attempt. No attempt starts once a cancel of the job was asked.
    async fn call<T, F, Fut>(&self, stage: Stage, mut call: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut delays = self.retry.delays();
        let mut retry_count = 0;
        loop {
            self.go_on().await?;
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
            tokio::time::sleep(delay).await;
            retry_count += 1;
        }
    }
}

/// Runs a generation job to its one `complete`, from the first step `claimed` has not
/// finished, recording each step with the job in `queue`.
pub async fn generate_video(
    publisher: &Publisher,
    providers: &Providers,
    retry: RetryPolicy,
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
    let mut run = Run {
        publisher,
        project: job.project.clone(),
        locale: publisher.locale(),
        retry,
        total_units: checkpoint::total_units(EXPECTED_PARAGRAPHS),
        done_units,
        start_units: done_units,
        started: Instant::now(),
        checkpoint,
        queue,
        claimed,
        taking_over: claimed.taken_over(),
    };
    if run.taking_over {
        say_taken_over(&run).await;
    } else if retrying {
        // Recorded with this job at once: a run taking it over, or the next retry,
        // starts here too.
        run.save().await;
        say_retrying(&run).await;
    }
    let outcome = match stages(&mut run, providers, &job.topic).await {
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
        .checkpoint
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
    let at = run.checkpoint.current_stage();
    tracing::info!(
        project_id = %run.project,
        job_id = %run.claimed.job.id,
        reclaimed = run.claimed.reclaimed(),
        resume_at = at.map_or("complete", Stage::as_str),
        done_units = run.done_units,
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

async fn stages(run: &mut Run<'_>, providers: &Providers, topic: &str) -> Result<String, Stop> {
    use Stage::*;
    // A job cancelled while it waited in the queue ends before it starts.
    run.go_on().await?;
    // 1. Script.
    if run.enter(ScriptGenerating).await {
        run.log(
            LogLevel::Info,
            run.t("開始生成腳本...", "Writing the script..."),
        )
        .await;
        let script = run
            .call(ScriptGenerating, || providers.script.write_script(topic))
            .await?;
        let done = match run.locale {
            Locale::ZhTw => format!(
                "腳本完成：{}（{} 段）",
                script.title,
                script.paragraphs.len()
            ),
            Locale::En => format!(
                "Script ready: {} ({} paragraphs)",
                script.title,
                script.paragraphs.len()
            ),
        };
        run.checkpoint.script = Some(script);
        run.save().await;
        run.log(LogLevel::Info, &done).await;
        run.advance(
            ScriptGenerating,
            weight::SCRIPT,
            run.t("腳本已完成", "Script ready"),
        )
        .await;
    }
    let Some(script) = run.checkpoint.script.clone() else {
        return Err(Stop::Failed(ErrorCode::InternalError));
    };

    // 2. Assets: voice, one image per paragraph, avatar.
    if run.enter(AssetsGenerating).await {
        if run.checkpoint.voice.is_none() {
            run.log(
                LogLevel::Info,
                run.t("開始生成語音...", "Synthesizing the voice..."),
            )
            .await;
            let voice = run
                .call(AssetsGenerating, || providers.voice.synthesize(&script))
                .await?;
            run.checkpoint.voice = Some(voice);
            run.save().await;
            run.advance(
                AssetsGenerating,
                weight::VOICE,
                run.t("語音已完成", "Voice ready"),
            )
            .await;
        }
        let total = script.paragraphs.len();
        let made = run.checkpoint.images.len();
        for (i, paragraph) in script.paragraphs.iter().enumerate().skip(made) {
            let n = i + 1;
            let line = match run.locale {
                Locale::ZhTw => {
                    format!("[{n}/{total}] 正在生成圖片: 段落 {n} - {}", paragraph.title)
                }
                Locale::En => format!(
                    "[{n}/{total}] Generating image: paragraph {n} - {}",
                    paragraph.title
                ),
            };
            run.log(LogLevel::Info, &line).await;
            let image = run
                .call(AssetsGenerating, || {
                    providers.images.generate_image(paragraph, n)
                })
                .await?;
            run.checkpoint.images.push(image);
            run.save().await;
            let text = match run.locale {
                Locale::ZhTw => format!("正在生成圖片 ({n}/{total})"),
                Locale::En => format!("Generating images ({n}/{total})"),
            };
            run.advance(AssetsGenerating, weight::IMAGE, &text).await;
        }
        if run.checkpoint.avatar.is_none() {
            let Some(voice) = run.checkpoint.voice.clone() else {
                return Err(Stop::Failed(ErrorCode::InternalError));
            };
            run.log(
                LogLevel::Info,
                run.t("正在生成虛擬主播...", "Generating the avatar..."),
            )
            .await;
            let avatar = run
                .call(AssetsGenerating, || {
                    providers.avatar.generate_avatar(&voice)
                })
                .await?;
            run.checkpoint.avatar = Some(avatar);
            run.save().await;
            run.advance(
                AssetsGenerating,
                weight::AVATAR,
                run.t("虛擬主播已完成", "Avatar ready"),
            )
            .await;
        }
    }

    // 3. Rendering.
    if run.enter(Rendering).await {
        run.log(
            LogLevel::Info,
            run.t("開始渲染影片...", "Rendering the video..."),
        )
        .await;
        let rendered = run.checkpoint.render_parts.len();
        for part in rendered + 1..=RENDER_PARTS {
            let asset = run
                .call(Rendering, || {
                    providers.renderer.render_part(part, RENDER_PARTS)
                })
                .await?;
            run.checkpoint.render_parts.push(asset);
            run.save().await;
            let text = match run.locale {
                Locale::ZhTw => format!("正在渲染影片 ({part}/{RENDER_PARTS})"),
                Locale::En => format!("Rendering ({part}/{RENDER_PARTS})"),
            };
            run.log(LogLevel::Info, &text).await;
            run.advance(Rendering, weight::RENDER_PART, &text).await;
        }
    }

    // 4. Thumbnail.
    if run.enter(ThumbnailGenerating).await {
        run.log(
            LogLevel::Info,
            run.t("正在生成封面...", "Generating the thumbnail..."),
        )
        .await;
        let thumbnail = run
            .call(ThumbnailGenerating, || {
                providers.thumbnail.generate_thumbnail(&script)
            })
            .await?;
        run.checkpoint.thumbnail = Some(thumbnail);
        run.save().await;
        run.advance(
            ThumbnailGenerating,
            weight::THUMBNAIL,
            run.t("封面已完成", "Thumbnail ready"),
        )
        .await;
    }

    // 5. Upload.
    if run.enter(Uploading).await {
        run.log(
            LogLevel::Info,
            run.t("正在上傳到 YouTube...", "Uploading to YouTube..."),
        )
        .await;
        let url = run
            .call(Uploading, || providers.uploader.upload(&script.title))
            .await?;
        run.checkpoint.youtube_url = Some(url.clone());
        run.save().await;
        run.log(
            LogLevel::Info,
            &format!("{}{url}", run.t("上傳完成：", "Uploaded: ")),
        )
        .await;
        run.advance(
            Uploading,
            weight::UPLOAD,
            run.t("上傳完成", "Upload complete"),
        )
        .await;
    }
    run.checkpoint
        .youtube_url
        .clone()
        .ok_or(Stop::Failed(ErrorCode::InternalError))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::Value;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{Broker, HistoryConfig};
    use crate::hub::Hub;
    use crate::job::Job;
    use crate::job::providers::{Asset, CallLog, Paragraph, Script};
    use crate::job::queue::MemoryQueue;
    use crate::wire::EventId;

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
        let (hub, changes) = Hub::new(16);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let broker = Arc::new(MemoryBroker::start(
            HistoryConfig::default(),
            hub,
            changes,
            shutdown.clone(),
            &tracker,
        ));
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
                .map(|n| asset(format!("image-{n:02}.png")))
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
}
