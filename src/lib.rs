//! progress-hub: real-time progress push for long-running jobs.
//!
//! The data path, in the order data travels:
//! `wire` (plain frames and ids) → `broker` (Redis or in-memory; one subscriber per
//! process) → `hub` (one topic per watched project, one bounded queue per session) →
//! `session` (heartbeat, slow-consumer policy, close reasons) → `transport`
//! (WebSocket) → the client. `http` routes requests to them; `server` starts and stops
//! the whole.

pub mod auth;
pub mod broker;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod job;
pub mod limits;
pub mod locale;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod wire;
