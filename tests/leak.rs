//! Ten thousand connect/close cycles leave no leak: connections, watched projects,
//! Redis subscriptions, tasks, file descriptors and memory return to their baseline.
//!
//! A test binary of its own, because it measures its whole process (open descriptors
//! and RSS from /proc/self): in the `it` binary, with the suite in parallel, whatever
//! other tests opened or allocated meanwhile was counted as this hub's leak. Cargo
//! runs test binaries one after the other, so here nothing else runs beside it.

#[macro_use]
// The support module's re-exports serve the `it` binary; this one uses a few.
#[allow(unused_imports, unused_macros)]
#[path = "support/mod.rs"]
mod support;

use support::{Backend, TestHub, WsClient, layout};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// 10,000 connect → first frame → close cycles, then 1,000 projects opened and closed:
// connections, watched projects, Redis subscriptions, tasks, file descriptors and memory
// return to their baseline (generous margins; the figures are in BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cycles_leave_no_leak() {
    let hub = TestHub::start_with(Backend::Redis, |c| c.worker = None).await;
    let warmup = WsClient::connected(&hub.ws_url("warm")).await;
    warmup.close().await;
    let settle = || async {
        support::eventually("connections closed and channels unsubscribed", || async {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(layout::all_channels())
                .query_async(&mut hub.redis().connection().await)
                .await
                .unwrap();
            channels.is_empty() && support::metric(&hub, "hub_projects_watched").await == 0.0
        })
        .await;
    };
    settle().await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let (fds0, rss0, tasks0) = (open_fds(), rss_kib(), tasks());

    let cycle = |project: String| {
        let url = hub.ws_url(&project);
        async move {
            let client = WsClient::connected(&url).await;
            client.close().await;
        }
    };
    use futures_util::StreamExt;
    futures_util::stream::iter((0..10_000).map(|i| cycle(format!("churn-{}", i % 10))))
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    futures_util::stream::iter((0..1_000).map(|i| cycle(format!("project-{i}"))))
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    settle().await;
    let (fds1, rss1, tasks1) = (open_fds(), rss_kib(), tasks());
    eprintln!(
        "leak check: fds {fds0} → {fds1}, RSS {rss0} → {rss1} KiB, tasks {tasks0} → {tasks1}"
    );
    assert!(fds1 <= fds0 + 20, "file descriptors: {fds0} → {fds1}");
    assert!(tasks1 <= tasks0 + 10, "tasks: {tasks0} → {tasks1}");
    assert!(rss1 <= rss0 + 64 * 1024, "memory: {rss0} → {rss1} KiB");
}
