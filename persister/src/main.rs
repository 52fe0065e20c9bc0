//! `persister`: call events into Postgres, plus the read API (see the `persister` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = persister::Config::parse();
    switchboard_service::telemetry::init_logging("persister");
    persister::run(config, switchboard_service::shutdown::signal()).await?;
    Ok(())
}
