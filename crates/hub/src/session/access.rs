//! A session's access token over time: it expires, and the client may replace it with
//! `{"event":"refresh","data":{"token":...}}` before that; otherwise the session ends
//! with 4401.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{Auth, AuthError};
use crate::wire::{ProjectId, Tag};

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

/// A multiplexed connection's token over time: it is checked for every project
/// subscribed, and a `refresh` must allow every project the connection is subscribed to.
pub struct ConnectionAccess {
    auth: Arc<Auth>,
    token: String,
    expires_at: SystemTime,
}

impl ConnectionAccess {
    /// Access with `token`, if the auth accepts it (for whichever projects it names).
    pub fn new(auth: Arc<Auth>, token: &str) -> Result<Self, AuthError> {
        let claims = auth.verify(token)?;
        Ok(Self {
            auth,
            token: token.to_string(),
            expires_at: claims.expires_at(),
        })
    }

    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Whether the token allows watching `project`.
    pub fn allows(&self, project: &ProjectId) -> bool {
        self.auth.may_watch(Some(&self.token), project).is_ok()
    }

    /// Whether the token allows a subscription to `tag` (it names the tag, or `*`).
    pub fn allows_tag(&self, tag: &Tag) -> bool {
        self.auth
            .verify(&self.token)
            .is_ok_and(|claims| claims.covers_tag(tag))
    }

    /// Accepts a fresher token that allows every project in `subscribed` and every tag
    /// in `tags`; `false` if it is not one.
    pub fn refresh<'a>(
        &mut self,
        token: &str,
        mut subscribed: impl Iterator<Item = &'a ProjectId>,
        mut tags: impl Iterator<Item = &'a Tag>,
    ) -> bool {
        match self.auth.verify(token) {
            Ok(claims)
                if subscribed.all(|p| claims.covers(p)) && tags.all(|t| claims.covers_tag(t)) =>
            {
                self.token = token.to_string();
                self.expires_at = claims.expires_at();
                true
            }
            _ => false,
        }
    }
}
