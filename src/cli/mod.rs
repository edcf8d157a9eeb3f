//! The `progress-hub` command line: each subcommand's flags and what it runs. `main.rs`
//! only parses and dispatches. The binary's own (the hub library, `crates/hub`, pulls
//! none of clap, indicatif or tokio-tungstenite).

pub mod publish;
pub mod serve;
pub mod shared;
pub mod token;
pub mod watch;
pub mod worker;

use progress_hub::telemetry::LogFormat;

/// `--log-format`, as the command line spells it (`text`, `json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}
