//! The `{project_id}` path segment, validated before any handler (or upgrade) runs.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::wire::{InvalidProjectId, ProjectId};

/// A path whose only parameter is a valid project id.
pub struct ProjectPath(pub ProjectId);

impl<S: Send + Sync> FromRequestParts<S> for ProjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A segment that is not even valid percent-encoded UTF-8 is just as invalid an id.
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::from(InvalidProjectId::BadCharacter))?;
        Ok(Self(ProjectId::parse(&raw)?))
    }
}
