//! The call-worker binary: settings from flags and environment, then [`call_worker::run`] until
//! SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use clap::Parser;

/// Every audio frame allocates and frees a few small buffers on two threads; mimalloc's
/// thread-local free lists make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = call_worker::Config::parse();
    // Kept until the worker has drained, so the spans of the last calls are exported.
    let telemetry = switchboard_service::telemetry::init_logging("call-worker");
    let result = call_worker::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("call-worker: {error}");
    }
    result?;
    Ok(())
}
