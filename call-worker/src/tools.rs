//! Tools: what the model may call on a call, and running business tools over NATS.
//!
//! - the registry: at call start the agent's tool list is resolved against the KV bucket
//!   `voice-tools` (tool services register a `ToolSpec` there) plus the built-in call-control
//!   tools with fixed schemas. A listed tool nobody registered is logged and left out of the
//!   session, never a crash: the call goes on without it.
//! - dispatch: a business tool runs as a NATS request to `voice.tools.<name>` in its own task, so
//!   the call actor never waits on it. Every failure (nobody serving, timeout, an error result, an
//!   unreadable reply) becomes a structured JSON error the model can talk its way around:
//!   `{"error":{"code":"unavailable","message":"..."}}`.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use switchboard_proto::event::ToolErrorCode;
use switchboard_proto::{
    Message as _, TOOLS_BUCKET, ToolCall, ToolError, ToolResult, ToolSpec, tool_result,
};
use switchboard_realtime::session::FunctionTool;

use crate::agents::{
    Agent, BUILTIN_TOOLS, END_CALL, HANDOFF, SEND_DTMF, SET_OUTCOME, TRANSFER_CALL,
};
use crate::call::machine::MAX_SUMMARY_CHARS;

/// How long reading one ToolSpec from KV may take at call start.
const REGISTRY_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one tool invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolReply {
    /// JSON text, passed to the model verbatim.
    Output(String),
    /// The invocation failed; the model is told why.
    Error(ToolError),
}

impl ToolReply {
    /// An error reply with one of the contract's codes (a tool's own codes arrive as
    /// [`ToolReply::Error`] directly).
    pub fn error(code: ToolErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ToolError::coded(code, message))
    }

    /// The `output` string of the `function_call_output` item.
    pub fn model_output(&self) -> String {
        match self {
            Self::Output(text) if text.trim().is_empty() => "{}".to_owned(),
            Self::Output(text) => text.clone(),
            Self::Error(e) => {
                serde_json::json!({"error": {"code": e.code, "message": e.message}}).to_string()
            }
        }
    }
}

/// A finished tool invocation, reported back to the call actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDone {
    /// The model's function-call id.
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// The arguments, as the model produced them.
    pub arguments: String,
    /// Output or error.
    pub reply: ToolReply,
    /// An outcome the tool set for the call.
    pub outcome: Option<String>,
    /// Dispatch to result.
    pub latency_ms: u32,
}

impl ToolDone {
    /// A call answered at once, by the worker itself (a built-in, or a refusal).
    pub fn at_once(call_id: &str, name: &str, arguments: &str, reply: ToolReply) -> Self {
        Self {
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
            reply,
            outcome: None,
            latency_ms: 0,
        }
    }
}

/// The tools of one call's session.
#[derive(Debug, Clone, Default)]
pub struct SessionTools {
    /// What `session.update` declares.
    pub functions: Vec<FunctionTool>,
    /// Business tools found in the registry, by name.
    pub business: HashMap<String, ToolSpec>,
}

impl SessionTools {
    /// Whether `name` was declared to the model.
    pub fn declared(&self, name: &str) -> bool {
        self.functions.iter().any(|f| f.name == name)
    }

    /// The deadline of a business tool: its own, else `default`.
    pub fn timeout(&self, name: &str, default: Duration) -> Duration {
        match self.business.get(name) {
            Some(spec) if spec.timeout_ms > 0 => Duration::from_millis(u64::from(spec.timeout_ms)),
            _ => default,
        }
    }
}

/// Whether `name` is a call-control tool run inside the worker.
pub fn is_builtin(name: &str) -> bool {
    BUILTIN_TOOLS.contains(&name)
}

