//! What watchers saw: once a transport took a `complete` frame, the broker records
//! that a watcher was written it (`Broker::record_complete_seen`), so the backend can
//! learn that a user saw the job end (a webhook that is skipped when one did).
//!
//! A `complete` comes once per run, so each record is a task of its own: the session
//! never waits for Redis, and no other frame costs anything but a look at its kind.

use std::sync::Arc;

use crate::broker::Broker;
use crate::wire::{EventKind, Frame, ProjectId};

/// Where a session's written frames are recorded.
pub(super) struct CompletesSeen<'a> {
    broker: &'a Arc<dyn Broker>,
    /// The session's project; `None` on a multiplexed connection, whose frames name
    /// their project (`Frame::for_subscription` sets it, whatever the publisher wrote).
    project: Option<&'a ProjectId>,
}

impl<'a> CompletesSeen<'a> {
    /// For a single-project session.
    pub(super) fn of(broker: &'a Arc<dyn Broker>, project: &'a ProjectId) -> Self {
        Self {
            broker,
            project: Some(project),
        }
    }

    /// For a multiplexed connection.
    pub(super) fn tagged(broker: &'a Arc<dyn Broker>) -> Self {
        Self {
            broker,
            project: None,
        }
    }

    /// `frames` were written to the client: records each `complete` among them that
    /// has an id.
    pub(super) fn written(&self, frames: &[Frame]) {
        for frame in frames.iter().filter(|f| f.kind() == EventKind::Complete) {
            let Some(id) = frame.id().cloned() else {
                continue;
            };
            let project = match self.project {
                Some(project) => project.clone(),
                None => match tagged_project(frame) {
                    Some(project) => project,
                    None => continue,
                },
            };
            let broker = Arc::clone(self.broker);
            tokio::spawn(async move {
                if let Err(err) = broker.record_complete_seen(&project, &id).await {
                    tracing::warn!(project_id = %project, event_id = %id, error = %err, "could not record that a watcher saw a complete");
                }
            });
        }
    }
}

/// The project a multiplexed connection's frame belongs to.
fn tagged_project(frame: &Frame) -> Option<ProjectId> {
    let value = frame.to_value();
    ProjectId::parse(value.get("project_id")?.as_str()?).ok()
}
