//! `EventId::from_str` on any text.
//!
//! Invariants: an accepted id is `<1..=32 ASCII alphanumerics>:<digits>` with the same
//! epoch and numeric value as the input; its `Display` parses back to the same id, and
//! is the input itself when the input has no leading zeros.
#![no_main]

use libfuzzer_sys::fuzz_target;
use progress_hub::wire::EventId;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = raw.parse::<EventId>() else {
        return;
    };
    let (epoch, seq) = raw.split_once(':').expect("accepted id has no ':'");
    assert_eq!(id.epoch(), epoch);
    assert!((1..=32).contains(&epoch.len()));
    assert!(epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(seq.parse::<u64>(), Ok(id.seq()));

    let shown = id.to_string();
    assert_eq!(shown.parse::<EventId>().as_ref(), Ok(&id), "{raw:?}");
    if seq == "0" || !seq.starts_with('0') {
        assert_eq!(shown, raw);
    }
    assert!(id.is_at_or_before(&id));
    assert_eq!(EventId::new(id.epoch(), id.seq()), id);
});
