//! The `switchboard` command: what a tool author and an operator need around tools.
//!
//! - `switchboard tools ls`: the tool registry (`voice-tools`): every registered tool with its
//!   timeout, version and the replicas serving it (from their heartbeats);
//! - `switchboard tools call NAME JSON`: sends a `ToolCall` exactly as a call-worker does
//!   (same subject, deadline, trace header and error mapping) and prints the result and latency;
//! - `switchboard agents check FILE`: validates an agents file as the call-worker does, and lists
//!   the tools its agents name that no tool server has registered;
//! - `switchboard nats tool-user --user U --tool T`: the NATS users a tool server needs, from the
//!   same grants the shipped services get.
//!
//! Connection settings are the services' (`NATS_URL`, `NATS_CREDS`, `NATS_USER` +
//! `NATS_PASSWORD`, `NATS_SUBJECT_PREFIX`). Exit status: 0 fine, 1 the check or the call failed,
//! 2 the command could not run (bad usage, NATS unreachable).
#![forbid(unsafe_code)]

pub mod agents;
pub mod nats;
pub mod tools;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use switchboard_service::NatsArgs;

/// How long reaching NATS may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard tools and agents from the command line"
)]
pub struct Cli {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The tool registry, and calling a tool.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Checking an agents file.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// NATS users and grants.
    #[command(subcommand)]
    Nats(nats::NatsCommand),
}

/// Runs one command and says how the process should exit.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Tools(command) => tools::run(&cli.nats, command).await,
        Command::Agents(command) => agents::run(&cli.nats, command).await,
        Command::Nats(command) => nats::run(&cli.nats.subjects(), command),
    }
}

/// Connects, giving up after [`CONNECT_TIMEOUT`] (the services wait for NATS; a command should not).
pub async fn connect(nats: &NatsArgs) -> anyhow::Result<async_nats::Client> {
    tokio::time::timeout(CONNECT_TIMEOUT, nats.connect("switchboard cli"))
        .await
        .with_context(|| {
            format!(
                "NATS at {} did not answer within {CONNECT_TIMEOUT:?}",
                nats.nats_url
            )
        })?
        .context("connecting to NATS")
}
