//! `Frame::from_published` on any payload a legacy publisher can put on a project's
//! channel.
//!
//! Invariants: an accepted payload is kept byte for byte (but an error frame of the
//! publish path, stored without its `error` object, gets it: the same facts as its
//! `data`, appended); it is a JSON object with a
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
    if frame.as_str().as_bytes() != data {
        // Only the publish path's error frame without `error` is changed: it gains one.
        let (given, sent): (Value, Value) = (
            serde_json::from_slice(data).expect("a changed payload read as JSON"),
            serde_json::from_str(frame.as_str()).expect("the completed frame is JSON"),
        );
        assert_eq!(frame.kind(), EventKind::Error);
        assert!(frame.id().is_some());
        assert_eq!(given["type"], "error");
        assert!(given.get("error").is_none());
        assert_eq!(sent["error"]["message"], given["data"]["message"]);
        assert_eq!(sent["error"]["details"], given["data"]["details"]);
        return;
    }
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
