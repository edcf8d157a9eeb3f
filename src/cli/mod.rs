//! The `progress-hub` command line: each subcommand's flags and what it runs. `main.rs`
//! only parses and dispatches. Built with the default `cli` feature (the library
//! alone does not pull clap, indicatif, reqwest or tokio-tungstenite).

pub mod publish;
pub mod serve;
pub mod shared;
pub mod token;
pub mod watch;
pub mod worker;
