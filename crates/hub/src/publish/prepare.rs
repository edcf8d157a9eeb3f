//! Preparing an event for the broker, once: validate it, fill what the publisher may
//! leave out (the timestamp; for an error the catalog's `is_retryable` and `solutions`,
//! empty `details` and a fresh `trace_id`), then build what the broker's atomic publish
//! takes ([`PreparedEvent`]): the frame with two holes, what the event changes in the
//! project's state, its receipt and its fence.
//!
//! The frame's bytes are produced here, once, by serde; the broker only fills in two
//! holes: the `id` (known only inside the atomic step) and the `progress` (clamped there
//! so that progress never goes backwards within a run, whoever publishes).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::broker::{Fence, FrameTemplate, PreparedEvent, StateChange};
use crate::locale::Locale;
use crate::wire::event::{CompleteStatus, ProgressStatus};
use crate::wire::{Event, InvalidEvent, ProjectId, now_iso8601};

/// The event, validated and normalized, ready for the broker. `receipt`: the caller's
/// idempotency key's, or `None` for a fresh one; `fence`: the fence it is published under.
pub fn prepare(
    event: Event,
    project: &ProjectId,
    locale: Locale,
    receipt: Option<String>,
    fence: Option<Fence>,
) -> Result<PreparedEvent, InvalidEvent> {
    event.validate()?;
    let event = normalize(event, locale);
    Ok(PreparedEvent {
        kind: event.kind(),
        template: template(&event, project),
        state: state_change(&event, locale, fence.as_ref()),
        keyed: receipt.is_some(),
        receipt: receipt.unwrap_or_else(new_trace_id),
        retry: false,
        fence,
    })
}

