//! What the broker hands on, and to whom. The broker knows the process's fan-out only
//! through these traits, which the hub implements (as centrifuge's broker calls the
//! `BrokerEventHandler` it is given): it is told which projects to watch
//! ([`SubscriptionChange`], each with its [`Watched`] project), and hands what arrives
//! for them to [`Deliveries`]. So the broker depends on no hub code.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wire::{EventId, Frame, ProjectId, ProjectState};

/// Where the broker hands what arrives for the projects this process watches, and what
/// it tells them of itself.
pub trait Deliveries: Send + Sync + 'static {
    /// A payload published on `project`'s channel. Anyone may publish there: its `id`,
    /// if any, is a claim, not a position.
    fn deliver(&self, project: &ProjectId, payload: Bytes);

    /// A frame the broker has just recorded in `project`'s history (the in-process
    /// publish path): its id is a position.
    fn deliver_recorded(&self, project: &ProjectId, payload: Bytes);

    /// Frames read from the history to fill a gap (after the subscription dropped),
    /// oldest first; what was delivered already is to be skipped.
    fn deliver_missed(&self, project: &ProjectId, frames: Vec<Frame>);

    /// `project`'s history went back under its watchers (Redis lost writes they had):
    /// they are reset to `state`, whose newest event is `last`.
    fn reset(&self, project: &ProjectId, state: &ProjectState, last: EventId);

    /// The broker became unreachable (`false`) or reachable again (`true`, said only
    /// once every gap is filled, so the missed events come before it).
    fn broker_status(&self, available: bool);

    /// Every watcher numbered below the returned number has joined its project already
    /// (or left it): what a read made from now on can serve as their snapshot (see
    /// [`Watched::set_subscribed_state`]).
    fn joined_so_far(&self) -> u64;

    /// Whether the project is watched in this process now.
    fn is_watched(&self, project: &ProjectId) -> bool;

    /// How many sessions of this process (a multiplexed connection's subscriptions
    /// counted one each) watch the project now.
    fn watchers(&self, project: &ProjectId) -> usize;

    /// How many sessions of this process watch each watched project now (presence).
    fn presence(&self) -> Vec<(ProjectId, usize)>;

    /// From now on, remember which projects' numbers of watchers change (see
    /// [`Deliveries::presence_changes`]). Called by a broker that shares presence.
    fn track_presence(&self);

    /// Notified when a project's number of watchers changed since the last
    /// [`Deliveries::presence_changes`].
    fn presence_changed(&self) -> &Notify;

    /// The projects whose numbers of watchers changed since the last call, each with
    /// its number now (0: nobody here watches it any more).
    fn presence_changes(&self) -> Vec<(ProjectId, usize)>;
}

/// One project this process watches, as the broker's subscriber sees it.
pub trait Watched: Send + Sync + std::fmt::Debug + 'static {
    fn project(&self) -> &ProjectId;

    /// Where to fill a gap from after the subscription dropped: after the newest event
    /// delivered, or after the position read at subscription time.
    fn resume_point(&self) -> Option<EventId>;

    /// Where to fill a gap from first, if the history holds it: after the newest event
    /// of a later epoch than the resume point's that the topic followed on the channel
    /// with every one between (a new incarnation of Redis begins an epoch that goes on
    /// with the sequence; a lost history begins one at 1). None if it followed none.
    fn resume_point_ahead(&self) -> Option<EventId>;

    /// The project's state, read just after subscribing (`covers_below`: from
    /// [`Deliveries::joined_so_far`] before the read began): where its events stood,
    /// and the snapshot of the watchers that joined before the read.
    fn set_subscribed_state(&self, covers_below: u64, state: Option<(ProjectState, EventId)>);

    /// The subscription is confirmed: no event published from now on can be missed.
    fn mark_subscribed(&self);
}

/// A change in the set of channels this process needs, for the broker's subscriber.
/// The changes travel in order through one channel, so a quick leave-then-join can
/// never end unsubscribed.
#[derive(Debug)]
pub enum SubscriptionChange {
    /// Subscribe the project's channel, then call [`Watched::mark_subscribed`].
    Subscribe(Arc<dyn Watched>),
    Unsubscribe(ProjectId),
}
