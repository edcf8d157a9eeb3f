//! The wire contract as plain data: project ids, events, event ids, server frames and
//! client frames, close codes.
//!
//! Nothing in here does I/O, so every rule of the contract (what a valid project id
//! is, what a publishable event is, what a client may send) is testable alone.

mod client_frame;
mod close;
pub mod error_compat;
pub mod event;
mod event_id;
mod event_kind;
mod frame;
pub mod positions;
mod project_id;
pub mod schema;
pub mod stall;
mod state;
mod status_filter;
mod subscription_error;
mod tag;
mod timestamp;

pub use client_frame::{ClientFrame, ClientFrameError, Subscribe, TagAsk, Target};
pub use close::CloseReason;
pub use event::{Event, InvalidEvent, Stage};
pub use event_id::{EventId, InvalidEventId};
pub use event_kind::EventKind;
pub use frame::{Frame, InvalidPayload};
pub use project_id::{InvalidProjectId, ProjectId};
pub use state::{ProjectState, StateOfProject};
pub use status_filter::{InvalidStatus, MAX_STATUS_VALUES, StatusFilter};
pub use subscription_error::SubscriptionErrorCode;
pub use tag::{InvalidTag, MAX_TAG_LEN, MAX_TAGS, Tag};
pub use timestamp::{now_iso8601, now_ms, parse_ms};
