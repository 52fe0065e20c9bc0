//! `switchboard tools ls` and `switchboard tools call`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use futures::TryStreamExt as _;
use serde_json::json;
use switchboard_proto::{Message as _, TOOLS_BUCKET, ToolCall, ToolSpec};
use switchboard_service::NatsArgs;
use switchboard_service::tool_registry::{Instance, Key};
use tokio::time::Instant;

/// The call-worker's default `TOOL_TIMEOUT_MS`, used when a spec names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Debug, clap::Subcommand)]
pub enum ToolsCommand {
    /// Lists the registered tools and the replicas serving each.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Calls a tool as a call-worker would and prints its result and latency.
    Call {
        /// The tool's name.
        name: String,
        /// The arguments, as JSON text (what the model would send).
        #[arg(default_value = "{}")]
        arguments: String,
        /// The CallSid the tool sees.
        #[arg(long, default_value = "CAcli00000000000000000000000000000")]
        call_sid: String,
        /// The model's function-call id (default: a fresh one, so the call is never a redelivery).
        #[arg(long)]
        call_id: Option<String>,
        /// The agent the tool sees.
        #[arg(long, default_value = "cli")]
        agent: String,
        /// The caller's number the tool sees.
        #[arg(long, default_value = "+15550000000")]
        caller: String,
        /// The deadline, ms (default: the tool's registered timeout, else 8000, as the worker).
        #[arg(long)]
        timeout_ms: Option<u32>,
    },
}

pub async fn run(nats: &NatsArgs, command: ToolsCommand) -> anyhow::Result<ExitCode> {
    let client = crate::connect(nats).await?;
    let js = jetstream::new(client.clone());
    match command {
        ToolsCommand::Ls { json } => {
            let tools = registered(&js).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ls_json(&tools))?);
            } else {
                print!("{}", ls_table(&tools));
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Call {
            name,
            arguments,
            call_sid,
            call_id,
            agent,
            caller,
            timeout_ms,
        } => {
            let spec = match js.get_key_value(TOOLS_BUCKET).await {
                Ok(store) => store
                    .get(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| ToolSpec::decode(b).ok()),
                Err(_) => None,
            };
            let timeout = match (timeout_ms, &spec) {
                (Some(ms), _) => Duration::from_millis(u64::from(ms)),
                (None, Some(s)) if s.timeout_ms > 0 => {
                    Duration::from_millis(u64::from(s.timeout_ms))
                }
                _ => DEFAULT_TIMEOUT,
            };
            if spec.is_none() {
                eprintln!("note: `{name}` is not registered in {TOOLS_BUCKET}; calling it anyway");
            }
            let call = ToolCall {
                call_sid,
                call_id: call_id
                    .unwrap_or_else(|| format!("call_cli_{}", uuid::Uuid::new_v4().simple())),
                name: name.clone(),
                arguments,
                agent_id: agent,
                caller,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            };
            let subject = nats.subjects().tool(&name);
            let started = Instant::now();
            let (reply, outcome) = call_worker::tools::call_business_tool(
                &client,
                subject,
                &call,
                timeout,
                async_nats::HeaderMap::new(),
            )
            .await;
            let latency = started.elapsed();
            let model_output = reply.model_output();
            let pretty = serde_json::from_str::<serde_json::Value>(&model_output)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(model_output);
            println!("{pretty}");
            if let Some(outcome) = outcome {
                println!("outcome: {outcome}");
            }
            println!("latency: {:.1} ms", latency.as_secs_f64() * 1000.0);
            Ok(match reply {
                call_worker::tools::ToolReply::Output(_) => ExitCode::SUCCESS,
                call_worker::tools::ToolReply::Error { .. } => ExitCode::from(1),
            })
        }
    }
}

/// One registered tool as the registry shows it.
#[derive(Debug, Default)]
pub struct Registered {
    pub spec: Option<ToolSpec>,
    /// When the spec was last put.
    pub refreshed_ms: Option<i64>,
    pub instances: Vec<Instance>,
}

/// Reads the whole registry: specs and heartbeats, by tool name.
pub async fn registered(js: &jetstream::Context) -> anyhow::Result<BTreeMap<String, Registered>> {
    let Ok(store) = js.get_key_value(TOOLS_BUCKET).await else {
        return Ok(BTreeMap::new());
    };
    let keys: Vec<String> = store
        .keys()
        .await
        .context("listing the registry")?
        .try_collect()
        .await
        .context("listing the registry")?;
    let mut tools: BTreeMap<String, Registered> = BTreeMap::new();
    for key in keys {
        let Some(entry) = entry(&store, &key).await? else {
            continue;
        };
        match Key::parse(&key) {
            Key::Spec(name) => {
                let slot = tools.entry(name.to_owned()).or_default();
                slot.spec = ToolSpec::decode(entry.value).ok();
                slot.refreshed_ms = Some(
                    i64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                );
            }
            Key::Instance { tool, .. } => {
                if let Ok(instance) = serde_json::from_slice::<Instance>(&entry.value) {
                    tools
                        .entry(tool.to_owned())
                        .or_default()
                        .instances
                        .push(instance);
                }
            }
        }
    }
    Ok(tools)
}

async fn entry(store: &kv::Store, key: &str) -> anyhow::Result<Option<kv::Entry>> {
    let entry = store
        .entry(key)
        .await
        .with_context(|| format!("reading `{key}`"))?;
    Ok(entry.filter(|e| e.operation == kv::Operation::Put))
}

fn ls_json(tools: &BTreeMap<String, Registered>) -> serde_json::Value {
    let list: Vec<_> = tools
        .iter()
        .map(|(name, t)| {
            json!({
                "name": name,
                "registered": t.spec.is_some(),
                "description": t.spec.as_ref().map(|s| s.description.clone()),
                "timeout_ms": t.spec.as_ref().map(|s| s.timeout_ms),
                "version": t.spec.as_ref().map(|s| s.version.clone()),
                "parameters": t.spec.as_ref().and_then(|s| serde_json::from_str::<serde_json::Value>(&s.parameters_schema).ok()),
                "refreshed_ms": t.refreshed_ms,
                "replicas": t.instances,
            })
        })
        .collect();
    json!(list)
}

/// The table `tools ls` prints.
pub fn ls_table(tools: &BTreeMap<String, Registered>) -> String {
    if tools.is_empty() {
        return format!("no tools registered in {TOOLS_BUCKET}\n");
    }
    let mut out = format!(
        "{:<28} {:>8} {:<10} {:>8}  SERVED BY\n",
        "TOOL", "TIMEOUT", "VERSION", "REPLICAS"
    );
    for (name, t) in tools {
        let (timeout, version) = match &t.spec {
            Some(s) => (format!("{} ms", s.timeout_ms), s.version.clone()),
            None => ("-".to_owned(), "(no spec)".to_owned()),
        };
        let served: Vec<String> = t
            .instances
            .iter()
            .map(|i| format!("{}@{} pid {} ({})", i.sdk, i.host, i.pid, i.instance))
            .collect();
        let served = if served.is_empty() {
            "unknown (no heartbeat: registered by hand or an older SDK)".to_owned()
        } else {
            served.join(", ")
        };
        out.push_str(&format!(
            "{name:<28} {timeout:>8} {version:<10} {:>8}  {served}\n",
            t.instances.len()
        ));
    }
    out
}
