//! The integration tests: one binary (one link), one module per behaviour area, all
//! built from [`support`] (real Redis, real hubs, real clients, the real binary).
//!
//! The 60-second Redis outage is `#[ignore]`d as slow: `cargo test` skips it,
//! `scripts/test.sh` (and so CI) runs it with `--include-ignored`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod all_projects;
mod api_docs;
mod auth;
mod bench;
mod budgets;
mod cancel;
mod cli;
mod cluster;
mod cors;
mod delivery;
mod embedding;
mod first_hour;
mod hardening;
mod heartbeat;
mod hostile_input;
mod jobs;
mod lifecycle;
mod limits;
mod lost_writes;
mod multiplex;
mod multiplex_sse;
mod presence;
mod publishing;
mod pubsub_probe;
mod redis_outages;
mod resume;
mod retry;
mod runs;
mod sentinel;
mod slow_consumer;
mod stalled;
mod tags;
mod units;
mod vacated;
mod watch;
mod webhooks;
