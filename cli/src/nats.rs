//! `switchboard nats tool-user`: the NATS user a tool server needs, generated from the same
//! grants (`switchboard_proto::permissions`) as the users k8s/base/nats.yaml ships, so a tool in
//! any language gets exactly what the example tool-worker gets for its own tools.

use std::process::ExitCode;

use switchboard_proto::permissions::{Role, authorization_block, user_pair};
use switchboard_proto::subject::{Subjects, validate_tool_name};

#[derive(Debug, clap::Subcommand)]
pub enum NatsCommand {
    /// Prints the `authorization` block (both users of the pair, for password rotation) for a
    /// tool server: add its `users` entries to the NATS config.
    ToolUser {
        /// The NATS user name, e.g. `order-status`.
        #[arg(long)]
        user: String,
        /// A tool it serves (repeat for several).
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
    },
}

/// Runs a `nats` subcommand.
pub fn run(subjects: &Subjects, command: NatsCommand) -> anyhow::Result<ExitCode> {
    let NatsCommand::ToolUser { user, tools } = command;
    for tool in &tools {
        validate_tool_name(tool).map_err(|e| anyhow::anyhow!("tool {tool:?}: {e}"))?;
    }
    let tools: Vec<&str> = tools.iter().map(String::as_str).collect();
    print!("{}", tool_user_block(subjects, &user, &tools));
    Ok(ExitCode::SUCCESS)
}

/// The block for a tool server's user pair; passwords are `$<USER>_PASSWORD` variables.
pub fn tool_user_block(subjects: &Subjects, user: &str, tools: &[&str]) -> String {
    authorization_block(&user_pair(Role::Tools { user, tools }), subjects, 0)
}
