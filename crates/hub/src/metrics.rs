//! Prometheus metrics: one place that names them, so `/metrics` reads like a table.
//!
//! Handles are registered once and cached: the hot path (a frame per session) costs an
//! atomic add, not a registry look-up.

use std::sync::OnceLock;

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Received by the hub (from the broker, or read from the history for a resume) →
/// written to the client's socket, in seconds. Not from the event's `data.timestamp`:
/// that is the publisher's claim (a backdated one inflated this by years).
const DELIVERY_LATENCY: &str = "hub_publish_to_deliver_seconds";
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

struct Handles {
    connections_ws: Gauge,
    connections_sse: Gauge,
    delivery_latency: Histogram,
    progress_coalesced: Counter,
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
    new_projects_refused: Counter,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| Handles {
        connections_ws: gauge!("hub_connections", "transport" => "websocket"),
        connections_sse: gauge!("hub_connections", "transport" => "sse"),
        delivery_latency: histogram!(DELIVERY_LATENCY),
        progress_coalesced: counter!("hub_progress_coalesced_total"),
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
        new_projects_refused: counter!("hub_new_projects_refused_total"),
    })
}

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and registers every metric so `/metrics` lists them from the start.
pub fn install() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours stays unused
            // and /metrics renders what it has, which is honest and harmless.
            let _ = metrics::set_global_recorder(recorder);
            let _ = handles();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Histogram samples wait in a buffer until upkeep folds them into the buckets; a
/// recorder built by hand (as here, to choose the buckets) gets no upkeep of its own,
/// and without it the buffer grows with every delivered batch until `/metrics` is
/// scraped (measured: ~25 MB per 2 million deliveries). A plain thread, so that it
/// runs whatever runtime (or none) installed the recorder.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the metrics upkeep thread; histogram samples will wait for /metrics scrapes");
    }
}

fn connections(transport: &str) -> &'static Gauge {
    match transport {
        "sse" => &handles().connections_sse,
        _ => &handles().connections_ws,
    }
}
pub fn connection_opened(transport: &str) {
    connections(transport).increment(1.0);
}
pub fn connection_closed(transport: &str) {
    connections(transport).decrement(1.0);
}
/// A frame the hub received at `at` reached a client's socket now.
pub fn delivered_after(at: Instant) {
    handles()
        .delivery_latency
        .record(at.elapsed().as_secs_f64());
}
/// A publish that would have created a project over its client's quota was refused.
pub fn new_project_refused() {
    handles().new_projects_refused.increment(1);
}
/// A `progress_update` was held by coalescing on the publish path.
pub fn progress_coalesced() {
    handles().progress_coalesced.increment(1);
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
/// A connection refused by a limit: `per_ip` or `process` (answered 503 or close
/// 1013), or `shed` (closed as soon as accepted, too many refusals in flight). The
/// log lines about refusals are throttled; this counts every one.
pub fn connection_refused(reason: &'static str) {
    counter!("hub_connections_refused_total", "reason" => reason).increment(1);
}
/// An `accept` that failed for lack of resources (file descriptors, buffers).
pub fn accept_failed() {
    counter!("hub_accept_errors_total").increment(1);
}
/// A generation job ended: `completed`, `failed`, `handed_back`, or `claim_lost` (its
/// worker was silent so long that another took the job over; this run was dropped).
pub fn job_finished(outcome: &'static str) {
    counter!("hub_jobs_total", "outcome" => outcome).increment(1);
}
/// A frame the topic had already delivered (overlap of a gap fill and live events).
pub fn duplicate_dropped() {
    counter!("hub_duplicates_dropped_total").increment(1);
}
/// A held `progress_update` whose flush failed and will be tried again.
pub fn progress_flush_retried() {
    counter!("hub_progress_flush_retries_total").increment(1);
}

/// A held `progress_update` that could not be published within the retry time.
pub fn progress_lost() {
    counter!("hub_progress_lost_total").increment(1);
}

/// A job event refused because its claim was superseded or its job had completed (a
/// worker that stalled and lost its job; see `publish.lua`'s fence).
pub fn stale_job_event_refused() {
    counter!("hub_stale_job_events_refused_total").increment(1);
}

/// A project's history was found to have gone back (Redis lost writes); its watchers
/// were reset with a snapshot.
pub fn history_rewound() {
    counter!("hub_history_rewound_total").increment(1);
}

pub fn redis_reconnected() {
    handles().redis_reconnects.increment(1);
}

/// A Pub/Sub liveness probe did not come back within its bound: the subscriber is
/// rebuilt (see `broker/redis/subscriber/probe.rs`).
pub fn pubsub_probe_failed() {
    counter!("hub_pubsub_probe_failures_total").increment(1);
}

/// A Pub/Sub liveness probe came back: publish → received on the subscriber.
pub fn pubsub_probe_round_trip(took: Duration) {
    histogram!("hub_pubsub_probe_seconds").record(took.as_secs_f64());
}

/// A webhook delivery attempt, by outcome: `delivered`, `gone` (410), `failed_status`,
/// `failed_transport` (timeout, refused connection).
pub fn webhook_attempt(outcome: &'static str, took: Duration) {
    counter!("hub_webhook_attempts_total", "outcome" => outcome).increment(1);
    histogram!("hub_webhook_attempt_seconds").record(took.as_secs_f64());
}
/// A webhook not sent: given up after retrying for `--webhook-retry-for` (`expired`),
/// its endpoint answered 410 (`gone`), or a watcher received its `complete` live
/// (`watched`, with `--webhook-skip-watched`).
pub fn webhook_given_up(reason: &'static str) {
    counter!("hub_webhook_given_up_total", "reason" => reason).increment(1);
}
/// Events in the webhook outbox not yet delivered everywhere (all hubs together).
pub fn webhook_pending(n: u64) {
    gauge!("hub_webhook_pending").set(n as f64);
}
