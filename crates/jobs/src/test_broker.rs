//! The unit tests' in-process broker (with the hub it fans out to), as the pipeline and
//! worker tests run jobs against it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use progress_hub::broker::HistoryConfig;
use progress_hub::broker::memory::MemoryBroker;
use progress_hub::hub::Hub;

/// An in-process broker; cancel the token to stop it.
pub(crate) fn memory_broker() -> (Arc<MemoryBroker>, CancellationToken) {
    let (hub, changes) = Hub::new(16);
    let shutdown = CancellationToken::new();
    let broker = Arc::new(MemoryBroker::start(
        HistoryConfig::default(),
        hub,
        changes,
        shutdown.clone(),
        &TaskTracker::new(),
    ));
    (broker, shutdown)
}
