//! Events on the hub's publish path, as the contract states them: the types and their
//! validation, plain data. Turning one into what the broker publishes is the
//! publisher's (`publish/prepare.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::EventKind;
use crate::catalog::ErrorCode;
use crate::locale::Locale;

/// The five stages of a generation job, in order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    ScriptGenerating,
    AssetsGenerating,
    Rendering,
    ThumbnailGenerating,
    Uploading,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::ScriptGenerating,
        Stage::AssetsGenerating,
        Stage::Rendering,
        Stage::ThumbnailGenerating,
        Stage::Uploading,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScriptGenerating => "SCRIPT_GENERATING",
            Self::AssetsGenerating => "ASSETS_GENERATING",
            Self::Rendering => "RENDERING",
            Self::ThumbnailGenerating => "THUMBNAIL_GENERATING",
            Self::Uploading => "UPLOADING",
        }
    }

    /// What a person reads while this stage runs.
    pub fn label(self, locale: Locale) -> &'static str {
        match self {
            Self::ScriptGenerating => locale.pick("正在生成腳本...", "Generating the script..."),
            Self::AssetsGenerating => locale.pick("正在生成素材...", "Generating assets..."),
            Self::Rendering => locale.pick("正在渲染影片...", "Rendering the video..."),
            Self::ThumbnailGenerating => {
                locale.pick("正在生成封面...", "Generating the thumbnail...")
            }
            Self::Uploading => locale.pick("正在上傳到 YouTube...", "Uploading to YouTube..."),
        }
    }
}

/// Where a `stage_change` comes from: a stage, or `INITIALIZED`, the state before the
/// first stage (what the original Python workers send with their first stage change).
/// `INITIALIZED` is never a `status` or a `current_stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreviousStage {
    Initialized,
    ScriptGenerating,
    AssetsGenerating,
    Rendering,
    ThumbnailGenerating,
    Uploading,
}

impl From<Stage> for PreviousStage {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::ScriptGenerating => Self::ScriptGenerating,
            Stage::AssetsGenerating => Self::AssetsGenerating,
            Stage::Rendering => Self::Rendering,
            Stage::ThumbnailGenerating => Self::ThumbnailGenerating,
            Stage::Uploading => Self::Uploading,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompleteStatus {
    Completed,
    Failed,
    // The job was stopped on request (`POST .../cancel`); no doc comment, so the
    // schema lists the statuses as one `enum`.
    Cancelled,
}

impl CompleteStatus {
    /// Every terminal status.
    pub const ALL: [CompleteStatus; 3] = [Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// What a `progress_update` says the run is doing: a stage, or `QUEUED` (a job was
/// accepted and waits for a worker: the start of a new run, see [`ProgressUpdate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgressStatus {
    Queued,
    ScriptGenerating,
    AssetsGenerating,
    Rendering,
    ThumbnailGenerating,
    Uploading,
}

impl ProgressStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::ScriptGenerating => Stage::ScriptGenerating.as_str(),
            Self::AssetsGenerating => Stage::AssetsGenerating.as_str(),
            Self::Rendering => Stage::Rendering.as_str(),
            Self::ThumbnailGenerating => Stage::ThumbnailGenerating.as_str(),
            Self::Uploading => Stage::Uploading.as_str(),
        }
    }
}

impl From<Stage> for ProgressStatus {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::ScriptGenerating => Self::ScriptGenerating,
            Stage::AssetsGenerating => Self::AssetsGenerating,
            Stage::Rendering => Self::Rendering,
            Stage::ThumbnailGenerating => Self::ThumbnailGenerating,
            Stage::Uploading => Self::Uploading,
        }
    }
}

