//! `progress-hub watch ws://HOST/api/v1/projects/ID/progress`: a terminal progress bar.
//! The project's page URL (`http://HOST/projects/ID`, what the browser shows) or its
//! progress route over http(s) are taken as well: see [`ws_url`].
//!
//! Stage, percent and ETA on the bar; log lines printed above it; errors highlighted.
//! Answers pings, reconnects with backoff and jitter and resumes from the last event id
//! (like the page), and exits 0 when the job completes, 1 when it fails, 3 when it was
//! cancelled. `--json`
//! prints the raw frames instead, one per line, for scripts.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use reqwest::Url;

use progress_hub::wire::{EventKind, ProjectId};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The project's WebSocket URL, e.g. ws://127.0.0.1:8000/api/v1/projects/42/progress,
    /// or its page's, e.g. http://127.0.0.1:8000/projects/42
    pub url: String,
    /// Print every frame as received (JSON, one per line) instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// Access token (when the hub runs with --auth-secret).
    #[arg(long, env = "HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Give up after this many reconnect attempts in a row.
    #[arg(long, default_value_t = 20)]
    pub max_reconnects: u32,
}

/// How the watched job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Failed,
    Cancelled,
}

impl JobEnd {
    /// The end a run's status names; `None` for a run under way.
    pub fn from_status(status: &str) -> Option<Self> {
        match status {
            "COMPLETED" => Some(Self::Completed),
            "FAILED" => Some(Self::Failed),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {url}: {why} (give the project's page, http://HOST/projects/ID, \
         or its WebSocket, ws://HOST/api/v1/projects/ID/progress)"
    )]
    BadUrl { url: String, why: String },
    #[error("gave up after {attempts} reconnect attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// The WebSocket URL to watch, from the URL given: a ws:// or wss:// URL as it is; the
/// http(s):// URL of the project's page (`/projects/ID`, see the hub's `http::page`) or
/// of its progress route (`/api/v1/projects/ID/progress`) as that route over ws(s)://
/// on the same host. The page's query goes along (`?token=` is the page's access
/// token), its fragment does not.
pub fn ws_url(given: &str) -> Result<Url, WatchError> {
    let bad = |why: &str| WatchError::BadUrl {
        url: given.to_string(),
        why: why.to_string(),
    };
    let mut url = Url::parse(given).map_err(|err| bad(&format!("not a URL ({err})")))?;
    let scheme = match url.scheme() {
        "ws" | "wss" => return Ok(url),
        "http" => "ws",
        "https" => "wss",
        _ => return Err(bad("not an http(s):// or ws(s):// URL")),
    };
    let segments: Vec<&str> = url.path_segments().into_iter().flatten().collect();
    let id = match segments.as_slice() {
        ["projects", id] | ["api", "v1", "projects", id, "progress"] => *id,
        _ => return Err(bad("not a project's page or progress path")),
    };
    let project = ProjectId::parse(id).map_err(|err| bad(&err.to_string()))?;
    url.set_path(&format!("/api/v1/projects/{project}/progress"));
    url.set_fragment(None);
    // http(s) and ws(s) are all special schemes, between which the scheme may change.
    url.set_scheme(scheme)
        .map_err(|()| bad("its scheme cannot be changed to ws(s)://"))?;
    Ok(url)
}

/// `base` with the resume position and the token of this connection in its query (they
/// replace any the URL gave; the rest of its query stays).
fn connect_url(base: &Url, last_id: Option<&str>, token: Option<&str>) -> Url {
    let ours = [("last_event_id", last_id), ("token", token)];
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .into_owned()
        .filter(|(key, _)| !ours.iter().any(|(k, v)| v.is_some() && k == key))
        .collect();
    let mut url = base.clone();
    url.set_query(None);
    let added = ours.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
    if !kept.is_empty() || added.clone().next().is_some() {
        url.query_pairs_mut().extend_pairs(kept).extend_pairs(added);
    }
    url
}

/// What a `stalled` frame's data says, for a person: `None` once it is no longer.
fn stall_text(d: &Value) -> Option<String> {
    if d["stalled"] != Value::Bool(true) {
        return None;
    }
    let since = d["since"].as_str().unwrap_or("?");
    Some(match d["reason"].as_str() {
        Some("worker_lost") => format!("worker lost (no update since {since})"),
        _ => format!("stalled (no update since {since})"),
    })
}

/// What the screen shows; one implementation per output mode.
trait View {
    fn frame(&mut self, raw: &str, frame: &Value);
    fn status(&mut self, text: &str);
    fn done(&mut self);
}

struct Bar {
    bar: ProgressBar,
    color: bool,
    stage: String,
    eta: Option<u64>,
    /// The run is stalled (a `stalled` frame): what the bar says after the stage.
    stalled: Option<String>,
    /// While the stage runs parallel units: its status, and how many are done of how many.
    units: Option<(String, u64, u64)>,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(100);
        let style = ProgressStyle::with_template("{spinner} [{bar:40.cyan/blue}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉░");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            color: std::io::stderr().is_terminal(),
            stage: String::new(),
            eta: None,
            stalled: None,
            units: None,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A line above the bar (or plainly on stderr when there is no terminal to draw on).
    fn line(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// The last line of a run: its status, and the video's link when it has one.
    fn finished(&self, d: &Value) {
        let status = d["status"].as_str().unwrap_or_default();
        let (line, code) = match d["youtube_url"].as_str() {
            Some(url) if status == "COMPLETED" => (format!("✔ {status} {url}"), "1;32"),
            _ => (format!("✖ {status}"), "1;31"),
        };
        self.line(self.paint(code, &line));
    }

    fn refresh(&self) {
        let stalled = self
            .stalled
            .as_ref()
            .map(|s| format!(" — {s}"))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "{}{stalled}",
            message(&self.stage, self.eta, self.units.as_ref())
        ));
    }
}

/// The bar's text: the stage's units done ("ASSETS_GENERATING 7/17 · ") while it runs
/// parallel units, what is happening, and the ETA.
fn message(stage: &str, eta: Option<u64>, units: Option<&(String, u64, u64)>) -> String {
    let eta = eta.map(|s| format!(" (ETA {s}s)")).unwrap_or_default();
    match units {
        Some((status, done, total)) if stage.is_empty() => format!("{status} {done}/{total}{eta}"),
        Some((status, done, total)) => format!("{status} {done}/{total} · {stage}{eta}"),
        None => format!("{stage}{eta}"),
    }
}

/// `units_done`/`units_total` of a frame's data, with its status, when it gives both.
fn units_of(d: &Value) -> Option<(String, u64, u64)> {
    let (done, total) = (d["units_done"].as_u64()?, d["units_total"].as_u64()?);
    let status = d["status"].as_str()?;
    (done <= total && total > 0).then(|| (status.to_string(), done, total))
}

impl View for Bar {
    fn frame(&mut self, _raw: &str, f: &Value) {
        let d = &f["data"];
        let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        if let Some(p) = d["progress"].as_u64() {
            self.bar.set_position(p.min(100));
        }
        let kind = EventKind::from_name(f["event"].as_str().unwrap_or_default());
        match kind {
            EventKind::Snapshot | EventKind::ProgressUpdate => {
                self.stage = text("current_stage");
                self.eta = d["estimated_remaining"].as_u64();
                // A count given stands; an update of the same stage without one keeps it.
                let same = self.units.as_ref().map(|(s, _, _)| s.as_str()) == d["status"].as_str();
                self.units = units_of(d).or_else(|| {
                    (kind == EventKind::ProgressUpdate && same)
                        .then(|| self.units.take())
                        .flatten()
                });
                // Joined after the end: say how it ended, as the `complete` would have.
                if kind == EventKind::Snapshot && JobEnd::from_status(&text("status")).is_some() {
                    self.finished(d);
                }
            }
            EventKind::StageChange => {
                // A stage's units end with it (a run taking it over stays in it).
                if d["previous_stage"] != d["current_stage"] {
                    self.units = None;
                }
                self.stage = text("current_stage");
                self.line(self.paint("1", &format!("▶ {}", text("current_stage"))));
            }
            EventKind::Log => {
                let level = text("level");
                let line = format!("{level:<7} {}", text("message"));
                let line = match level.as_str() {
                    "ERROR" => self.paint("31", &line),
                    "WARNING" => self.paint("33", &line),
                    _ => line,
                };
                self.line(line);
            }
            EventKind::Error => {
                let head = format!(
                    "✖ {} — {} (retry {}/{})",
                    text("error_code"),
                    text("message"),
                    d["retry_count"],
                    d["max_retries"]
                );
                self.line(self.paint("1;31", &head));
                for s in d["solutions"].as_array().into_iter().flatten() {
                    self.line(format!("    • {}", s.as_str().unwrap_or_default()));
                }
            }
            EventKind::Complete => {
                self.units = None;
                self.finished(d);
            }
            EventKind::Stalled => {
                self.stalled = stall_text(d);
                let line = match &self.stalled {
                    Some(stalled) => self.paint("1;33", &format!("⏸ {stalled}")),
                    None => self.paint("1", "▶ publishing again"),
                };
                self.line(line);
            }
            _ => {}
        }
        // Any event of the run ends a silence (the hub says `stalled: false` first).
        if matches!(
            kind,
            EventKind::Snapshot
                | EventKind::ProgressUpdate
                | EventKind::StageChange
                | EventKind::Log
                | EventKind::Error
                | EventKind::Complete
        ) {
            self.stalled = None;
        }
        self.refresh();
    }

