//! A real webhook receiver: an HTTP server on a free port that checks every delivery's
//! Standard Webhooks signature, records it, and answers as the test scripts it (200,
//! an error status with or without `Retry-After`, 410, a hang, a slow answer, a 10 MB
//! answer); it can go down and come back on the same port.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::PATIENCE;

/// The secret the tests sign with (the Standard Webhooks specification's example).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers one delivery.
#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    Status(u16),
    /// The status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers.
    Hang,
    /// 200 after this long.
    Slow(Duration),
    /// 500 with a 10 MB body.
    Huge,
}

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub body: Value,
    /// Whether its signature verified against [`SECRET`].
    pub signed: bool,
    /// What the receiver answered.
    pub reply: Reply,
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct Shared {
    /// Answers for the next deliveries, in order; then `otherwise`.
    script: Mutex<VecDeque<Reply>>,
    otherwise: Mutex<Option<Reply>>,
    got: Mutex<Vec<Got>>,
    arrived: Notify,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let mut receiver = Self {
            addr,
            shared,
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&self.shared));
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every delivery from now on with `reply` (after any scripted ones).
    pub fn answer(&self, reply: Reply) {
        *self.shared.otherwise.lock() = Some(reply);
    }

    /// Answers the next deliveries with `replies`, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().extend(replies);
    }

    /// Stops listening (connections are refused) until [`Receiver::up`].
    pub fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    /// Every delivery received so far (answered or not).
    pub fn got(&self) -> Vec<Got> {
        self.shared.got.lock().clone()
    }

    /// The deliveries answered 2xx.
    pub fn delivered(&self) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| matches!(g.reply, Reply::Ok | Reply::Slow(_)))
            .collect()
    }

    /// Waits until `done` holds of what was received (each arrival wakes it).
    pub async fn until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.got();
            if done(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("timed out waiting for: {what}; received {:#?}", self.got());
            }
        }
    }

    /// Waits until `n` distinct webhook ids were answered 2xx, and returns them.
    pub async fn until_delivered(&self, n: usize) -> Vec<Got> {
        self.until(&format!("{n} distinct deliveries"), |got| {
            distinct_ok(got) >= n
        })
        .await;
        self.delivered()
    }
}

/// Distinct webhook ids answered 2xx among `got`.
pub fn distinct_ok(got: &[Got]) -> usize {
    let mut ids: Vec<&str> = got
        .iter()
        .filter(|g| matches!(g.reply, Reply::Ok | Reply::Slow(_)))
        .map(|g| g.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let signer = standardwebhooks::Webhook::new(SECRET).expect("the test secret");
    let signed = signer.verify(&body, &headers).is_ok();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let reply = {
        let next = shared.script.lock().pop_front();
        next.or_else(|| shared.otherwise.lock().clone())
            .unwrap_or(Reply::Ok)
    };
    shared.got.lock().push(Got {
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed,
        reply: reply.clone(),
        at: tokio::time::Instant::now(),
    });
    shared.arrived.notify_waiters();
    match reply {
        Reply::Ok => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(status) => status_of(status).into_response(),
        Reply::RetryAfter(status, seconds) => {
            (status_of(status), [("retry-after", seconds.to_string())]).into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK.into_response()
        }
        Reply::Huge => (StatusCode::INTERNAL_SERVER_ERROR, vec![b'x'; 10 << 20]).into_response(),
    }
}

fn status_of(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("a status")
}
