//! progress-hub's hub library (package `progress-hub-core`): real-time progress push for
//! long-running jobs. It holds no job, command-line or load-tool code: those are the
//! workspace's other members (`crates/jobs`, the `progress-hub` binary in `src/`,
//! `crates/bench`); a program adds routes, tasks and hooks to the hub it starts through
//! `extension::Extension` (the jobs crate is one).
//!
//! The data path, in the order data travels: `publish` (prepare an event once,
//! coalesce) → `broker` (Redis or in-memory: append, publish, and receive through one
//! subscriber per process; `broker::redis::layout` names every key) → `hub` (one topic
//! per watched project, fanning out into each session's inbox) → `session` (its
//! outbound queue and slow-consumer policy, heartbeat, resume, close reasons) →
//! `transport` (WebSocket, SSE) → the client. `http` routes requests to them; `server`
//! starts and stops the whole, with the `extension`s it is given. Beside the data path,
//! `webhook` tells the backend that a job ended, from the broker's outbox.
//!
//! Each of these depends only on those before it in this order, besides the helpers
//! (`auth`, `catalog`, `locale`, `metrics`, `limits`, `telemetry`, `config`)
//! (`scripts/module_deps.py --check`): `wire` (the contract as plain data: events and
//! their validation, frames, ids) → `broker` → `publish`, `hub` → `transport` →
//! `session` → `http` → `extension` → `server`. The broker hands what it receives to the
//! traits it defines (`broker::Deliveries`, `broker::Watched`), which the hub
//! implements: it imports no hub, session, transport or http code.

pub mod auth;
pub mod broker;
pub mod catalog;
pub mod config;
pub mod extension;
pub mod http;
pub mod hub;
pub mod limits;
pub mod locale;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod webhook;
pub mod wire;
