//! Client-side subcommands of the `progress-hub` binary (everything but `serve`).

pub mod publish;
pub mod watch;
pub mod worker;
