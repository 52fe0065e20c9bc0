//! `tool-worker`: serves the example tools (see the `tool_workers` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = tool_workers::app::Config::parse();
    // Kept until the service has drained, so the last spans are exported.
    let telemetry = switchboard_service::telemetry::init_logging("tool-worker");
    let result = tool_workers::app::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("tool-worker: {error}");
    }
    result?;
    Ok(())
}
