//! Logging: `tracing` to stderr, as text for people or JSON for log pipelines.
//! The level comes from `RUST_LOG` (default `info`). Text is coloured only when stderr
//! is a terminal: colour codes in a file or a log pipeline are noise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing_subscriber::EnvFilter;

/// At most one log line per interval for something that can happen in floods (refused
/// connections, failed accepts): the first goes out, the others are counted and the
/// count rides on the next line that goes out.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// When a line last went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may go out now.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(held)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only if a subscriber is already set; the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_out_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(50));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..10 {
            assert_eq!(throttle.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(throttle.admit(), Some(10));
        assert_eq!(throttle.admit(), None);
    }
}
