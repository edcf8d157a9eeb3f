//! A session's access token over time: it expires, and the client may replace it with
//! `{"event":"refresh","data":{"token":...}}` before that; otherwise the session ends
//! with 4401.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::Auth;
use crate::wire::ProjectId;

/// The heartbeat ends the session when `expires_at` passes (see `heartbeat`).
pub struct Access {
    auth: Arc<Auth>,
    project: ProjectId,
    expires_at: SystemTime,
}

impl Access {
    pub fn new(auth: Arc<Auth>, project: ProjectId, expires_at: SystemTime) -> Self {
        Self {
            auth,
            project,
            expires_at,
        }
    }

    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Accepts a fresher token for the same project; `false` if it is not one.
    pub fn refresh(&mut self, token: &str) -> bool {
        match self.auth.may_watch(Some(token), &self.project) {
            Ok(claims) => {
                self.expires_at = claims.expires_at();
                true
            }
            Err(_) => false,
        }
    }
}
