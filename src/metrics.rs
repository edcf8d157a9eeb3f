//! Prometheus metrics: one place that names them, so `/metrics` reads like a table.
//!
//! Handles are registered once and cached: the hot path (a frame per session) costs an
//! atomic add, not a registry look-up.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

struct Handles {
    connections_ws: Gauge,
    projects_watched: Gauge,
    frames_delivered: Counter,
    frames_superseded: Counter,
    frames_dropped_slow_consumer: Counter,
    slow_consumer_closes: Counter,
    heartbeat_timeouts: Counter,
    invalid_published: Counter,
    client_frames_ignored: Counter,
    oversized_client_frames: Counter,
    redis_reconnects: Counter,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| Handles {
        connections_ws: gauge!("hub_connections", "transport" => "websocket"),
        projects_watched: gauge!("hub_projects_watched"),
        frames_delivered: counter!("hub_frames_delivered_total"),
        frames_superseded: counter!("hub_frames_superseded_total"),
        frames_dropped_slow_consumer: counter!("hub_frames_dropped_total", "reason" => "slow_consumer"),
        slow_consumer_closes: counter!("hub_slow_consumer_closes_total"),
        heartbeat_timeouts: counter!("hub_heartbeat_timeouts_total"),
        invalid_published: counter!("hub_published_invalid_total"),
        client_frames_ignored: counter!("hub_client_frames_ignored_total"),
        oversized_client_frames: counter!("hub_client_frames_oversized_total"),
        redis_reconnects: counter!("hub_redis_reconnects_total"),
    })
}

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and registers every metric so `/metrics` lists them from the start.
pub fn install() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours stays unused
            // and /metrics renders what it has, which is honest and harmless.
            let _ = metrics::set_global_recorder(recorder);
            let _ = handles();
            handle
        })
        .clone()
}

pub fn connection_opened() {
    handles().connections_ws.increment(1.0);
}
pub fn connection_closed() {
    handles().connections_ws.decrement(1.0);
}
pub fn projects_watched(n: usize) {
    handles().projects_watched.set(n as f64);
}
pub fn frames_delivered(n: u64) {
    handles().frames_delivered.increment(n);
}
pub fn frames_superseded(n: u64) {
    handles().frames_superseded.increment(n);
}
pub fn frames_dropped_slow_consumer(n: u64) {
    handles().frames_dropped_slow_consumer.increment(n);
}
pub fn slow_consumer_closed() {
    handles().slow_consumer_closes.increment(1);
}
pub fn heartbeat_timed_out() {
    handles().heartbeat_timeouts.increment(1);
}
pub fn invalid_published() {
    handles().invalid_published.increment(1);
}
pub fn client_frame_ignored() {
    handles().client_frames_ignored.increment(1);
}
pub fn client_frame_oversized() {
    handles().oversized_client_frames.increment(1);
}
/// A generation job ended: `completed`, `failed` or `handed_back`.
pub fn job_finished(outcome: &'static str) {
    counter!("hub_jobs_total", "outcome" => outcome).increment(1);
}
pub fn redis_reconnected() {
    handles().redis_reconnects.increment(1);
}
