//! `progress-hub token`: mints an access token for a hub running with `--auth-secret`.

use std::time::Duration;

use clap::Args;

use progress_hub::auth::{Auth, AuthError, EmptySecret};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// A project the token may watch; repeat for more; `*` for all.
    #[arg(long, required_unless_present = "tag")]
    pub project: Vec<String>,
    /// A tag whose projects the token may watch and list; repeat for more.
    #[arg(long)]
    pub tag: Vec<String>,
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
    let auth = Auth::new(&args.auth_secret)?;
    Ok(auth.mint_tagged(&args.project, &args.tag, args.publish, args.ttl)?)
}