/// Where the run is. With `status: QUEUED` it starts a new run (progress from 0, the
/// last run's link and status gone), whatever came before: what accepting a job
/// publishes, naming the job and its place in the queue when it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    pub status: ProgressStatus,
    pub progress: u8,
    pub current_stage: String,
    #[serde(default)]
    pub estimated_remaining: Option<u64>,
    /// The job of the run (with `QUEUED` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The job's place among the jobs waiting when it was accepted, 1 when none waited
    /// before it (with `QUEUED` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// While the stage runs parallel units (ASSETS 37/120): how many of them are done
    /// (given with `units_total`, never above it; not with `QUEUED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_done: Option<u32>,
    /// While the stage runs parallel units: how many it has (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_total: Option<u32>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageChange {
    #[serde(default)]
    pub previous_stage: Option<PreviousStage>,
    pub current_stage: Stage,
    pub progress: u8,
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub level: LogLevel,
    pub message: String,
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReport {
    pub error_code: ErrorCode,
    pub message: String,
    pub stage: Stage,
    #[serde(default)]
    pub retry_count: u32,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// From the catalog when absent.
    #[serde(default)]
    pub is_retryable: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Map<String, Value>>,
    /// From the catalog when absent.
    #[serde(default)]
    pub solutions: Option<Vec<String>>,
    /// Minted when absent, so every error can be traced.
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

fn default_max_retries() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub status: CompleteStatus,
    #[serde(default)]
    pub youtube_url: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// An event on the hub's publish path, as a worker or the HTTP API states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    ProgressUpdate(ProgressUpdate),
    StageChange(StageChange),
    Log(Log),
    Error(ErrorReport),
    Complete(Complete),
}

/// A rule of the contract the event breaks. `field` is the JSON path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidEvent {
    pub field: String,
    pub message: String,
}

impl InvalidEvent {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Limits on free text, so no event can be used to ship megabytes through the hub.
pub const MAX_STAGE_TEXT: usize = 500;
pub const MAX_MESSAGE: usize = 8 * 1024;
pub const MAX_TRACE_ID: usize = 128;
/// A job id a `QUEUED` update may name (the hub mints `job-` and 16 hex digits).
pub const MAX_JOB_ID: usize = 128;
pub const MAX_SOLUTIONS: usize = 20;
pub const MAX_URL: usize = 2048;

impl Event {
    /// Parses a JSON body into the contract's types, naming the offending field on
    /// failure (whatever the order of `event` and `data` in the body). What types alone
    /// cannot say (ranges, lengths, formats) is [`Event::validate`]'s, which the publish
    /// path runs once for every event, however it arrived.
    pub fn from_json(body: &[u8]) -> Result<Self, InvalidEvent> {
        let must_be_object = || {
            InvalidEvent::new(
                "body",
                "must be a JSON object {\"event\": ..., \"data\": {...}}",
            )
        };
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(must_be_object());
        }
        let mut envelope: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| InvalidEvent::new("body", format!("not valid JSON: {e}")))?;
        let name = match envelope.get("event") {
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(InvalidEvent::new("event", "must be a string")),
            None => return Err(InvalidEvent::new("event", "missing field `event`")),
        };
        let data = envelope
            .remove("data")
            .ok_or_else(|| InvalidEvent::new("data", "missing field `data`"))?;
        match EventKind::from_name(&name) {
            EventKind::ProgressUpdate => Ok(Self::ProgressUpdate(data_as(data)?)),
            EventKind::StageChange => Ok(Self::StageChange(data_as(data)?)),
            EventKind::Log => Ok(Self::Log(data_as(data)?)),
            EventKind::Error => Ok(Self::Error(data_as(data)?)),
            EventKind::Complete => Ok(Self::Complete(data_as(data)?)),
            _ => Err(InvalidEvent::new(
                "event",
                "must be one of progress_update, stage_change, log, error, complete",
            )),
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Self::ProgressUpdate(_) => EventKind::ProgressUpdate,
            Self::StageChange(_) => EventKind::StageChange,
            Self::Log(_) => EventKind::Log,
            Self::Error(_) => EventKind::Error,
            Self::Complete(_) => EventKind::Complete,
        }
    }

    /// The time the publisher gave, if any.
    pub fn timestamp(&self) -> Option<&str> {
        match self {
            Self::ProgressUpdate(e) => e.timestamp.as_deref(),
            Self::StageChange(e) => e.timestamp.as_deref(),
            Self::Log(e) => e.timestamp.as_deref(),
            Self::Error(e) => e.timestamp.as_deref(),
            Self::Complete(e) => e.timestamp.as_deref(),
        }
    }

    /// Checks what types alone cannot: ranges, lengths, formats.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let timestamp = match self {
            Self::ProgressUpdate(e) => {
                check_progress("data.progress", e.progress)?;
                check_len("data.current_stage", &e.current_stage, MAX_STAGE_TEXT)?;
                if let Some(job) = &e.job_id {
                    check_len("data.job_id", job, MAX_JOB_ID)?;
                }
                // A job and its place name a queued run; on a stage they would be stale.
                if e.status != ProgressStatus::Queued {
                    if e.job_id.is_some() {
                        return Err(InvalidEvent::new(
                            "data.job_id",
                            "job_id is given with status QUEUED only",
                        ));
                    }
                    if e.queue_position.is_some() {
                        return Err(InvalidEvent::new(
                            "data.queue_position",
                            "queue_position is given with status QUEUED only",
                        ));
                    }
                }
                check_units(e)?;
                &e.timestamp
            }
            Self::StageChange(e) => {
                check_progress("data.progress", e.progress)?;
                &e.timestamp
            }
            Self::Log(e) => {
                check_len("data.message", &e.message, MAX_MESSAGE)?;
                &e.timestamp
            }
            Self::Error(e) => {
                check_len("data.message", &e.message, MAX_MESSAGE)?;
                if let Some(trace) = &e.trace_id {
                    check_len("data.trace_id", trace, MAX_TRACE_ID)?;
                }
                if let Some(solutions) = &e.solutions {
                    if solutions.len() > MAX_SOLUTIONS {
                        return Err(InvalidEvent::new(
                            "data.solutions",
                            format!("at most {MAX_SOLUTIONS} solutions"),
                        ));
                    }
                    for s in solutions {
                        check_len("data.solutions", s, MAX_STAGE_TEXT)?;
                    }
                }
                if e.retry_count > e.max_retries.saturating_add(1) {
                    return Err(InvalidEvent::new(
                        "data.retry_count",
                        "retry_count cannot exceed max_retries + 1",
                    ));
                }
                &e.timestamp
            }
            Self::Complete(e) => {
                if let Some(url) = &e.youtube_url {
                    check_len("data.youtube_url", url, MAX_URL)?;
                    if !url.starts_with("https://") {
                        return Err(InvalidEvent::new(
                            "data.youtube_url",
                            "must be an https:// URL",
                        ));
                    }
                }
                &e.timestamp
            }
        };
        if let Some(ts) = timestamp
            && chrono::DateTime::parse_from_rfc3339(ts).is_err()
        {
            return Err(InvalidEvent::new(
                "data.timestamp",
                "must be ISO 8601 / RFC 3339, e.g. 2025-10-19T10:35:00Z",
            ));
        }
        Ok(())
    }
}

