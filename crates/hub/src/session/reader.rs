//! What the client says, heard in a task of its own: every frame is a sign of life;
//! `ping` is answered with `pong`, `refresh` replaces the access token, anything else is
//! counted and ignored. A close, a broken connection, an oversized frame or a protocol
//! violation ends the session through its queue. The session's task aborts this one when the session ends.

use std::sync::Arc;

use crate::metrics as m;
use crate::session::{Access, Ended, OutboundQueue, Pulse};
use crate::transport::{Incoming, Reader};
use crate::wire::{ClientFrame, CloseReason, Frame};

/// Listens until the client is gone.
///
/// Not an `async fn`, which would keep room for its arguments twice for the session's
/// whole life (see `Live::run`).
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice for the session's life"
)]
pub fn listen<R: Reader>(
    mut reader: R,
    queue: Arc<OutboundQueue>,
    pulse: Arc<Pulse>,
    mut access: Option<Access>,
) -> impl Future<Output = ()> + Send {
    async move {
        loop {
            let incoming = reader.recv().await;
            pulse.saw_life();
            if let Some(ended) = heard(incoming, &queue, &pulse, &mut access) {
                queue.end(ended);
                return;
            }
        }
    }
}

/// What one frame from the client means; `Some` when it ends the session.
pub(super) fn heard(
    incoming: Incoming,
    queue: &OutboundQueue,
    pulse: &Pulse,
    access: &mut Option<Access>,
) -> Option<Ended> {
    match incoming {
        Incoming::Text(text) => match ClientFrame::parse(&text) {
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Ping) => {
                queue.push(Frame::pong());
            }
            Ok(ClientFrame::Refresh(token)) => match access.as_mut() {
                Some(access) => {
                    if access.refresh(&token) {
                        pulse.expires_at(access.expires_at());
                    } else {
                        m::client_frame_ignored();
                    }
                }
                None => m::client_frame_ignored(),
            },
            Ok(
                ClientFrame::Unknown(_)
                | ClientFrame::Subscribe(_)
                | ClientFrame::Unsubscribe(_)
                | ClientFrame::UnsubscribeTag(_),
            )
            | Err(_) => m::client_frame_ignored(),
        },
        Incoming::Binary => m::client_frame_ignored(),
        Incoming::Control => {}
        Incoming::TooLarge => return Some(Ended::Closed(CloseReason::MessageTooBig)),
        Incoming::ProtocolError => return Some(Ended::Closed(CloseReason::ProtocolError)),
        Incoming::InvalidUtf8 => return Some(Ended::Closed(CloseReason::InvalidPayload)),
        Incoming::Closed => return Some(Ended::ClientGone),
    }
    None
}
