//! `notifier`: call events to HTTP endpoints as signed webhooks (see the `notifier` crate docs).
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = notifier::Config::parse();
    // Kept until the service has drained, so the last spans are exported.
    let telemetry = switchboard_service::telemetry::init_logging("notifier");
    let result = notifier::run(config, switchboard_service::shutdown::signal()).await;
    if let Err(error) = telemetry.shutdown() {
        eprintln!("notifier: {error}");
    }
    result?;
    Ok(())
}