    fn status(&mut self, text: &str) {
        self.line(self.paint("2", text));
    }

    fn done(&mut self) {
        self.bar.finish_and_clear();
    }
}

struct Json;

impl View for Json {
    fn frame(&mut self, raw: &str, _frame: &Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{raw}");
        let _ = out.flush();
    }
    fn status(&mut self, text: &str) {
        eprintln!("{text}");
    }
    fn done(&mut self) {}
}

/// Watches until the job completes or fails.
pub async fn run(args: &WatchArgs) -> Result<JobEnd, WatchError> {
    let base = ws_url(&args.url)?;
    let mut view: Box<dyn View + Send> = if args.json {
        Box::new(Json)
    } else {
        Box::new(Bar::new())
    };
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    let mut delays = backoff();
    loop {
        let url = connect_url(&base, last_id.as_deref(), args.token.as_deref());
        let why = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                failures = 0;
                delays = backoff();
                match session(&mut ws, view.as_mut(), &mut last_id).await {
                    Some(end) => {
                        view.done();
                        return Ok(end);
                    }
                    None => "connection closed".to_string(),
                }
            }
            Err(err) => err.to_string(),
        };
        failures += 1;
        if failures > args.max_reconnects {
            view.done();
            return Err(WatchError::GaveUp {
                attempts: failures - 1,
                last: why,
            });
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        view.status(&format!(
            "{why}; reconnecting in {:.1}s",
            delay.as_secs_f64()
        ));
        tokio::time::sleep(delay).await;
    }
}

