//! `progress-hub publish`: one event through the hub's publish path, from a shell.
//!
//! With `--redis-url` (or `REDIS_URL`) it publishes straight into Redis with the
//! publisher library, as a worker would; otherwise it POSTs to a running hub's HTTP
//! API (`--hub-url`, default `http://127.0.0.1:8000`). Either way the event is built as
//! JSON and validated by the same code as the HTTP API.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::shared::HistoryArgs;
use progress_hub::broker::BrokerError;
use progress_hub::broker::redis::RedisBroker;
use progress_hub::locale::Locale;
use progress_hub::publish::{PublishError, Published, Publisher};
use progress_hub::wire::{Event, InvalidEvent, InvalidProjectId, ProjectId, Tag};

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The project to publish to.
    #[arg(long)]
    pub project: String,
    /// Publish straight into this Redis (as a worker does).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Otherwise, publish through this hub's HTTP API.
    #[arg(long, env = "HUB_URL", default_value = "http://127.0.0.1:8000")]
    pub hub_url: String,
    /// Access token with the publish scope (when the hub runs with --auth-secret).
    #[arg(long, env = "HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A tag of the project's run (repeat for more: `--tag user:7 --tag team:2`); the
    /// event gives the run these tags.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Language of catalog solutions filled in for `error`.
    #[arg(long, env = "HUB_LOCALE", default_value_t = Locale::default())]
    pub locale: Locale,
    #[command(subcommand)]
    pub event: EventArgs,
}

#[derive(Subcommand, Debug)]
pub enum EventArgs {
    /// progress_update: --status RENDERING --progress 60 --current-stage "..." [--estimated-remaining 240]
    /// [--units-done 37 --units-total 120 (a stage running parallel units)]
    ProgressUpdate {
        #[arg(long)]
        status: String,
        #[arg(long)]
        progress: i64,
        #[arg(long)]
        current_stage: String,
        #[arg(long)]
        estimated_remaining: Option<u64>,
        /// Units of the stage done (with --units-total), while it runs parallel units.
        #[arg(long, requires = "units_total")]
        units_done: Option<u64>,
        /// Units the stage has (with --units-done).
        #[arg(long, requires = "units_done")]
        units_total: Option<u64>,
    },
    /// stage_change: [--previous-stage X] --current-stage Y --progress 25
    StageChange {
        #[arg(long)]
        previous_stage: Option<String>,
        #[arg(long)]
        current_stage: String,
        #[arg(long)]
        progress: i64,
    },
    /// log: [--level INFO|WARNING|ERROR] MESSAGE
    Log {
        #[arg(long, default_value = "INFO")]
        level: String,
        message: String,
    },
    /// error: --error-code CODE --message TEXT --stage STAGE [--retry-count N] [--max-retries N]
    Error {
        #[arg(long)]
        error_code: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        stage: String,
        #[arg(long, default_value_t = 0)]
        retry_count: u32,
        #[arg(long, default_value_t = 3)]
        max_retries: u32,
    },
    /// complete: --status COMPLETED|FAILED|CANCELLED [--youtube-url URL]
    Complete {
        #[arg(long)]
        status: String,
        #[arg(long)]
        youtube_url: Option<String>,
    },
    /// A whole event as JSON: '{"event":"log","data":{...}}'
    Json { event: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishCommandError {
    #[error(transparent)]
    ProjectId(#[from] InvalidProjectId),
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("hub at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("hub refused the event ({status}): {body}")]
    Refused { status: u16, body: String },
}

impl From<PublishError> for PublishCommandError {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Invalid(e) => Self::Invalid(e),
            PublishError::Broker(e) => Self::Broker(e),
        }
    }
}

impl EventArgs {
    /// The event as the JSON the HTTP API takes.
    pub fn to_json(&self) -> Result<Value, InvalidEvent> {
        Ok(match self {
            Self::ProgressUpdate {
                status,
                progress,
                current_stage,
                estimated_remaining,
                units_done,
                units_total,
            } => {
                let mut event = json!({"event": "progress_update", "data": {
                    "status": status, "progress": progress, "current_stage": current_stage,
                    "estimated_remaining": estimated_remaining,
                }});
                if let (Some(done), Some(total)) = (units_done, units_total) {
                    event["data"]["units_done"] = json!(done);
                    event["data"]["units_total"] = json!(total);
                }
                event
            }
            Self::StageChange {
                previous_stage,
                current_stage,
                progress,
            } => json!({"event": "stage_change", "data": {
                "previous_stage": previous_stage, "current_stage": current_stage, "progress": progress,
            }}),
            Self::Log { level, message } => {
                json!({"event": "log", "data": {"level": level, "message": message}})
            }
            Self::Error {
                error_code,
                message,
                stage,
                retry_count,
                max_retries,
            } => json!({"event": "error", "data": {
                "error_code": error_code, "message": message, "stage": stage,
                "retry_count": retry_count, "max_retries": max_retries,
            }}),
            Self::Complete {
                status,
                youtube_url,
            } => {
                json!({"event": "complete", "data": {"status": status, "youtube_url": youtube_url}})
            }
            Self::Json { event } => serde_json::from_str(event).map_err(|e| InvalidEvent {
                field: "body".into(),
                message: format!("not valid JSON: {e}"),
            })?,
        })
    }
}

/// Publishes and returns the event id (`None`: held by coalescing, goes out shortly).
pub async fn run(args: &PublishArgs) -> Result<Option<String>, PublishCommandError> {
    let project = ProjectId::parse(&args.project)?;
    let mut body = args.event.to_json()?;
    let tags = (!args.tags.is_empty()).then(|| json!(args.tags));
    let tags = Tag::parse_field(tags.as_ref())?;
    if let Some(tags) = &tags {
        body["tags"] = json!(tags);
    }
    let event = Event::from_json(body.to_string().as_bytes())?;
    match &args.redis_url {
        Some(url) if !url.is_empty() => {
            let broker = RedisBroker::connect(url, args.history.config())?.following_the_hubs();
            let publisher =
                Publisher::new(std::sync::Arc::new(broker), args.locale, Duration::ZERO);
            let published = publisher
                .publish_tagged(&project, event, None, tags)
                .await?;
            Ok(match published {
                Published::Sent(id) => Some(id.to_string()),
                Published::Coalesced => None,
            })
        }
        _ => post(&args.hub_url, args.token.as_deref(), &project, &body).await,
    }
}

async fn post(
    hub: &str,
    token: Option<&str>,
    project: &ProjectId,
    body: &Value,
) -> Result<Option<String>, PublishCommandError> {
    let url = format!(
        "{}/api/v1/projects/{project}/events",
        hub.trim_end_matches('/')
    );
    let unreachable = |e: reqwest::Error| PublishCommandError::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    };
    let mut request = reqwest::Client::new().post(&url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(unreachable)?;
    if status != 202 {
        return Err(PublishCommandError::Refused {
            status,
            body: answer.to_string(),
        });
    }
    Ok(answer["id"].as_str().map(str::to_string))
}
