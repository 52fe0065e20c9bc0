//! `switchboard agents check FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use async_nats::jetstream;
use switchboard_agents::Agents;
use switchboard_proto::TOOLS_BUCKET;
use switchboard_service::NatsArgs;

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Validates an agents file as the call-worker does, and reports listed tools that no tool
    /// server has registered.
    Check {
        /// The agents file (AGENTS_FILE).
        file: PathBuf,
        /// Only validate the file; do not ask the registry.
        #[arg(long)]
        offline: bool,
    },
}

pub async fn run(nats: &NatsArgs, command: AgentsCommand) -> anyhow::Result<ExitCode> {
    let AgentsCommand::Check { file, offline } = command;
    let agents = match Agents::load(&file) {
        Ok(agents) => agents,
        Err(e) => {
            println!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("{}: {} agent(s) valid", file.display(), agents.all().len());
    let listed = agents.business_tools();
    if offline || listed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let client = crate::connect(nats).await?;
    let js = jetstream::new(client);
    let missing = match js.get_key_value(TOOLS_BUCKET).await {
        Ok(store) => {
            switchboard_service::tool_registry::unregistered(&store, listed.iter().copied()).await?
        }
        Err(_) => listed.clone(),
    };
    for tool in &missing {
        let by = agents.listing(tool);
        println!(
            "not registered: `{tool}` (listed by {}): misspelled, or no tool server runs it; calls go on without it",
            by.join(", ")
        );
    }
    if missing.is_empty() {
        println!("all {} listed tool(s) are registered", listed.len());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