/// Deserializes an event's `data`, naming the offending field as `data.<path>`.
fn data_as<T: serde::de::DeserializeOwned>(data: Value) -> Result<T, InvalidEvent> {
    serde_path_to_error::deserialize(data).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path == "?" {
            "data".to_string()
        } else {
            format!("data.{path}")
        };
        InvalidEvent::new(&field, err.into_inner().to_string())
    })
}

/// `units_done`/`units_total` come together, on a stage (not `QUEUED`), with
/// `0 <= units_done <= units_total` and `units_total >= 1`.
fn check_units(e: &ProgressUpdate) -> Result<(), InvalidEvent> {
    let (done, total) = match (e.units_done, e.units_total) {
        (None, None) => return Ok(()),
        (Some(done), Some(total)) => (done, total),
        (Some(_), None) => {
            return Err(InvalidEvent::new(
                "data.units_total",
                "units_done is given with units_total",
            ));
        }
        (None, Some(_)) => {
            return Err(InvalidEvent::new(
                "data.units_done",
                "units_total is given with units_done",
            ));
        }
    };
    if e.status == ProgressStatus::Queued {
        return Err(InvalidEvent::new(
            "data.units_done",
            "units_done and units_total are given with a stage, not QUEUED",
        ));
    }
    if total == 0 {
        return Err(InvalidEvent::new("data.units_total", "must be at least 1"));
    }
    if done > total {
        return Err(InvalidEvent::new(
            "data.units_done",
            "cannot exceed units_total",
        ));
    }
    Ok(())
}

fn check_progress(field: &str, progress: u8) -> Result<(), InvalidEvent> {
    if progress > 100 {
        return Err(InvalidEvent::new(field, "must be between 0 and 100"));
    }
    Ok(())
}

