//! The per-client project quota at the HTTP door (issue 23 §6, see `broker/quota.rs`):
//! a publish that would create a project beyond the client's quota gets 429
//! `TOO_MANY_NEW_PROJECTS` with `Retry-After`; publishing to a project that exists is
//! never refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::broker::quota::{Admission, QuotaLimit};
use crate::catalog::ErrorCode;
use crate::wire::ProjectId;

/// The catalog's `ErrorCode::TooManyNewProjects` as the error body names it (a test
/// checks they agree).
const TOO_MANY_NEW_PROJECTS: &str = "TOO_MANY_NEW_PROJECTS";

/// Lets `client` publish to `project`, or answers why not.
pub async fn admit(app: &AppState, project: &ProjectId, client: &str) -> Result<(), Response> {
    match app.broker.admit(project, client).await {
        Ok(Admission::Admitted) => Ok(()),
        Ok(Admission::Refused { limit, retry_after }) => {
            crate::metrics::new_project_refused();
            tracing::info!(project_id = %project, client, ?limit, "new project refused: the client's quota");
            let locale = app.publisher.locale();
            let bound = match limit {
                QuotaLimit::Count => locale.pick("同時存在的專案數", "projects at once"),
                QuotaLimit::Rate => locale.pick("每分鐘新建的專案數", "new projects a minute"),
            };
            let message = format!(
                "{} ({bound})",
                ErrorCode::TooManyNewProjects.entry().message(locale)
            );
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_NEW_PROJECTS,
                message,
            )
            .retry_after(Admission::retry_after_secs(retry_after)))
        }
        Err(err) => {
            tracing::error!(project_id = %project, error = %err, "cannot check the client's project quota");
            Err(ApiError::unavailable().into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_its_catalog_code() {
        assert_eq!(
            serde_json::to_value(ErrorCode::TooManyNewProjects).unwrap(),
            TOO_MANY_NEW_PROJECTS
        );
    }
}
