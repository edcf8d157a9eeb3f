//! The publish path of one event: `Event::from_json` and `validate`, then `normalize`,
//! `prepare` and the frame template assembled as the broker does.
//!
//! Invariants beyond "no panic":
//! - a refused body names a field and a reason;
//! - an accepted event stays valid after normalization, and normalizing is idempotent;
//! - the assembled frame (with the progress asked for, or the broker's clamp up to 100)
//!   is JSON whose `event` is the event's name, whose `id` is the id given, and whose
//!   `data.progress` is the progress given (absent when the event has none);
//! - the hub's own reader (`Frame::from_published`) accepts it with that kind and id;
//! - read back through `Event::from_json`, the frame is the normalized event (with the
//!   progress given): nothing is lost or altered on the way to clients;
//! - `error` frames also carry the compatibility shape with the project id.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use progress_hub::locale::Locale;
use progress_hub::publish::prepare::{normalize, prepare};
use progress_hub::wire::{Event, EventId, EventKind, Frame, ProjectId};
use serde_json::Value;

const ID: &str = "k3J9x2Qa7b:42";

fn progress_of(event: &Event) -> Option<u8> {
    match event {
        Event::ProgressUpdate(e) => Some(e.progress),
        Event::StageChange(e) => Some(e.progress),
        _ => None,
    }
}

fn with_progress(mut event: Event, progress: Option<u8>) -> Event {
    match (&mut event, progress) {
        (Event::ProgressUpdate(e), Some(p)) => e.progress = p,
        (Event::StageChange(e), Some(p)) => e.progress = p,
        _ => {}
    }
    event
}

fuzz_target!(|data: &[u8]| {
    let event = match Event::from_json(data).and_then(|e| e.validate().map(|()| e)) {
        Ok(event) => event,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    let project = ProjectId::parse("fuzz-project_1").expect("valid project id");
    let id: EventId = ID.parse().expect("valid event id");

    for locale in [Locale::ZhTw, Locale::En] {
        let normalized = normalize(event.clone(), locale);
        assert_eq!(normalized.kind(), event.kind());
        assert_eq!(
            normalized.validate(),
            Ok(()),
            "normalization made a valid event invalid"
        );
        assert_eq!(normalize(normalized.clone(), locale), normalized);

        let prepared =
            prepare(normalized.clone(), &project, locale, None, None).expect("a valid event");
        let asked = progress_of(&normalized);
        assert_eq!(prepared.template.progress, asked);
        assert_eq!(prepared.kind, event.kind());
        assert_eq!(prepared.receipt.len(), 16);

        // The broker fills in the progress asked for, or clamps it up (at most to 100).
        let mut progresses = vec![asked];
        if asked.is_some() {
            progresses.push(Some(100));
        }
        for progress in progresses {
            let text = prepared.template.assemble(ID, progress);
            let frame: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("assembled frame is not JSON ({e}): {text}"));
            assert_eq!(frame["event"], event.kind().name(), "{text}");
            assert_eq!(frame["id"], ID, "{text}");
            assert!(frame["data"].is_object(), "{text}");
            match progress {
                Some(p) => assert_eq!(frame["data"]["progress"], p, "{text}"),
                None => assert!(frame["data"].get("progress").is_none(), "{text}"),
            }
            if let Event::Error(_) = &normalized {
                assert_eq!(frame["type"], "error", "{text}");
                assert_eq!(frame["project_id"], project.as_str(), "{text}");
                assert_eq!(
                    frame["error"]["code"], frame["data"]["error_code"],
                    "{text}"
                );
                assert_eq!(
                    frame["error"]["message"], frame["data"]["message"],
                    "{text}"
                );
            }

            let published = Frame::from_published(Bytes::from(text.clone()))
                .unwrap_or_else(|e| panic!("hub refuses its own frame ({e}): {text}"));
            assert_eq!(published.kind(), event.kind());
            assert_ne!(published.kind(), EventKind::Other);
            assert_eq!(published.id(), Some(&id));
            assert!(published.published_at().is_some(), "{text}");

            let read_back = Event::from_json(text.as_bytes())
                .unwrap_or_else(|e| panic!("frame does not read back ({e}): {text}"));
            assert_eq!(
                read_back,
                with_progress(normalized.clone(), progress),
                "{text}"
            );
        }
    }
});
