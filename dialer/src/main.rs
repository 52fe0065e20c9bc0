//! `dialer`: outbound campaigns (see the `dialer` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = dialer::Config::parse();
    // Kept until the service has drained, so the last spans are exported.
    let telemetry = switchboard_service::telemetry::init_logging("dialer");
    let result = dialer::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("dialer: {error}");
    }
    result?;
    Ok(())
}
