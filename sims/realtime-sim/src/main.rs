#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use realtime_sim::Script;

/// A scripted stand-in for the OpenAI Realtime API.
#[derive(Parser)]
#[command(name = "realtime-sim", version)]
struct Args {
    /// Address to listen on (WebSocket on any path, plus /healthz).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
    /// The script (TOML); without it the built-in dental demo plays.
    #[arg(long, env = "REALTIME_SIM_SCRIPT")]
    script: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = switchboard_service::telemetry::init_logging("realtime-sim");
    let script = match &args.script {
        Some(path) => Script::from_file(path)?,
        None => Script::demo(),
    };
    realtime_sim::run(
        &args.listen,
        script,
        switchboard_service::shutdown::signal(),
    )
    .await
    .with_context(|| format!("realtime-sim on {}", args.listen))
}