/// The declaration of a built-in tool for `agent`: fixed schemas, except `handoff`, whose `agent`
/// parameter is an enum of the agent's `handoff_to` ids (so the model cannot name any other).
pub fn builtin_function(name: &str, agent: &Agent) -> Option<FunctionTool> {
    let (description, parameters) = match name {
        HANDOFF => (
            "Hand the call over to another agent who is better placed to help, for example \
             when the caller asks about something outside your role. The other agent takes \
             over the conversation at once and speaks next; do not say goodbye.",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "agent": {
                        "type": "string",
                        "enum": agent.handoff_to,
                        "description": "The agent to hand the call to."
                    },
                    "reason": {"type": "string", "description": "Why, in a few words, for the next agent."}
                },
                "required": ["agent"],
                "additionalProperties": false
            }),
        ),
        END_CALL => (
            "Hang up the phone call. Use it when the conversation is finished or the caller asks \
             to end the call. After calling it, say a short goodbye; the call ends once it has \
             been heard.",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why the call ends, in a few words."}
                },
                "additionalProperties": false
            }),
        ),
        SET_OUTCOME => (
            "Record the business outcome of this call (for example booked, resolved, \
             callback_requested, not_interested).",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "outcome": {"type": "string", "description": "A short machine-readable outcome, e.g. booked."},
                    "detail": {"type": "string", "description": "Optional detail for the record."}
                },
                "required": ["outcome"],
                "additionalProperties": false
            }),
        ),
        TRANSFER_CALL => transfer_function(agent),
        SEND_DTMF => (
            "Press keys on the phone line, to get through an automated phone menu (IVR). The \
             line is silent for a moment while the keys are played.",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "digits": {
                        "type": "string",
                        "pattern": "^[0-9*#w]{1,64}$",
                        "description": "The keys to press: 0-9, * and #; w waits half a second."
                    }
                },
                "required": ["digits"],
                "additionalProperties": false
            }),
        ),
        _ => return None,
    };
    Some(FunctionTool::new(name, description, parameters))
}

/// `transfer_call` as this agent offers it: a department to choose when `transfer_to` names
/// several, a summary for the human when transfers are warm.
fn transfer_function(agent: &Agent) -> (&'static str, serde_json::Value) {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    if !agent.departments.is_empty() {
        let names: Vec<&str> = agent.departments.iter().map(|d| d.name.as_str()).collect();
        properties.insert(
            "department".into(),
            serde_json::json!({"type": "string", "enum": names,
                "description": "The department to transfer the caller to."}),
        );
        required.push("department");
    }
    if agent.warm_transfer {
        properties.insert(
            "summary".into(),
            serde_json::json!({"type": "string", "maxLength": MAX_SUMMARY_CHARS,
                "description": "One or two sentences for your colleague: who is calling and what \
                    they need. Your colleague hears it before the caller is connected."}),
        );
        required.push("summary");
    }
    properties.insert(
        "reason".into(),
        serde_json::json!({"type": "string", "description": "Why the caller is transferred."}),
    );
    let description = if agent.warm_transfer {
        "Transfer the caller to a human colleague. Use it when the caller asks for a person or you \
         cannot help. The caller holds while your colleague is called and hears your summary. \
         After calling it, tell the caller briefly that you are connecting them. If nobody \
         answers, the caller comes back to you."
    } else {
        "Transfer the caller to a human colleague. Use it when the caller asks for a person or you \
         cannot help. After calling it, tell the caller briefly that you are transferring them. \
         If nobody answers, the caller comes back to you."
    };
    let mut parameters = serde_json::json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false
    });
    if !required.is_empty() {
        parameters["required"] = serde_json::json!(required);
    }
    (description, parameters)
}

/// Opens the tool registry bucket with the settings every process shares (entries expire
/// unless their tool keeps refreshing them; see [`switchboard_service::tool_registry`]).
pub async fn open_registry(js: &jetstream::Context) -> Result<kv::Store, String> {
    switchboard_service::tool_registry::open(js)
        .await
        .map_err(|e| e.to_string())
}

/// Resolves the agent's tools: built-ins with their fixed schemas, business tools from the
/// registry (read concurrently: this gates `session.update` and so the greeting). Missing or
/// broken registrations are logged and left out.
pub async fn load(registry: Option<&kv::Store>, agent: &Agent, call_sid: &str) -> SessionTools {
    let lookups = agent.tools.iter().map(|name| async move {
        if let Some(f) = builtin_function(name, agent) {
            return Some((f, None));
        }
        let spec = read_spec(registry, name, &agent.id, call_sid).await?;
        match function_from_spec(name, &spec) {
            Ok(f) => Some((f, Some(spec))),
            Err(e) => {
                tracing::warn!(%call_sid, tool = %name, error = %e, "bad ToolSpec; tool left out");
                metrics::counter!(crate::metrics::TOOLS_MISSING, "tool" => name.clone())
                    .increment(1);
                None
            }
        }
    });
    let mut tools = SessionTools::default();
    for (f, spec) in futures::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
    {
        if let Some(spec) = spec {
            tools.business.insert(f.name.clone(), spec);
        }
        tools.functions.push(f);
    }
    let offered: Vec<&str> = tools.functions.iter().map(|f| f.name.as_str()).collect();
    tracing::info!(%call_sid, agent = %agent.id, tools = ?offered, "tools offered to the model");
    tools
}

