//! `ProjectId::parse` and the Redis layout's `project_of_channel` on any text.
//!
//! Invariants: an accepted id is exactly the input and matches `^[A-Za-z0-9_-]{1,64}$`;
//! a refused one gets the error its first broken rule names; the channel name
//! round-trips through `project_of_channel`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use progress_hub::broker::redis::layout::{channel, project_of_channel};
use progress_hub::wire::{InvalidProjectId, ProjectId};

// The contract, restated here rather than imported, so the target checks the code.
const CHANNEL_PREFIX: &str = "progress:";
const MAX_PROJECT_ID_LEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let expected = if raw.is_empty() {
        Err(InvalidProjectId::Empty)
    } else if raw.len() > MAX_PROJECT_ID_LEN {
        Err(InvalidProjectId::TooLong)
    } else if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err(InvalidProjectId::BadCharacter)
    } else {
        Ok(())
    };
    match ProjectId::parse(raw) {
        Ok(id) => {
            assert_eq!(expected, Ok(()), "{raw:?} accepted");
            assert_eq!(id.as_str(), raw);
            assert_eq!(id.to_string(), raw);
            assert_eq!(ProjectId::parse(id.as_str()).as_ref(), Ok(&id));
            assert_eq!(channel(&id), format!("{CHANNEL_PREFIX}{raw}"));
            assert_eq!(project_of_channel(&channel(&id)), Some(id));
        }
        Err(e) => assert_eq!(expected, Err(e), "{raw:?}"),
    }
    // The same bytes read as a channel name: ours only with the prefix and a valid id.
    match project_of_channel(raw) {
        Some(id) => assert_eq!(format!("{CHANNEL_PREFIX}{id}"), raw),
        None => assert!(
            raw.strip_prefix(CHANNEL_PREFIX)
                .is_none_or(|rest| ProjectId::parse(rest).is_err()),
            "{raw:?}"
        ),
    }
});