/// A fresh trace id: 16 hex digits.
pub fn new_trace_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Fills what the publisher may leave out: the timestamp, and for errors the
/// catalog's `is_retryable` and `solutions` and a fresh `trace_id`. Idempotent.
pub fn normalize(mut event: Event, locale: Locale) -> Event {
    let now = || Some(now_iso8601());
    match &mut event {
        Event::ProgressUpdate(e) => e.timestamp = e.timestamp.take().or_else(now),
        Event::StageChange(e) => e.timestamp = e.timestamp.take().or_else(now),
        Event::Log(e) => e.timestamp = e.timestamp.take().or_else(now),
        Event::Complete(e) => e.timestamp = e.timestamp.take().or_else(now),
        Event::Error(e) => {
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
    event
}

/// The frame with two holes (id, progress), of a normalized event.
fn template(event: &Event, project: &ProjectId) -> FrameTemplate {
    let name = event.kind().name();
    let (mut data, progress, extra) = match event {
        Event::ProgressUpdate(e) => (to_map(e), Some(e.progress), None),
        Event::StageChange(e) => (to_map(e), Some(e.progress), None),
        Event::Log(e) => (to_map(e), None, None),
        Event::Error(e) => (
            to_map(e),
            None,
            Some(crate::wire::error_compat::top_level(project)),
        ),
        Event::Complete(e) => (to_map(e), None, None),
    };
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
    FrameTemplate {
        head: format!("{{\"event\":\"{name}\",\"id\":\""),
        mid: "\",\"data\":{".to_string(),
        tail,
        progress,
    }
}

/// What a normalized event changes in the project's state (its fields are named in
/// `contract/publish-inputs.json`'s `state_fields`, and read back by
/// `wire::ProjectState::from_hash`).
fn state_change(event: &Event, locale: Locale, fence: Option<&Fence>) -> StateChange {
    let mut change = StateChange::default();
    match event {
        Event::ProgressUpdate(e) => {
            change.set("status", Some(e.status.as_str()));
            change.set("current_stage", Some(&e.current_stage));
            let eta = e.estimated_remaining.map(|v| v.to_string());
            change.set("estimated_remaining", eta.as_deref());
            if let (Some(done), Some(total)) = (e.units_done, e.units_total) {
                change.set("units_done", Some(&done.to_string()));
                change.set("units_total", Some(&total.to_string()));
            }
            if e.status == ProgressStatus::Queued {
                change.starts_run = true;
                // A new run has run no units yet.
                clear_units(&mut change);
                change.run_holder = e.job_id.clone();
                if let Some(job) = &e.job_id {
                    change.set("job_id", Some(job));
                }
                if let Some(place) = e.queue_position {
                    change.set("queue_position", Some(&place.to_string()));
                }
            }
        }
        Event::StageChange(e) => {
            change.set("status", Some(e.current_stage.as_str()));
            change.set("current_stage", Some(e.current_stage.label(locale)));
            // Units counted belong to their stage; a run taking the job over re-enters
            // the stage it was in (previous = current) and keeps them.
            let same = e.previous_stage == Some(e.current_stage.into());
            if !same {
                clear_units(&mut change);
            }
        }
        Event::Complete(e) => {
            change.ends_run = true;
            change.set("status", Some(e.status.as_str()));
            if let Some(url) = &e.youtube_url {
                change.set("youtube_url", Some(url));
            }
            match e.status {
                CompleteStatus::Completed => {
                    change.progress_floor = Some(100);
                    change.set("estimated_remaining", Some("0"));
                    change.set("current_stage", Some(locale.pick("已完成", "Completed")));
                }
                CompleteStatus::Failed => {
                    change.set("estimated_remaining", None);
                    change.set("current_stage", Some(locale.pick("生成失敗", "Failed")));
                }
                CompleteStatus::Cancelled => {
                    change.set("estimated_remaining", None);
                    change.set("current_stage", Some(locale.pick("已取消", "Cancelled")));
                }
            }
            clear_units(&mut change);
            if let Some(fence) = fence {
                // The state names the job the run completed.
                change.set("job_id", Some(&fence.holder));
            }
        }
        Event::Log(_) | Event::Error(_) => {}
    }
    let updated_at = event
        .timestamp()
        .map(str::to_string)
        .unwrap_or_else(now_iso8601);
    change.set("updated_at", Some(&updated_at));
    change
}

/// The state's `units_done`/`units_total` (a stage's parallel units) are no more.
fn clear_units(change: &mut StateChange) {
    change.set("units_done", None);
    change.set("units_total", None);
}

fn to_map(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        // Every event body is a struct, which serializes to an object.
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;

    fn pid() -> ProjectId {
        ProjectId::parse("p1").unwrap()
    }

    fn prepared(json: &str, locale: Locale) -> PreparedEvent {
        let event = Event::from_json(json.as_bytes()).unwrap();
        prepare(event, &pid(), locale, None, None).unwrap()
    }

    #[test]
    fn template_assembles_the_frame_with_id_and_progress() {
        let prepared = prepared(
            r#"{"event":"progress_update","data":{"status":"RENDERING","progress":60,"current_stage":"渲染中","estimated_remaining":null,"timestamp":"2025-10-19T10:35:00Z"}}"#,
            Locale::ZhTw,
        );
        assert_eq!(prepared.kind, EventKind::ProgressUpdate);
        assert_eq!(prepared.template.progress, Some(60));
        let frame: Value =
            serde_json::from_str(&prepared.template.assemble("ep:7", Some(65))).unwrap();
        assert_eq!(frame["event"], "progress_update");
        assert_eq!(frame["id"], "ep:7");
        assert_eq!(frame["data"]["progress"], 65);
        assert_eq!(frame["data"]["status"], "RENDERING");
        assert_eq!(frame["data"]["estimated_remaining"], Value::Null);
        assert_eq!(frame["data"]["timestamp"], "2025-10-19T10:35:00Z");
        assert_eq!(prepared.state.get("status"), Some("RENDERING"));
    }

    #[test]
    fn templates_without_progress_are_valid_json() {
        for json in [
            r#"{"event":"log","data":{"level":"INFO","message":"hi"}}"#,
            r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=1"}}"#,
        ] {
            let text = prepared(json, Locale::En).template.assemble("e:1", None);
            let frame: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(frame["id"], "e:1");
            assert!(frame["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
        }
    }

    #[test]
    fn error_frames_carry_both_shapes_from_the_catalog() {
        let text = prepared(
            r#"{"event":"error","data":{"error_code":"GEMINI_QUOTA_EXCEEDED","message":"quota","stage":"SCRIPT_GENERATING","retry_count":1}}"#,
            Locale::En,
        )
        .template
        .assemble("e:2", None);
        // Stored once: the message is in the published bytes once...
        assert_eq!(text.matches("\"quota\"").count(), 1, "{text}");
        // ... and the frame clients get carries both shapes.
        let frame = crate::wire::Frame::from_published(text.into())
            .unwrap()
            .to_value();
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
    fn complete_raises_state_progress_to_100() {
        let state = prepared(
            r#"{"event":"complete","data":{"status":"COMPLETED","youtube_url":"https://youtube.com/watch?v=1"}}"#,
            Locale::ZhTw,
        )
        .state;
        assert_eq!(state.progress_floor, Some(100));
        assert_eq!(state.get("status"), Some("COMPLETED"));
        assert_eq!(
            state.get("youtube_url"),
            Some("https://youtube.com/watch?v=1")
        );
    }

    #[test]
    fn initialized_is_a_previous_stage_only() {
        let first = r#"{"event":"stage_change","data":{"previous_stage":"INITIALIZED","current_stage":"SCRIPT_GENERATING","progress":5}}"#;
        let text = prepared(first, Locale::En)
            .template
            .assemble("e:1", Some(5));
        let frame: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(frame["data"]["previous_stage"], "INITIALIZED");
        for json in [
            r#"{"event":"stage_change","data":{"previous_stage":"SCRIPT_GENERATING","current_stage":"INITIALIZED","progress":5}}"#,
            r#"{"event":"progress_update","data":{"status":"INITIALIZED","progress":5,"current_stage":"x"}}"#,
        ] {
            assert!(Event::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn an_invalid_event_is_refused_before_anything_is_built() {
        let event = Event::from_json(
            br#"{"event":"stage_change","data":{"current_stage":"RENDERING","progress":101}}"#,
        )
        .unwrap();
        let err = prepare(event, &pid(), Locale::En, None, None).unwrap_err();
        assert_eq!(err.field, "data.progress");
    }

    #[test]
    fn a_callers_key_is_the_receipt_and_is_remembered() {
        let event =
            Event::from_json(br#"{"event":"log","data":{"level":"INFO","message":"m"}}"#).unwrap();
        let p = prepare(
            event.clone(),
            &pid(),
            Locale::En,
            Some("key:k".into()),
            None,
        )
        .unwrap();
        assert_eq!((p.receipt.as_str(), p.keyed), ("key:k", true));
        let p = prepare(event, &pid(), Locale::En, None, None).unwrap();
        assert_eq!((p.receipt.len(), p.keyed), (16, false));
    }
}
