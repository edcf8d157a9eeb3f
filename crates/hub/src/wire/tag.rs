//! Tags: the labels a project's run carries (`user:123`, `team:7`), by which a client
//! lists projects (`GET /api/v1/projects?tag=`) and a token grants access.
//!
//! A tag is 1 to [`MAX_TAG_LEN`] bytes of `A-Z a-z 0-9 _ - . : @`; a run carries at
//! most [`MAX_TAGS`], each once. The grammar has no `,` so the state hash keeps them as
//! one comma-joined field, and no `{`/`}` so a tag never changes a Redis key's slot.
//!
//! `*` ([`Tag::all`]) is the one reserved value outside the grammar: where a client
//! names a tag to read (a tag subscription, `?tags=`, `GET /api/v1/projects?tag=`,
//! [`Tag::parse_or_all`]) it means every project, whatever its tags; no run ever carries
//! it ([`Tag::parse`] refuses it), and its index is the index of every project's runs,
//! written by the same publish step that writes the tags' indexes (only a token whose
//! projects include `*` may read it: `auth::Claims::covers_tag`).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Most tags one project's run carries.
pub const MAX_TAGS: usize = 8;
/// The reserved tag of every project ([`Tag::all`]).
pub const ALL: &str = "*";

/// A valid tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTag {
    #[error("a tag must not be empty")]
    Empty,
    #[error("a tag is at most {MAX_TAG_LEN} bytes")]
    TooLong,
    #[error("a tag may contain only A-Z, a-z, 0-9, '_', '-', '.', ':' and '@'")]
    BadCharacter,
    #[error("tags must be a JSON array of strings")]
    NotAList,
    #[error("at most {MAX_TAGS} tags")]
    TooMany,
    #[error("tag {0:?} is given twice")]
    Repeated(String),
}

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, InvalidTag> {
        if raw.is_empty() {
            return Err(InvalidTag::Empty);
        }
        if raw.len() > MAX_TAG_LEN {
            return Err(InvalidTag::TooLong);
        }
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@');
        if !raw.bytes().all(allowed) {
            return Err(InvalidTag::BadCharacter);
        }
        Ok(Self(Arc::from(raw)))
    }

    /// The reserved `*`: every project (see the module's docs).
    pub fn all() -> Self {
        Self(Arc::from(ALL))
    }

    /// Whether this is the reserved `*`.
    pub fn is_all(&self) -> bool {
        &*self.0 == ALL
    }

    /// A tag a client names to read: a valid tag, or `*` for every project.
    pub fn parse_or_all(raw: &str) -> Result<Self, InvalidTag> {
        if raw == ALL {
            return Ok(Self::all());
        }
        Self::parse(raw)
    }

    /// Whether a project whose run carries `tags` is one of this tag's (`*`: any).
    pub fn selects(&self, tags: &[String]) -> bool {
        self.is_all() || tags.iter().any(|t| t == self.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A run's tags from JSON (`["user:7", "team:2"]`): each valid, none twice, at most
    /// [`MAX_TAGS`].
    pub fn parse_list(value: &serde_json::Value) -> Result<Vec<Tag>, InvalidTag> {
        let items = value.as_array().ok_or(InvalidTag::NotAList)?;
        if items.len() > MAX_TAGS {
            return Err(InvalidTag::TooMany);
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(items.len());
        for item in items {
            let tag = Tag::parse(item.as_str().ok_or(InvalidTag::NotAList)?)?;
            if tags.contains(&tag) {
                return Err(InvalidTag::Repeated(tag.as_str().to_string()));
            }
            tags.push(tag);
        }
        Ok(tags)
    }

    /// A request's `tags` field (absent: `None`), its error naming the field `tags`.
    pub fn parse_field(
        value: Option<&serde_json::Value>,
    ) -> Result<Option<Vec<Tag>>, super::InvalidEvent> {
        value
            .map(Tag::parse_list)
            .transpose()
            .map_err(|e| super::InvalidEvent::new("tags", e.to_string()))
    }

    /// The tags as the state hash keeps them: comma-joined (`''`: none).
    pub fn join(tags: &[Tag]) -> String {
        tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",")
    }

    /// The tags of a state hash's field (what [`Tag::join`] wrote; anything invalid in
    /// it, written by another publisher, is skipped).
    pub fn split(field: &str) -> Vec<Tag> {
        field
            .split(',')
            .filter_map(|t| Tag::parse(t).ok())
            .take(MAX_TAGS)
            .collect()
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_grammar() {
        for ok in [
            "user:123",
            "team:7",
            "a",
            "x.y-z_w@host",
            &"t".repeat(MAX_TAG_LEN),
        ] {
            assert_eq!(Tag::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(Tag::parse(""), Err(InvalidTag::Empty));
        assert_eq!(
            Tag::parse(&"t".repeat(MAX_TAG_LEN + 1)),
            Err(InvalidTag::TooLong)
        );
        for bad in ["a,b", "{slot}", "a b", "ü", "a\nb", "a*", "\0"] {
            assert_eq!(Tag::parse(bad), Err(InvalidTag::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn lists() {
        let tags = Tag::parse_list(&json!(["user:7", "team:2"])).unwrap();
        assert_eq!(Tag::join(&tags), "user:7,team:2");
        assert_eq!(Tag::split("user:7,team:2"), tags);
        assert_eq!(Tag::split(""), Vec::<Tag>::new());
        assert_eq!(Tag::parse_list(&json!("user:7")), Err(InvalidTag::NotAList));
        assert_eq!(Tag::parse_list(&json!([7])), Err(InvalidTag::NotAList));
        assert_eq!(
            Tag::parse_list(&json!(["a", "a"])),
            Err(InvalidTag::Repeated("a".into()))
        );
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(Tag::parse_list(&json!(many)), Err(InvalidTag::TooMany));
        assert_eq!(Tag::parse_list(&json!([])).unwrap(), Vec::<Tag>::new());
    }

    #[test]
    fn every_project_is_read_as_star_and_never_carried() {
        let all = Tag::parse_or_all("*").unwrap();
        assert!(all.is_all());
        assert_eq!(all, Tag::all());
        assert!(all.selects(&[]) && all.selects(&["user:7".into()]));
        let user = Tag::parse_or_all("user:7").unwrap();
        assert!(!user.is_all());
        assert!(user.selects(&["team:2".into(), "user:7".into()]));
        assert!(!user.selects(&["team:2".into()]));
        for bad in ["**", "*user", "user:*", " *", ""] {
            assert!(Tag::parse_or_all(bad).is_err(), "{bad:?}");
        }
        // No run carries it: neither a publisher's list nor a state's field.
        assert_eq!(Tag::parse("*"), Err(InvalidTag::BadCharacter));
        assert!(Tag::parse_list(&json!(["*"])).is_err());
        assert_eq!(Tag::split("*,user:7"), [user]);
    }
}
