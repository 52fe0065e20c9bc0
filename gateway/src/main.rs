//! The `gateway` binary: parse the configuration, set up logging, serve until SIGTERM / Ctrl-C.
#![forbid(unsafe_code)]

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::parse();
    switchboard_service::telemetry::init_logging("gateway");
    gateway::run(config, switchboard_service::shutdown::signal()).await?;
    Ok(())
}
