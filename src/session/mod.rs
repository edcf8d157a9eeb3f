//! One client's life, whatever the transport: join the project's topic, say
//! `connected`, then move frames from the outbound queue to the socket until the
//! session ends: the client leaves, goes silent, falls behind, or the server stops.
//!
//! Two tasks per session, each woken only by its own work: the session's task writes
//! (it sleeps on the outbound queue), and a reader task hears the client (`reader`).
//! Whoever decides that the session is over (the reader, the heartbeat, the
//! slow-consumer policy, a restart) says so through the queue, so the writer waits on
//! one thing only.

mod access;
mod heartbeat;
mod reader;
mod resume;

pub use access::Access;

pub use crate::hub::Ended;
pub use heartbeat::{Beating, Heartbeat, Pulse};
pub use resume::{Opening, opening, skip_covered};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

use crate::broker::Broker;
use crate::hub::{Hub, OutboundQueue};
use crate::metrics as m;
use crate::transport::{Transport, Writer};
use crate::wire::{CloseReason, EventId, Frame, ProjectId};

/// How long a new session waits for the broker to confirm the subscription before it
/// says `connected` anyway (during a broker outage the subscriber catches up later).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// What every session shares.
#[derive(Clone)]
pub struct Sessions {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Pings, silence and token deadlines, and the restart close, for every session.
    pub heartbeat: Arc<Heartbeat>,
}

impl Sessions {
    /// Runs a session to its end. `last_event_id`: resume after it.
    pub async fn run<T: Transport>(
        &self,
        project: ProjectId,
        last_event_id: Option<EventId>,
        access: Option<Access>,
        transport: T,
    ) -> Ended {
        let (mut writer, reader) = transport.split();
        // Subscribe first, then read: nothing published in between can be missed.
        let membership = match self.hub.join(&project) {
            Ok(membership) => membership,
            Err(full) => {
                tracing::warn!(project_id = %project, error = %full, "refusing a session");
                writer.close(CloseReason::Overloaded).await;
                return Ended::Closed(CloseReason::Overloaded);
            }
        };
        let beating = self
            .heartbeat
            .register(Arc::clone(membership.queue()), T::HEARS_CLIENT);
        let pulse = Arc::clone(beating.pulse());
        if let Some(access) = &access {
            pulse.expires_at(access.expires_at());
        }
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
            self.heartbeat.interval().as_secs(),
            last_event_id.as_ref(),
            replay,
        );
        m::connection_opened(T::NAME);
        let _reader = AbortOnDropHandle::new(tokio::spawn(reader::listen(
            reader,
            Arc::clone(&pulse),
            access,
        )));
        // A long replay to a client that does not read must still end with the session
        // (heartbeat, token expiry, restart: the heartbeat ends every session at shutdown).
        let sent = tokio::select! {
            sent = writer.send(&opening.frames) => Ok(sent.is_ok()),
            ended = membership.queue().ended() => Err(ended),
        };
        let ended = match sent {
            Ok(true) => pump(membership.queue(), &pulse, opening.floor, &mut writer).await,
            Ok(false) => Ended::ClientGone,
            Err(ended) => ended,
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
                writer.close(reason).await;
            }
            Ended::ClientGone => tracing::debug!(project_id = %project, "client left"),
        }
        ended
    }
}

/// Moves frames from the queue to the socket until the session ends.
async fn pump<W: Writer>(
    queue: &OutboundQueue,
    pulse: &Pulse,
    mut floor: Option<EventId>,
    writer: &mut W,
) -> Ended {
    let mut batch = Vec::new();
    loop {
        if let Err(ended) = queue.drain(&mut batch) {
            return ended;
        }
        skip_covered(&mut batch, &mut floor);
        if batch.is_empty() {
            queue.ready().await;
            continue;
        }
        // A write that had to wait (the socket was full) and then went through means
        // the client is taking data off its socket: it is alive, even if a long backlog
        // keeps it from answering pings for a while. A write that fits in the socket
        // buffers proves nothing (a dead peer's would too).
        let waited = AtomicBool::new(false);
        let sent = {
            let mut send = std::pin::pin!(writer.send(&batch));
            let send = std::future::poll_fn(|cx| {
                let poll = send.as_mut().poll(cx);
                if poll.is_pending() {
                    waited.store(true, Ordering::Relaxed);
                }
                poll
            });
            // A stuck write must not outlive the session's end (overflow, heartbeat,
            // restart). `biased`: a write that completes at once costs no other poll.
            tokio::select! {
                biased;
                sent = send => sent,
                ended = queue.ended() => return ended,
            }
        };
        if sent.is_err() {
            return Ended::ClientGone;
        }
        if waited.load(Ordering::Relaxed) {
            pulse.saw_life();
        }
        m::frames_delivered(batch.len() as u64);
        if let Some(at) = batch.iter().find_map(Frame::published_at) {
            m::delivered_after(at);
        }
        batch.clear();
    }
}