/// One tool's registration, or `None` (logged) when it cannot be had.
async fn read_spec(
    registry: Option<&kv::Store>,
    name: &str,
    agent_id: &str,
    call_sid: &str,
) -> Option<ToolSpec> {
    let missing = |why: &str| {
        tracing::warn!(%call_sid, tool = %name, agent = %agent_id, why,
            "tool left out of the session");
        metrics::counter!(crate::metrics::TOOLS_MISSING, "tool" => name.to_owned()).increment(1);
    };
    let Some(store) = registry else {
        missing("no tool registry");
        return None;
    };
    match tokio::time::timeout(REGISTRY_READ_TIMEOUT, store.get(name)).await {
        Ok(Ok(Some(bytes))) => match ToolSpec::decode(bytes) {
            Ok(spec) => Some(spec),
            Err(e) => {
                missing(&format!("unreadable ToolSpec: {e}"));
                None
            }
        },
        Ok(Ok(None)) => {
            missing(&format!("not registered in {TOOLS_BUCKET}"));
            None
        }
        Ok(Err(e)) => {
            missing(&format!("reading the registry failed: {e}"));
            None
        }
        Err(_) => {
            missing("reading the registry timed out");
            None
        }
    }
}

/// The model-facing declaration of a registered tool.
pub fn function_from_spec(name: &str, spec: &ToolSpec) -> Result<FunctionTool, String> {
    let schema = if spec.parameters_schema.trim().is_empty() {
        serde_json::json!({"type": "object", "properties": {}})
    } else {
        serde_json::from_str::<serde_json::Value>(&spec.parameters_schema)
            .map_err(|e| format!("parameters_schema is not JSON: {e}"))?
    };
    if !schema.is_object() {
        return Err("parameters_schema is not a JSON object".into());
    }
    Ok(FunctionTool::new(name, &spec.description, schema))
}

/// Calls a business tool and waits for its answer (in the task that runs the invocation).
/// `headers` go with the request (the `tool` span's trace context).
pub async fn call_business_tool(
    client: &async_nats::Client,
    subject: String,
    call: &ToolCall,
    timeout: Duration,
    headers: async_nats::HeaderMap,
) -> (ToolReply, Option<String>) {
    let request = async_nats::Request::new()
        .payload(call.encode_to_vec().into())
        .headers(headers)
        .timeout(Some(timeout));
    match client.send_request(subject, request).await {
        Ok(msg) => decode_reply(&call.name, &msg.payload),
        Err(e) => (map_request_error(&call.name, e.kind(), timeout), None),
    }
}

/// Maps a failed NATS request onto the error the model sees.
pub fn map_request_error(
    name: &str,
    kind: async_nats::client::RequestErrorKind,
    timeout: Duration,
) -> ToolReply {
    use async_nats::client::RequestErrorKind as K;
    match kind {
        K::NoResponders => ToolReply::error(
            ToolErrorCode::Unavailable,
            format!("No service is answering the tool `{name}` right now."),
        ),
        K::TimedOut => ToolReply::error(
            ToolErrorCode::Timeout,
            format!(
                "The tool `{name}` did not answer within {} ms.",
                timeout.as_millis()
            ),
        ),
        K::MaxPayloadExceeded => ToolReply::error(
            ToolErrorCode::InvalidArguments,
            "The arguments are too large.",
        ),
        K::InvalidSubject | K::Other => ToolReply::error(
            ToolErrorCode::Unavailable,
            format!("The tool `{name}` could not be reached."),
        ),
    }
}

