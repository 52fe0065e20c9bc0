//! `tool-worker`: serves the example tools (see the `tool_workers` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = tool_workers::app::Config::parse();
    switchboard_service::telemetry::init_logging("tool-worker");
    tool_workers::app::run(config, switchboard_service::shutdown::signal()).await?;
    Ok(())
}