/// Jittered exponential backoff, so a hub restart does not become a reconnect storm.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// One connection's life. `Some` when the job ended.
async fn session<S>(
    ws: &mut S,
    view: &mut (dyn View + Send),
    last_id: &mut Option<String>,
) -> Option<JobEnd>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<Message>
        + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(raw) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&raw) else {
            continue;
        };
        if let Some(id) = frame["id"].as_str() {
            *last_id = Some(id.to_string());
        }
        let event = EventKind::from_name(frame["event"].as_str().unwrap_or_default());
        if event == EventKind::Ping {
            let _ = ws.send(Message::text(r#"{"event":"pong"}"#)).await;
            continue;
        }
        if event == EventKind::Snapshot
            && let Some(id) = frame["data"]["last_event_id"].as_str()
        {
            *last_id = Some(id.to_string());
        }
        view.frame(&raw, &frame);
        let end = JobEnd::from_status(frame["data"]["status"].as_str().unwrap_or_default());
        let end = match event {
            // A complete whose status is not known to this build is an end all the same.
            EventKind::Complete => Some(end.unwrap_or(JobEnd::Failed)),
            EventKind::Snapshot => end,
            _ => None,
        };
        if end.is_some() {
            let _ = ws.close().await;
            return end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(given: &str) -> Result<String, String> {
        ws_url(given)
            .map(String::from)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn a_page_or_progress_url_over_http_watches_the_projects_websocket() {
        for (given, wanted) in [
            (
                "http://127.0.0.1:8000/projects/42",
                "ws://127.0.0.1:8000/api/v1/projects/42/progress",
            ),
            (
                "https://hub.example/projects/a_B-9?token=t.k.n&lang=en#top",
                "wss://hub.example/api/v1/projects/a_B-9/progress?token=t.k.n&lang=en",
            ),
            (
                "http://127.0.0.1:8000/api/v1/projects/42/progress",
                "ws://127.0.0.1:8000/api/v1/projects/42/progress",
            ),
            (
                "HTTPS://hub.example:8443/api/v1/projects/x/progress",
                "wss://hub.example:8443/api/v1/projects/x/progress",
            ),
            // A WebSocket URL is taken as it is.
            (
                "ws://127.0.0.1:8000/api/v1/projects/42/progress",
                "ws://127.0.0.1:8000/api/v1/projects/42/progress",
            ),
            ("wss://hub.example/any/path", "wss://hub.example/any/path"),
        ] {
            assert_eq!(mapped(given).as_deref(), Ok(wanted), "{given}");
        }
    }

    #[test]
    fn anything_else_is_refused_saying_why_and_what_would_do() {
        for (given, why) in [
            ("127.0.0.1:8000/projects/42", "not a URL"),
            (
                "localhost:8000/projects/42",
                "not an http(s):// or ws(s):// URL",
            ),
            ("not a url", "not a URL"),
            (
                "ftp://hub.example/projects/42",
                "not an http(s):// or ws(s):// URL",
            ),
            ("http://not-ws", "not a project's page or progress path"),
            (
                "http://h/projects/42/",
                "not a project's page or progress path",
            ),
            ("http://h/projects", "not a project's page or progress path"),
            (
                "http://h/dashboard",
                "not a project's page or progress path",
            ),
            (
                "http://h/api/v1/projects/42",
                "not a project's page or progress path",
            ),
            (
                "http://h/api/v1/projects/42/events",
                "not a project's page or progress path",
            ),
            ("http://h/projects/a%20b", "may contain only"),
        ] {
            let err = mapped(given).expect_err(given);
            assert!(err.starts_with(&format!("cannot watch {given}: ")), "{err}");
            assert!(err.contains(why), "{given}: {err}");
            assert!(err.contains("http://HOST/projects/ID"), "{err}");
        }
    }

    #[test]
    fn each_connection_puts_its_position_and_token_in_the_query_once() {
        let plain = Url::parse("ws://h/api/v1/projects/42/progress").unwrap();
        let url = |base: &Url, id, token| String::from(connect_url(base, id, token));
        assert_eq!(
            url(&plain, None, None),
            "ws://h/api/v1/projects/42/progress"
        );
        assert_eq!(
            url(&plain, Some("k3J9x2Qa7b:42"), Some("a.b-c_d")),
            "ws://h/api/v1/projects/42/progress?last_event_id=k3J9x2Qa7b%3A42&token=a.b-c_d"
        );
        // The page's query stays; the token given on the command line wins over its own.
        let page = ws_url("http://h/projects/42?lang=en&token=old").unwrap();
        assert_eq!(
            url(&page, Some("x:1"), Some("new")),
            "ws://h/api/v1/projects/42/progress?lang=en&last_event_id=x%3A1&token=new"
        );
        assert_eq!(
            url(&page, None, None),
            "ws://h/api/v1/projects/42/progress?lang=en&token=old"
        );
    }

    #[test]
    fn a_stall_reads_as_its_reason_and_its_end_as_none() {
        let data = |stalled: bool, reason: &str| serde_json::json!({"stalled": stalled, "reason": reason, "since": "2026-12-06T08:00:00Z"});
        assert_eq!(
            stall_text(&data(true, "silent")).as_deref(),
            Some("stalled (no update since 2026-12-06T08:00:00Z)")
        );
        assert_eq!(
            stall_text(&data(true, "worker_lost")).as_deref(),
            Some("worker lost (no update since 2026-12-06T08:00:00Z)")
        );
        assert_eq!(stall_text(&data(false, "silent")), None);
        assert_eq!(stall_text(&serde_json::json!("nonsense")), None);
    }

    #[test]
    fn the_bar_says_how_many_units_of_a_parallel_stage_are_done() {
        let d = serde_json::json!({"status": "ASSETS_GENERATING", "progress": 40, "current_stage": "Generating images (5/15)", "units_done": 7, "units_total": 17});
        let units = units_of(&d);
        assert_eq!(
            message("Generating images (5/15)", Some(12), units.as_ref()),
            "ASSETS_GENERATING 7/17 · Generating images (5/15) (ETA 12s)"
        );
        assert_eq!(message("", None, units.as_ref()), "ASSETS_GENERATING 7/17");
        assert_eq!(message("Rendering", None, None), "Rendering");
        for bad in [
            serde_json::json!({"status": "ASSETS_GENERATING", "units_done": 3, "units_total": 2}),
            serde_json::json!({"status": "ASSETS_GENERATING", "units_done": 1, "units_total": 0}),
            serde_json::json!({"status": "ASSETS_GENERATING", "units_done": -1, "units_total": 2}),
            serde_json::json!({"status": "ASSETS_GENERATING", "units_done": 1}),
        ] {
            assert_eq!(units_of(&bad), None, "{bad}");
        }
    }
}
