//! `Frame::from_published` on any payload a legacy publisher can put on a project's
//! channel.
//!
//! Invariants: an accepted payload is kept byte for byte; it is a JSON object with a
//! string `event`, and the frame's kind is that name's; the id is read only when it is
//! a string in our `<epoch>:<seq>` form; a publish time only from a string
//! `data.timestamp`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use progress_hub::wire::{EventId, EventKind, Frame};
use serde::de::IgnoredAny;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::from_published(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(frame.as_str().as_bytes(), data);
    let value: Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(e) => {
            // Fields the hub does not read are skipped without reading their numbers,
            // so a number too large for an f64 passes there (JSON's grammar allows it);
            // anything else accepted must read as JSON.
            assert!(
                e.to_string().starts_with("number out of range")
                    && serde_json::from_slice::<IgnoredAny>(data).is_ok(),
                "accepted payload is not JSON ({e}): {:?}",
                frame.as_str()
            );
            return;
        }
    };
    let name = value["event"]
        .as_str()
        .expect("accepted payload has no string \"event\"");
    assert_eq!(frame.kind(), EventKind::from_name(name));
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse::<EventId>().ok());
    assert_eq!(frame.id(), id.as_ref());
    if frame.published_at().is_some() {
        assert!(value["data"]["timestamp"].is_string(), "{value}");
    }
});
