//! The gateway's view of the agents file (`AGENTS_FILE`): which agent a call belongs to, and
//! where that call may be transferred.
//!
//! The worker decides everything about a session, but a `Transfer` frame makes the gateway ask
//! Twilio to dial a number, so the gateway checks that number itself: it must be the
//! `transfer_to` of the call's agent or of an agent it can hand off to ([`Agents::transfer_targets`]).
//! A worker (or anyone able to publish on the call's `.out` subject) therefore cannot send a
//! caller to a number of its choosing. The call's agent is routed the way the worker routes it:
//! the agent named by an outbound call's `?agent=`, else [`Agents::route`] on the dialed number.
//!
//! Without an agents file the gateway knows no agent and refuses every transfer (fail closed).
//! The file is read once at start: a changed `transfer_to` needs a gateway restart too.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use switchboard_agents::{Agents, AgentsError};

/// Routing and transfer targets of every agent.
#[derive(Debug, Default)]
pub struct AgentRules {
    /// `None` without an agents file.
    agents: Option<Agents>,
    /// Agent id -> numbers its calls may be transferred to.
    transfers: HashMap<String, HashSet<String>>,
}

impl AgentRules {
    /// Reads `file`; `None` gives the rules of no agents file (every transfer refused).
    pub fn load(file: Option<&Path>) -> Result<Self, AgentsError> {
        Ok(Self::new(file.map(Agents::load).transpose()?))
    }

    /// Rules over `agents`.
    pub fn new(agents: Option<Agents>) -> Self {
        let transfers = agents
            .iter()
            .flat_map(|agents| {
                agents.all().iter().map(|agent| {
                    let targets = agents
                        .transfer_targets(&agent.id)
                        .into_iter()
                        .map(|to| to.trim().to_owned())
                        .collect();
                    (agent.id.clone(), targets)
                })
            })
            .collect();
        Self { agents, transfers }
    }

    /// Whether an agents file was given.
    pub fn configured(&self) -> bool {
        self.agents.is_some()
    }

    /// The agent of a call to `to`: `requested` (an outbound call's `?agent=`) when given, else
    /// the agent answering `to`. Empty without an agents file or a matching agent.
    pub fn agent_for(&self, to: &str, requested: Option<&str>) -> String {
        if let Some(requested) = requested.filter(|a| !a.is_empty()) {
            return requested.to_owned();
        }
        self.agents
            .as_ref()
            .and_then(|agents| agents.route(to))
            .map(|agent| agent.id.clone())
            .unwrap_or_default()
    }

    /// Whether calls of `agent` are recorded: unless its agent says `record = false` (a call of
    /// no known agent is recorded).
    pub fn records(&self, agent: &str) -> bool {
        self.agents
            .as_ref()
            .and_then(|agents| agents.by_id(agent))
            .is_none_or(|agent| agent.record)
    }

    /// Whether a call of `agent` may be transferred to `to`.
    pub fn allows_transfer(&self, agent: &str, to: &str) -> bool {
        self.transfers
            .get(agent)
            .is_some_and(|targets| targets.contains(to.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AgentRules {
        let agents = Agents::parse(
            "[[agent]]\nid='desk'\nnumbers=['+15550001111', '*']\ninstructions='x'\n\
             tools=['handoff']\nhandoff_to=['billing']\ntransfer_to='+15550002222'\n\
             [[agent]]\nid='billing'\nnumbers=['+15550005555']\ninstructions='x'\n\
             transfer_to='+15550003333'\n\
             [[agent]]\nid='sales'\ninstructions='x'\n",
            "agents.toml",
            Path::new("."),
        )
        .unwrap();
        AgentRules::new(Some(agents))
    }

    #[test]
    fn calls_are_routed_like_the_worker_routes_them() {
        let r = rules();
        assert_eq!(r.agent_for("+15550001111", None), "desk");
        assert_eq!(r.agent_for("+15550005555", None), "billing");
        assert_eq!(r.agent_for("+19999999999", None), "desk");
        assert_eq!(r.agent_for("+15550001111", Some("sales")), "sales");
        assert_eq!(r.agent_for("+15550001111", Some("")), "desk");
    }

    #[test]
    fn transfers_go_only_to_the_agents_numbers() {
        let r = rules();
        assert!(r.allows_transfer("desk", "+15550002222"));
        // Reachable through a handoff.
        assert!(r.allows_transfer("desk", "+15550003333"));
        assert!(r.allows_transfer("billing", "+15550003333"));
        // Not the other way round.
        assert!(!r.allows_transfer("billing", "+15550002222"));
        assert!(!r.allows_transfer("desk", "+15550009999"));
        assert!(!r.allows_transfer("sales", "+15550002222"));
        assert!(!r.allows_transfer("unknown", "+15550002222"));
        assert!(!r.allows_transfer("", "+15550002222"));
    }

    #[test]
    fn without_an_agents_file_every_transfer_is_refused() {
        let r = AgentRules::load(None).unwrap();
        assert!(!r.configured());
        assert_eq!(r.agent_for("+15550001111", None), "");
        assert!(!r.allows_transfer("", "+15550002222"));
        assert!(!r.allows_transfer("desk", "+15550002222"));
    }
}
