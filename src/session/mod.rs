//! One client's life, whatever the transport: join the project's topic, say
//! `connected`, then move frames from the outbound queue to the socket while keeping the
//! heartbeat, until the client leaves, goes silent, falls behind, or the server stops.
//!
//! Everything runs in the session's single task; reading, writing and timers are raced
//! with `select!`, so no second task ever touches the socket.

mod access;
mod heartbeat;
mod resume;

pub use access::Access;

pub use heartbeat::{Beat, Heartbeat};
pub use resume::{Opening, opening, skip_covered};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::hub::{Hub, OutboundQueue};
use crate::metrics as m;
use crate::transport::{Incoming, Transport};
use crate::wire::{ClientFrame, CloseReason, EventId, Frame, ProjectId};

/// How long a new session waits for the broker to confirm the subscription before it
/// says `connected` anyway (during a broker outage the subscriber catches up later).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// What every session shares.
#[derive(Clone)]
pub struct Sessions {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub config: SessionConfig,
    pub shutdown: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The hub closed it, with this reason.
    Closed(CloseReason),
    /// The client left or the connection broke.
    ClientGone,
}

impl Sessions {
    /// Runs a session to its end. `last_event_id`: resume after it.
    pub async fn run<T: Transport>(
        &self,
        project: ProjectId,
        last_event_id: Option<EventId>,
        access: Option<Access>,
        mut transport: T,
    ) -> Ended {
        // Subscribe first, then read: nothing published in between can be missed.
        let membership = match self.hub.join(&project) {
            Ok(membership) => membership,
            Err(full) => {
                tracing::warn!(project_id = %project, error = %full, "refusing a session");
                transport.close(CloseReason::Overloaded).await;
                return Ended::Closed(CloseReason::Overloaded);
            }
        };
        let subscribed = membership.subscribed(SUBSCRIBE_WAIT).await;
        let replay = if !subscribed {
            // Without a confirmed subscription nothing can be promised: say
            // `recovered: false`; the subscriber fills the gap from history once it is up.
            tracing::warn!(project_id = %project, "broker has not confirmed the subscription yet; connecting unrecovered");
            None
        } else {
            match self.broker.replay(&project, last_event_id.as_ref()).await {
                Ok(replay) => Some(replay),
                Err(err) => {
                    tracing::warn!(project_id = %project, error = %err, "cannot read history; going live without it");
                    None
                }
            }
        };
        let opening = opening(
            &project,
            self.config.heartbeat_interval.as_secs(),
            last_event_id.as_ref(),
            replay,
        );
        m::connection_opened(T::NAME);
        let sent = tokio::select! {
            sent = transport.send(&opening.frames) => sent.map_err(drop),
            () = self.shutdown.cancelled() => Err(()),
        };
        let ended = match sent {
            Ok(()) => {
                self.pump(membership.queue(), opening.floor, access, &mut transport)
                    .await
            }
            Err(_) => Ended::ClientGone,
        };
        m::connection_closed(T::NAME);
        match ended {
            Ended::Closed(reason) => {
                match reason {
                    CloseReason::HeartbeatTimeout => m::heartbeat_timed_out(),
                    CloseReason::SlowConsumer => m::slow_consumer_closed(),
                    CloseReason::MessageTooBig => m::client_frame_oversized(),
                    CloseReason::ServiceRestart
                    | CloseReason::Overloaded
                    | CloseReason::TokenExpired => {}
                }
                tracing::debug!(project_id = %project, code = reason.code(), reason = reason.text(), "closing session");
                transport.close(reason).await;
            }
            Ended::ClientGone => tracing::debug!(project_id = %project, "client left"),
        }
        ended
    }

