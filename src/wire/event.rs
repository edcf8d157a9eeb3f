//! Events on the hub's publish path: typed, validated, then turned into a frame template
//! that the broker completes with the event's id in one atomic step.
//!
//! The frame's bytes are produced here, once, by serde; the broker only fills in two
//! holes: the `id` (known only inside the atomic step) and the `progress` (clamped there
//! so that progress never goes backwards within a run, whoever publishes).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{ProjectId, now_iso8601};
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
}

impl CompleteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    pub status: Stage,
    pub progress: u8,
    pub current_stage: String,
    #[serde(default)]
    pub estimated_remaining: Option<u64>,
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
    fn new(field: &str, message: impl Into<String>) -> Self {
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
pub const MAX_SOLUTIONS: usize = 20;
pub const MAX_URL: usize = 2048;

impl Event {
    /// Parses a JSON body, naming the offending field on failure (whatever the order of
    /// `event` and `data` in the body).
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
        let event = match name.as_str() {
            "progress_update" => Self::ProgressUpdate(data_as(data)?),
            "stage_change" => Self::StageChange(data_as(data)?),
            "log" => Self::Log(data_as(data)?),
            "error" => Self::Error(data_as(data)?),
            "complete" => Self::Complete(data_as(data)?),
            _ => {
                return Err(InvalidEvent::new(
                    "event",
                    "must be one of progress_update, stage_change, log, error, complete",
                ));
            }
        };
        event.validate()?;
        Ok(event)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::ProgressUpdate(_) => "progress_update",
            Self::StageChange(_) => "stage_change",
            Self::Log(_) => "log",
            Self::Error(_) => "error",
            Self::Complete(_) => "complete",
        }
    }

    /// Checks what types alone cannot: ranges, lengths, formats.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let timestamp = match self {
            Self::ProgressUpdate(e) => {
                check_progress("data.progress", e.progress)?;
                check_len("data.current_stage", &e.current_stage, MAX_STAGE_TEXT)?;
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

    /// Fills what the publisher may leave out: the timestamp, and for errors the
    /// catalog's `is_retryable` and `solutions` and a fresh `trace_id`.
    pub fn normalized(mut self, locale: Locale) -> Self {
        let now = || Some(now_iso8601());
        match &mut self {
            Self::ProgressUpdate(e) => {
                e.timestamp = e.timestamp.take().or_else(now);
            }
            Self::StageChange(e) => e.timestamp = e.timestamp.take().or_else(now),
            Self::Log(e) => e.timestamp = e.timestamp.take().or_else(now),
            Self::Complete(e) => e.timestamp = e.timestamp.take().or_else(now),
            Self::Error(e) => {
                e.timestamp = e.timestamp.take().or_else(now);
                let entry = e.error_code.entry();
                e.is_retryable = e.is_retryable.or(Some(entry.retryable));
                if e.solutions.is_none() {
                    e.solutions = Some(entry.solutions(locale));
                }
                if e.details.is_none() {
                    e.details = Some(Map::new());
                }
                if e.trace_id.is_none() {
                    e.trace_id = Some(new_trace_id());
                }
            }
        }
        self
    }

    fn timestamp(&self) -> Option<&str> {
        match self {
            Self::ProgressUpdate(e) => e.timestamp.as_deref(),
            Self::StageChange(e) => e.timestamp.as_deref(),
            Self::Log(e) => e.timestamp.as_deref(),
            Self::Error(e) => e.timestamp.as_deref(),
            Self::Complete(e) => e.timestamp.as_deref(),
        }
    }

    /// The frame with two holes (id, progress), and what the event changes in the
    /// project's state. Call on a normalized event.
    pub fn prepare(&self, project: &ProjectId, locale: Locale) -> PreparedEvent {
        let name = self.name();
        let (data, progress, extra) = match self {
            Self::ProgressUpdate(e) => (to_map(e), Some(e.progress), None),
            Self::StageChange(e) => (to_map(e), Some(e.progress), None),
            Self::Log(e) => (to_map(e), None, None),
            Self::Error(e) => (to_map(e), None, Some(error_compat(project, e))),
            Self::Complete(e) => (to_map(e), None, None),
        };
        let mut data = data;
        data.remove("progress");
        let fields = Value::Object(data).to_string();
        // `fields` is `{...}`: keep what follows the opening brace.
        let inner = &fields[1..];
        let mut tail = String::with_capacity(fields.len() + 64);
        if progress.is_some() && inner != "}" {
            tail.push(',');
        }
        tail.push_str(inner);
        if let Some(extra) = extra {
            let extra = Value::Object(extra).to_string();
            tail.push(',');
            tail.push_str(&extra[1..]);
        } else {
            tail.push('}');
        }
        let template = FrameTemplate {
            head: format!("{{\"event\":\"{name}\",\"id\":\""),
            mid: "\",\"data\":{".to_string(),
            tail,
            progress,
        };
        PreparedEvent {
            template,
            state: self.state_change(locale),
            receipt: new_trace_id(),
            keyed: false,
        }
    }

    fn state_change(&self, locale: Locale) -> StateChange {
        let mut change = StateChange {
            event: self.name(),
            updated_at: self
                .timestamp()
                .map(str::to_string)
                .unwrap_or_else(now_iso8601),
            ..StateChange::default()
        };
        match self {
            Self::ProgressUpdate(e) => {
                change.status = Some(e.status.as_str().to_string());
                change.current_stage = Some(e.current_stage.clone());
                change.estimated_remaining = Some(e.estimated_remaining);
            }
            Self::StageChange(e) => {
                change.status = Some(e.current_stage.as_str().to_string());
                change.current_stage = Some(e.current_stage.label(locale).to_string());
            }
            Self::Complete(e) => {
                change.status = Some(e.status.as_str().to_string());
                change.youtube_url = e.youtube_url.clone();
                if e.status == CompleteStatus::Completed {
                    change.progress_floor = Some(100);
                    change.estimated_remaining = Some(Some(0));
                    change.current_stage = Some(locale.pick("已完成", "Completed").to_string());
                } else {
                    change.estimated_remaining = Some(None);
                    change.current_stage = Some(locale.pick("生成失敗", "Failed").to_string());
                }
            }
            Self::Log(_) | Self::Error(_) => {}
        }
        change
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

fn to_map(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        // Every event body is a struct, which serializes to an object.
        _ => Map::new(),
    }
}

/// The shape front ends written against the product's error-code catalog read:
/// top-level `type`, `project_id` and `error`, with the same facts as `data`.
fn error_compat(project: &ProjectId, e: &ErrorReport) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("type".into(), "error".into());
    map.insert("project_id".into(), project.as_str().into());
    map.insert(
        "error".into(),
        serde_json::json!({
            "code": e.error_code,
            "message": e.message,
            "stage": e.stage,
            "is_retryable": e.is_retryable,
            "details": e.details,
            "solutions": e.solutions,
            "trace_id": e.trace_id,
            "timestamp": e.timestamp,
        }),
    );
    map
}

