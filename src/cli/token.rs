//! `progress-hub token`: mints an access token for a hub running with `--auth-secret`.

use std::time::Duration;

use clap::Args;

use crate::auth::{Auth, AuthError, EmptySecret};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// A project the token may watch; repeat for more; `*` for all.
    #[arg(long, required = true)]
    pub project: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Also allow publishing and starting jobs.
    #[arg(long)]
    pub publish: bool,
    /// The hub's secret.
    #[arg(long, env = "HUB_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Secret(#[from] EmptySecret),
    #[error(transparent)]
    Mint(#[from] AuthError),
}

/// The token.
pub fn run(args: &TokenArgs) -> Result<String, TokenError> {
    Ok(Auth::new(&args.auth_secret)?.mint(&args.project, args.publish, args.ttl)?)
}
