//! Project ids: `^[A-Za-z0-9_-]{1,64}$`, checked before anything else touches them.
//!
//! A `ProjectId` can only be built through validation, so a Redis key or channel name
//! made from one can never contain a separator, a wildcard or a path.

use std::fmt;
use std::sync::Arc;

/// Longest accepted project id, in bytes (ASCII only, so also in characters).
pub const MAX_PROJECT_ID_LEN: usize = 64;

/// A validated project id. Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(Arc<str>);

/// Why a project id was refused. The message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProjectId {
    #[error("project id must not be empty")]
    Empty,
    #[error("project id must be at most {MAX_PROJECT_ID_LEN} characters")]
    TooLong,
    #[error("project id may contain only A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

impl ProjectId {
    pub fn parse(raw: &str) -> Result<Self, InvalidProjectId> {
        if raw.is_empty() {
            return Err(InvalidProjectId::Empty);
        }
        if raw.len() > MAX_PROJECT_ID_LEN {
            return Err(InvalidProjectId::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(InvalidProjectId::BadCharacter);
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        for ok in ["1", "abc-DEF_123", &"a".repeat(64), "-", "_"] {
            assert_eq!(
                ProjectId::parse(ok).map(|p| p.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn refuses_hostile_ids() {
        assert_eq!(ProjectId::parse(""), Err(InvalidProjectId::Empty));
        assert_eq!(
            ProjectId::parse(&"a".repeat(65)),
            Err(InvalidProjectId::TooLong)
        );
        assert_eq!(
            ProjectId::parse(&"a".repeat(300)),
            Err(InvalidProjectId::TooLong)
        );
        for bad in [
            "../x",
            "..",
            "1;DROP TABLE",
            "a b",
            "a\0",
            "專案",
            "p*",
            "p:1",
            "a/b",
            "é",
        ] {
            assert_eq!(
                ProjectId::parse(bad),
                Err(InvalidProjectId::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
