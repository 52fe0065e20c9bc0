//! The call-worker binary: settings from flags and environment, then [`call_worker::run`] until
//! SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = call_worker::Config::parse();
    switchboard_service::telemetry::init_logging("call-worker");
    call_worker::run(config, switchboard_service::shutdown::signal()).await?;
    Ok(())
}
