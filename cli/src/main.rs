//! `switchboard`: the operator's and tool author's command line.
#![forbid(unsafe_code)]

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = switchboard_cli::Cli::parse();
    match switchboard_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
