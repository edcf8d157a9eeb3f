//! The wire contract as plain data: project ids, server frames and client frames.
//!
//! Nothing in here does I/O, so every rule of the contract (what a valid project id
//! is, what a publishable payload is, what a client may send) is testable alone.

mod client_frame;
mod close;
mod frame;
mod project_id;
mod timestamp;

pub use client_frame::{ClientFrame, ClientFrameError};
pub use close::CloseReason;
pub use frame::{EventKind, Frame, InvalidPayload};
pub use project_id::{InvalidProjectId, ProjectId};
pub use timestamp::now_iso8601;