/// A fresh trace id: 16 hex digits.
pub fn new_trace_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// A frame with holes for the id and the (clamped) progress:
/// `head + id + mid + ["progress":N] + tail`. Redis's publish script assembles it the
/// same way (see `broker/publish.lua`).
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
    pub event: &'static str,
    pub status: Option<String>,
    pub current_stage: Option<String>,
    pub estimated_remaining: Option<Option<u64>>,
    pub youtube_url: Option<String>,
    /// Progress the state is raised to regardless of the frame (`complete` → 100).
    pub progress_floor: Option<u8>,
    pub updated_at: String,
    /// The generation job's claim this event is published under, if any. The broker
    /// refuses the event ([`crate::broker::BrokerError::Stale`]) once a newer claim of
    /// the job has published, or once the job's `complete` is in; a `complete` records
    /// the job, so it never completes twice.
    pub job: Option<JobClaim>,
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
    pub template: FrameTemplate,
    pub state: StateChange,
    /// Identifies this publish across retries, so a retry never appends twice.
    pub receipt: String,
    /// The receipt is a caller's idempotency key, to be remembered for 10 minutes.
    /// (`publish.lua` remembers every receipt that long; the in-process broker, whose
    /// publishes never fail and so are never retried by the publisher, keeps only these.)
    pub keyed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> ProjectId {
        ProjectId::parse("p1").unwrap()
    }

    fn parse(json: &str) -> Result<Event, InvalidEvent> {
        Event::from_json(json.as_bytes())
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
    fn template_assembles_the_frame_with_id_and_progress() {
        let event = parse(r#"{"event":"progress_update","data":{"status":"RENDERING","progress":60,"current_stage":"渲染中","estimated_remaining":null,"timestamp":"2025-10-19T10:35:00Z"}}"#).unwrap();
        let prepared = event.prepare(&pid(), Locale::ZhTw);
        assert_eq!(prepared.template.progress, Some(60));
        let frame: Value =
            serde_json::from_str(&prepared.template.assemble("ep:7", Some(65))).unwrap();
        assert_eq!(frame["event"], "progress_update");
        assert_eq!(frame["id"], "ep:7");
        assert_eq!(frame["data"]["progress"], 65);
        assert_eq!(frame["data"]["status"], "RENDERING");
        assert_eq!(frame["data"]["estimated_remaining"], Value::Null);
        assert_eq!(frame["data"]["timestamp"], "2025-10-19T10:35:00Z");
        assert_eq!(prepared.state.status.as_deref(), Some("RENDERING"));
    }

    #[test]
    fn templates_without_progress_are_valid_json() {
        for json in [
            r#"{"event":"log","data":{"level":"INFO","message":"hi"}}"#,
            r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=1"}}"#,
        ] {
            let event = parse(json).unwrap().normalized(Locale::En);
            let text = event
                .prepare(&pid(), Locale::En)
                .template
                .assemble("e:1", None);
            let frame: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(frame["id"], "e:1");
            assert!(frame["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
        }
    }

    #[test]
    fn error_frames_carry_both_shapes_from_the_catalog() {
        let event = parse(r#"{"event":"error","data":{"error_code":"GEMINI_QUOTA_EXCEEDED","message":"quota","stage":"SCRIPT_GENERATING","retry_count":1}}"#)
            .unwrap()
            .normalized(Locale::En);
        let text = event
            .prepare(&pid(), Locale::En)
            .template
            .assemble("e:2", None);
        let frame: Value = serde_json::from_str(&text).unwrap();
        let data = &frame["data"];
        assert_eq!(data["error_code"], "GEMINI_QUOTA_EXCEEDED");
        assert_eq!(data["is_retryable"], false);
        assert_eq!(data["max_retries"], 3);
        assert_eq!(data["details"], serde_json::json!({}));
        assert!(data["solutions"].as_array().unwrap().len() >= 2);
        assert_eq!(data["trace_id"].as_str().unwrap().len(), 16);
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["project_id"], "p1");
        let compat = &frame["error"];
        assert_eq!(compat["code"], data["error_code"]);
        for key in [
            "message",
            "stage",
            "is_retryable",
            "details",
            "solutions",
            "trace_id",
            "timestamp",
        ] {
            assert_eq!(compat[key], data[key], "{key}");
        }
    }

    #[test]
    fn initialized_is_a_previous_stage_only() {
        let first = r#"{"event":"stage_change","data":{"previous_stage":"INITIALIZED","current_stage":"SCRIPT_GENERATING","progress":5}}"#;
        let text = parse(first)
            .unwrap()
            .normalized(Locale::En)
            .prepare(&pid(), Locale::En)
            .template
            .assemble("e:1", Some(5));
        let frame: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(frame["data"]["previous_stage"], "INITIALIZED");
        for json in [
            r#"{"event":"stage_change","data":{"previous_stage":"SCRIPT_GENERATING","current_stage":"INITIALIZED","progress":5}}"#,
            r#"{"event":"progress_update","data":{"status":"INITIALIZED","progress":5,"current_stage":"x"}}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }

    #[test]
    fn complete_raises_state_progress_to_100() {
        let event = parse(r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=1"}}"#).unwrap();
        let state = event.prepare(&pid(), Locale::ZhTw).state;
        assert_eq!(state.progress_floor, Some(100));
        assert_eq!(state.status.as_deref(), Some("COMPLETED"));
        assert_eq!(
            state.youtube_url.as_deref(),
            Some("https://youtube.com/watch?v=1")
        );
    }
}