/// Decodes a tool service's reply.
pub fn decode_reply(name: &str, payload: &[u8]) -> (ToolReply, Option<String>) {
    let result = match ToolResult::decode(payload) {
        Ok(r) => r,
        Err(_) => {
            return (
                ToolReply::error(
                    ToolErrorCode::Failed,
                    format!("The tool `{name}` sent an unreadable reply."),
                ),
                None,
            );
        }
    };
    let outcome = (!result.outcome.is_empty()).then(|| result.outcome.clone());
    let reply = match result.result {
        Some(tool_result::Result::Output(text)) => ToolReply::Output(text),
        Some(tool_result::Result::Error(e)) => ToolReply::Error(ToolError {
            code: if e.code.is_empty() {
                ToolErrorCode::Failed.as_str().into()
            } else {
                e.code
            },
            message: if e.message.is_empty() {
                format!("The tool `{name}` failed.")
            } else {
                e.message
            },
        }),
        None => ToolReply::error(
            ToolErrorCode::Failed,
            format!("The tool `{name}` returned nothing."),
        ),
    };
    (reply, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::client::RequestErrorKind;
    use switchboard_proto::ToolError;

    #[test]
    fn builtins_have_object_schemas() {
        let mut agent = Agent::new("desk", "x");
        agent.handoff_to = vec!["billing".into(), "sales".into()];
        for name in BUILTIN_TOOLS {
            let f = builtin_function(name, &agent).unwrap();
            assert_eq!(f.kind, "function");
            assert_eq!(f.parameters["type"], "object");
            assert!(is_builtin(name));
        }
        assert!(builtin_function("lookup_customer", &agent).is_none());
        assert_eq!(
            builtin_function(SET_OUTCOME, &agent).unwrap().parameters["required"][0],
            "outcome"
        );
        let handoff = builtin_function(HANDOFF, &agent).unwrap().parameters;
        assert_eq!(
            handoff["properties"]["agent"]["enum"],
            serde_json::json!(["billing", "sales"])
        );
        assert_eq!(handoff["required"], serde_json::json!(["agent"]));
        assert_eq!(handoff["properties"]["reason"]["type"], "string");
    }

    #[test]
    fn error_output_is_structured_json() {
        let out = ToolReply::error(ToolErrorCode::Unavailable, "nobody home").model_output();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        assert_eq!(v["error"]["message"], "nobody home");
        assert_eq!(
            ToolReply::Output(r#"{"a":1}"#.into()).model_output(),
            r#"{"a":1}"#
        );
        assert_eq!(ToolReply::Output(String::new()).model_output(), "{}");
    }

    #[test]
    fn request_errors_map_to_codes() {
        let t = Duration::from_millis(8000);
        let code = |k| match map_request_error("x", k, t) {
            ToolReply::Error(e) => e.code,
            ToolReply::Output(_) => panic!(),
        };
        assert_eq!(code(RequestErrorKind::NoResponders), "unavailable");
        assert_eq!(code(RequestErrorKind::TimedOut), "timeout");
        assert_eq!(code(RequestErrorKind::Other), "unavailable");
    }

    #[test]
    fn decodes_replies() {
        let ok = ToolResult {
            result: Some(tool_result::Result::Output(r#"{"name":"Maria"}"#.into())),
            outcome: "identified".into(),
        };
        assert_eq!(
            decode_reply("t", &ok.encode_to_vec()),
            (
                ToolReply::Output(r#"{"name":"Maria"}"#.into()),
                Some("identified".into())
            )
        );
        let err = ToolResult {
            result: Some(tool_result::Result::Error(ToolError {
                code: "not_found".into(),
                message: "No such customer.".into(),
            })),
            outcome: String::new(),
        };
        assert_eq!(
            decode_reply("t", &err.encode_to_vec()),
            (
                ToolReply::error(ToolErrorCode::NotFound, "No such customer."),
                None
            )
        );
        let (garbage, _) = decode_reply("t", b"\xff\xff\xff");
        assert!(matches!(garbage, ToolReply::Error(ref e) if e.code == "failed"));
        let (empty, _) = decode_reply("t", &ToolResult::default().encode_to_vec());
        assert!(matches!(empty, ToolReply::Error(ref e) if e.code == "failed"));
    }

    #[test]
    fn spec_to_function() {
        let spec = ToolSpec {
            name: "lookup_customer".into(),
            description: "Find a customer".into(),
            parameters_schema: r#"{"type":"object","properties":{"phone":{"type":"string"}}}"#
                .into(),
            timeout_ms: 1500,
            version: "1".into(),
        };
        let f = function_from_spec("lookup_customer", &spec).unwrap();
        assert_eq!(f.description, "Find a customer");
        assert_eq!(f.parameters["properties"]["phone"]["type"], "string");
        assert!(
            function_from_spec(
                "x",
                &ToolSpec {
                    parameters_schema: "not json".into(),
                    ..spec.clone()
                }
            )
            .is_err()
        );
        let mut tools = SessionTools::default();
        tools.business.insert("lookup_customer".into(), spec);
        assert_eq!(
            tools.timeout("lookup_customer", Duration::from_secs(8)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            tools.timeout("other", Duration::from_secs(8)),
            Duration::from_secs(8)
        );
    }
}
