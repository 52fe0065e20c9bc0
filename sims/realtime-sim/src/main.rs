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
    /// Milliseconds each connection's WebSocket upgrade takes (0: at once); a real handshake
    /// with the API takes a few hundred.
    #[arg(long, env = "REALTIME_SIM_CONNECT_DELAY_MS", default_value_t = 0)]
    connect_delay_ms: u64,
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
        std::time::Duration::from_millis(args.connect_delay_ms),
        switchboard_service::shutdown::signal(),
    )
    .await
    .with_context(|| format!("realtime-sim on {}", args.listen))
}
