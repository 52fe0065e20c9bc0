//! `persister`: call events into Postgres, plus the read API (see the `persister` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = persister::Config::parse();
    // Kept until the service has drained, so the last spans are exported.
    let telemetry = switchboard_service::telemetry::init_logging("persister");
    let result = persister::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("persister: {error}");
    }
    result?;
    Ok(())
}
