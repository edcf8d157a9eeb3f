//! A session's access token over time: it expires, and the client may replace it with
//! `{"event":"refresh","data":{"token":...}}` before that; otherwise the session ends
//! with 4401.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::{Instant, Sleep};

use crate::auth::Auth;
use crate::wire::ProjectId;

pub struct Access {
    auth: Arc<Auth>,
    project: ProjectId,
    expiry: Pin<Box<Sleep>>,
}

impl Access {
    pub fn new(auth: Arc<Auth>, project: ProjectId, expires_at: SystemTime) -> Self {
        Self {
            auth,
            project,
            expiry: Box::pin(tokio::time::sleep_until(deadline(expires_at))),
        }
    }

    /// Accepts a fresher token for the same project; `false` if it is not one.
    pub fn refresh(&mut self, token: &str) -> bool {
        match self.auth.may_watch(Some(token), &self.project) {
            Ok(claims) => {
                self.expiry.as_mut().reset(deadline(claims.expires_at()));
                true
            }
            Err(_) => false,
        }
    }

    /// Resolves when the token has expired. Cancel-safe.
    pub async fn expired(access: &mut Option<Self>) {
        match access {
            Some(access) => access.expiry.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

fn deadline(at: SystemTime) -> Instant {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + left
}