    /// What the client said; `Some` when it ends the session.
    fn heard(
        &self,
        incoming: Incoming,
        queue: &OutboundQueue,
        heartbeat: &mut Heartbeat,
        access: &mut Option<Access>,
    ) -> Option<Ended> {
        heartbeat.saw_life();
        match incoming {
            Incoming::Text(text) => match ClientFrame::parse(&text) {
                Ok(ClientFrame::Pong) => {}
                Ok(ClientFrame::Ping) => {
                    queue.push(Frame::pong());
                }
                Ok(ClientFrame::Refresh(token)) => {
                    let refreshed = access.as_mut().is_some_and(|a| a.refresh(&token));
                    if !refreshed {
                        m::client_frame_ignored();
                    }
                }
                Ok(ClientFrame::Unknown(_)) | Err(_) => m::client_frame_ignored(),
            },
            Incoming::Binary => m::client_frame_ignored(),
            Incoming::Control => {}
            Incoming::TooLarge => return Some(Ended::Closed(CloseReason::MessageTooBig)),
            Incoming::Closed => return Some(Ended::ClientGone),
        }
        None
    }

    async fn pump<T: Transport>(
        &self,
        queue: &OutboundQueue,
        mut floor: Option<EventId>,
        mut access: Option<Access>,
        transport: &mut T,
    ) -> Ended {
        let config = &self.config;
        let mut heartbeat = Heartbeat::new(
            config.heartbeat_interval,
            config.heartbeat_timeout,
            transport.hears_client(),
        );
        let mut batch = Vec::new();
        loop {
            if queue.drain(&mut batch).is_err() {
                return Ended::Closed(CloseReason::SlowConsumer);
            }
            skip_covered(&mut batch, &mut floor);
            if !batch.is_empty() {
                // A write that had to wait (the socket was full) and then went through
                // means the client is taking data off its socket: it is alive, even if
                // a long backlog keeps it from answering pings for a while. A write that
                // fits in the socket buffers proves nothing (a dead peer's would too).
                let sent = {
                    let waited = std::sync::atomic::AtomicBool::new(false);
                    let mut send = std::pin::pin!(transport.send(&batch));
                    let send = std::future::poll_fn(|cx| {
                        let poll = send.as_mut().poll(cx);
                        if poll.is_pending() {
                            waited.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        poll
                    });
                    // A stuck write must not outlive an overflow, the heartbeat or shutdown.
                    tokio::select! {
                        sent = send => sent.map(|()| waited.load(std::sync::atomic::Ordering::Relaxed)),
                        () = queue.overflowed() => return Ended::Closed(CloseReason::SlowConsumer),
                        () = heartbeat.expired() => return Ended::Closed(CloseReason::HeartbeatTimeout),
                        () = self.shutdown.cancelled() => return Ended::Closed(CloseReason::ServiceRestart),
                        () = Access::expired(&mut access) => return Ended::Closed(CloseReason::TokenExpired),
                    }
                };
                let Ok(waited) = sent else {
                    return Ended::ClientGone;
                };
                if waited {
                    heartbeat.saw_life();
                }
                m::frames_delivered(batch.len() as u64);
                if let Some(at) = batch.iter().find_map(Frame::published_at) {
                    m::delivered_after(at);
                }
                batch.clear();
                // While frames keep coming the idle branch below may not run for a long
                // time: read whatever the client already sent (pongs, refreshes) now, so
                // a live client on a busy project is never taken for a silent one.
                // `recv` is cancel-safe, so polling it once and dropping it loses nothing.
                while let Some(incoming) = transport.recv().now_or_never() {
                    if let Some(ended) = self.heard(incoming, queue, &mut heartbeat, &mut access) {
                        return ended;
                    }
                }
                continue;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ended::Closed(CloseReason::ServiceRestart),
                () = queue.ready() => {}
                () = Access::expired(&mut access) => return Ended::Closed(CloseReason::TokenExpired),
                incoming = transport.recv() => {
                    if let Some(ended) = self.heard(incoming, queue, &mut heartbeat, &mut access) {
                        return ended;
                    }
                }
                beat = heartbeat.next() => match beat {
                    Beat::SendPing => {
                        queue.push(Frame::ping());
                    }
                    Beat::TimedOut => return Ended::Closed(CloseReason::HeartbeatTimeout),
                },
            }
        }
    }
}
