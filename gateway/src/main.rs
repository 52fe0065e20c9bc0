//! The `gateway` binary: parse the configuration, set up logging, serve until SIGTERM / Ctrl-C.
#![forbid(unsafe_code)]

use clap::Parser as _;

/// Every audio frame allocates and frees a few small buffers on two threads; mimalloc's
/// thread-local free lists make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::parse();
    // Kept until the service has drained, so the last spans are exported.
    let telemetry = switchboard_service::telemetry::init_logging("gateway");
    let result = gateway::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("gateway: {error}");
    }
    result?;
    Ok(())
}
