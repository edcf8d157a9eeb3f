//! Access control (off unless `--auth-secret` is set): HS256 JWTs naming the projects a
//! client may watch (`projects`, `"*"` for all) and whether it may publish
//! (`scope: "publish"`), with an expiry. Tokens come as `?token=` or
//! `Authorization: Bearer`. A token that expires during a session can be replaced with
//! `{"event":"refresh","data":{"token":...}}`; otherwise the session ends with 4401.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::wire::ProjectId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Projects this token may watch (and publish to, with the scope); `"*"` means all.
    pub projects: Vec<String>,
    /// `"publish"` allows publishing and starting jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token does not grant access to this project")]
    Forbidden,
}

/// Signs and checks tokens with one shared secret.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A token for `projects`, valid for `ttl`.
    pub fn mint(
        &self,
        projects: &[String],
        publish: bool,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let exp = SystemTime::now()
            .checked_add(ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or(AuthError::Invalid)?;
        let claims = Claims {
            projects: projects.to_vec(),
            scope: publish.then(|| "publish".to_string()),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })
    }

    /// The claims of `token` if it may watch `project`.
    pub fn may_watch(&self, token: Option<&str>, project: &ProjectId) -> Result<Claims, AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if claims.covers(project) {
            Ok(claims)
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// Whether `token` may publish to (or start jobs of) `project`; `None` = any project.
    pub fn may_publish(
        &self,
        token: Option<&str>,
        project: Option<&ProjectId>,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        let scoped = claims.scope.as_deref() == Some("publish");
        let covered = match project {
            Some(project) => claims.covers(project),
            None => claims.projects.iter().any(|p| p == "*"),
        };
        if scoped && covered {
            Ok(claims)
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

impl Claims {
    pub fn covers(&self, project: &ProjectId) -> bool {
        self.projects
            .iter()
            .any(|p| p == "*" || p == project.as_str())
    }

    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ProjectId {
        ProjectId::parse(s).unwrap()
    }

    #[test]
    fn tokens_grant_exactly_what_they_say() {
        let auth = Auth::new("s3cret");
        let hour = Duration::from_secs(3600);
        let watch_a = auth.mint(&["a".into()], false, hour).unwrap();
        assert!(auth.may_watch(Some(&watch_a), &pid("a")).is_ok());
        assert_eq!(
            auth.may_watch(Some(&watch_a), &pid("b")),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.may_publish(Some(&watch_a), Some(&pid("a"))),
            Err(AuthError::Forbidden)
        );
        let publish_a = auth.mint(&["a".into()], true, hour).unwrap();
        assert!(auth.may_publish(Some(&publish_a), Some(&pid("a"))).is_ok());
        assert_eq!(
            auth.may_publish(Some(&publish_a), None),
            Err(AuthError::Forbidden)
        );
        let all = auth.mint(&["*".into()], true, hour).unwrap();
        assert!(auth.may_publish(Some(&all), None).is_ok());
        assert!(auth.may_watch(Some(&all), &pid("zzz")).is_ok());
        assert_eq!(auth.may_watch(None, &pid("a")), Err(AuthError::Missing));
        assert_eq!(
            auth.may_watch(Some("nonsense"), &pid("a")),
            Err(AuthError::Invalid)
        );
        let other = Auth::new("other").mint(&["a".into()], false, hour).unwrap();
        assert_eq!(
            auth.may_watch(Some(&other), &pid("a")),
            Err(AuthError::Invalid),
            "wrong secret"
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Auth::new("s3cret");
        let claims = Claims {
            projects: vec!["a".into()],
            scope: None,
            exp: 1,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &auth.encoding).unwrap();
        assert_eq!(auth.verify(&token), Err(AuthError::Expired));
    }
}
