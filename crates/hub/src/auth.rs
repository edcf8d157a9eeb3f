//! Access control (off unless `--auth-secret` is set): HS256 JWTs naming the projects a
//! client may watch (`projects`, `"*"` for all) and whether it may publish
//! (`scope: "publish"`), with an expiry. Tokens come as `?token=` or
//! `Authorization: Bearer`. A token that expires during a session can be replaced with
//! `{"event":"refresh","data":{"token":...}}`; otherwise the session ends with 4401.
//!
//! The scheme of `Authorization` is case-insensitive (`bearer` works). An `nbf` (not
//! before) claim is honoured. An `exp` beyond what the clock can represent (an issuer's
//! "never", e.g. 2^63) is a token that does not expire, never an overflow. An empty
//! secret is refused: it would sign and accept forgeable tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::wire::{ProjectId, Tag};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Projects this token may watch (and publish to, with the scope); `"*"` means all.
    pub projects: Vec<String>,
    /// `"publish"` allows publishing, starting and cancelling jobs; `"control"` allows
    /// watching and cancelling (a watcher's stop button).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Tags whose projects this token may watch and list (a project whose run carries
    /// one of them; `GET /api/v1/projects?tag=`, a tag subscription).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Expiries later than this (the end of year 9999) are read as this: far beyond any
/// session, and still a time the clock can hold (`UNIX_EPOCH + 2^63 s` overflows it).
const LATEST_EXPIRY_SECS: u64 = 253_402_300_799;

/// `--auth-secret ""`: would silently turn access control off, or sign with nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the auth secret is empty: set a real secret, or leave the option out to run without access control"
)]
pub struct EmptySecret;

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
    pub fn new(secret: &str) -> Result<Self, EmptySecret> {
        if secret.is_empty() {
            return Err(EmptySecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        })
    }

    /// A token for `projects`, valid for `ttl`.
    pub fn mint(
        &self,
        projects: &[String],
        publish: bool,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.mint_tagged(projects, &[], publish, ttl)
    }

    /// A token for `projects` and `tags` (it may watch and list the projects whose run
    /// carries one of the tags), valid for `ttl`.
    pub fn mint_tagged(
        &self,
        projects: &[String],
        tags: &[String],
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
            tags: tags.to_vec(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature
                | jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::Expired,
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

    /// Whether `token` may cancel `project`'s job: a publish token (the backend) or a
    /// control token (a watcher allowed to stop it) covering the project.
    pub fn may_control(
        &self,
        token: Option<&str>,
        project: &ProjectId,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        let scoped = matches!(claims.scope.as_deref(), Some("publish" | "control"));
        if scoped && claims.covers(project) {
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

    /// Whether the token grants every project of `tag`: it names the tag, or its
    /// projects include `*`. Every project ([`Tag::all`]) only the latter: a `tags`
    /// claim of `"*"` names no tag (no run carries one).
    pub fn covers_tag(&self, tag: &Tag) -> bool {
        self.projects.iter().any(|p| p == "*")
            || (!tag.is_all() && self.tags.iter().any(|t| t == tag.as_str()))
    }

    /// When the token expires; an `exp` past the year 9999 is read as then (no
    /// overflow: `exp` is the issuer's, so any u64 must be safe here).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.exp.min(LATEST_EXPIRY_SECS)))
            .unwrap_or(UNIX_EPOCH)
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
        let auth = Auth::new("s3cret").unwrap();
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
        let other = Auth::new("other")
            .unwrap()
            .mint(&["a".into()], false, hour)
            .unwrap();
        assert_eq!(
            auth.may_watch(Some(&other), &pid("a")),
            Err(AuthError::Invalid),
            "wrong secret"
        );
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert_eq!(Auth::new("").err(), Some(EmptySecret));
    }

    #[test]
    fn any_exp_gives_an_expiry_without_overflow() {
        for exp in [
            0,
            1,
            LATEST_EXPIRY_SECS,
            LATEST_EXPIRY_SECS + 1,
            1 << 63,
            u64::MAX,
        ] {
            let claims = Claims {
                projects: vec![],
                scope: None,
                tags: vec![],
                exp,
            };
            assert!(claims.expires_at() > UNIX_EPOCH || exp == 0, "{exp}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Auth::new("s3cret").unwrap();
        let claims = Claims {
            projects: vec!["a".into()],
            scope: None,
            tags: vec![],
            exp: 1,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &auth.encoding).unwrap();
        assert_eq!(auth.verify(&token), Err(AuthError::Expired));
    }
}