fn check_len(field: &str, text: &str, max: usize) -> Result<(), InvalidEvent> {
    if text.chars().count() > max {
        return Err(InvalidEvent::new(
            field,
            format!("at most {max} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Event, InvalidEvent> {
        let event = Event::from_json(json.as_bytes())?;
        event.validate()?;
        Ok(event)
    }

    #[test]
    fn parses_every_event_of_the_contract() {
        for json in [
            r#"{"event":"progress_update","data":{"status":"RENDERING","progress":60,"current_stage":"渲染中","estimated_remaining":240}}"#,
            r#"{"event":"stage_change","data":{"previous_stage":"SCRIPT_GENERATING","current_stage":"ASSETS_GENERATING","progress":25,"timestamp":"2025-10-19T10:35:00Z"}}"#,
            r#"{"event":"log","data":{"level":"WARNING","message":"[3/15] 正在生成圖片"}}"#,
            r#"{"event":"error","data":{"error_code":"STABILITY_AI_ERROR","message":"配額","stage":"ASSETS_GENERATING","retry_count":2,"max_retries":3}}"#,
            r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=abc"}}"#,
            r#"{"event":"complete","data":{"status":"FAILED","youtube_url":null}}"#,
        ] {
            assert!(parse(json).is_ok(), "{json}: {:?}", parse(json));
        }
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","progress":101,"current_stage":"x"}}"#,
                "data.progress",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","progress":-1,"current_stage":"x"}}"#,
                "data.progress",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"DANCING","progress":1,"current_stage":"x"}}"#,
                "data.status",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","current_stage":"x"}}"#,
                "data",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","progress":1,"current_stage":"x","progres":2}}"#,
                "data",
            ),
            (
                r#"{"event":"log","data":{"level":"LOUD","message":"x"}}"#,
                "data.level",
            ),
            (
                r#"{"event":"log","data":{"level":"INFO","message":"x","timestamp":"yesterday"}}"#,
                "data.timestamp",
            ),
            (
                r#"{"event":"error","data":{"error_code":"NOPE","message":"x","stage":"RENDERING"}}"#,
                "data.error_code",
            ),
            (
                r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"javascript:alert(1)"}}"#,
                "data.youtube_url",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","progress":1,"current_stage":"x","job_id":"j"}}"#,
                "data.job_id",
            ),
            (
                r#"{"event":"progress_update","data":{"status":"RENDERING","progress":1,"current_stage":"x","queue_position":2}}"#,
                "data.queue_position",
            ),
            (r#"{"event":"explode","data":{}}"#, "event"),
            (r#"[1,2]"#, "body"),
            (r#"{"event":"log""#, "body"),
        ];
        for (json, field) in cases {
            let err = parse(json).expect_err(json);
            assert!(
                err.field.starts_with(field),
                "{json}: field {:?}, wanted {field}",
                err.field
            );
            assert!(!err.message.is_empty());
        }
        let long = format!(
            r#"{{"event":"log","data":{{"level":"INFO","message":"{}"}}}}"#,
            "x".repeat(MAX_MESSAGE + 1)
        );
        assert_eq!(parse(&long).unwrap_err().field, "data.message");
    }

    #[test]
    fn serde_tags_are_the_event_kinds_names() {
        for json in [
            r#"{"event":"progress_update","data":{"status":"RENDERING","progress":60,"current_stage":"x"}}"#,
            r#"{"event":"stage_change","data":{"current_stage":"RENDERING","progress":60}}"#,
            r#"{"event":"log","data":{"level":"INFO","message":"m"}}"#,
            r#"{"event":"error","data":{"error_code":"RENDER_ERROR","message":"m","stage":"RENDERING"}}"#,
            r#"{"event":"complete","data":{"status":"FAILED"}}"#,
            r#"{"event":"progress_update","data":{"status":"QUEUED","progress":0,"current_stage":"x","job_id":"j","queue_position":2}}"#,
        ] {
            let event = parse(json).unwrap();
            let tagged = serde_json::to_value(&event).unwrap();
            assert_eq!(tagged["event"], event.kind().name(), "{json}");
        }
    }
}
