//! `progress-hub-bench`, the load tool: its code is the workspace member `crates/bench`
//! (`progress_hub_bench`), built here beside `progress-hub` so that the integration
//! tests always run a fresh one.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    progress_hub_bench::run().await
}
