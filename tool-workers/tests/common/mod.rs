//! Calling the example tools over NATS as a call-worker does.
#![allow(dead_code)]

use serde_json::Value;
use switchboard_proto::{Message as _, ToolCall, ToolResult, tool_result};

/// Invokes `tool` for call `call_sid` from a caller at `caller`, as the model's call `call_id`,
/// with up to `timeout_ms` for the tool.
pub async fn invoke(
    client: &async_nats::Client,
    (call_sid, caller): (&str, &str),
    tool: &str,
    call_id: &str,
    arguments: Value,
    timeout_ms: u32,
) -> anyhow::Result<ToolResult> {
    let request = ToolCall {
        call_sid: call_sid.into(),
        call_id: call_id.into(),
        name: tool.into(),
        arguments: arguments.to_string(),
        agent_id: "front-desk".into(),
        caller: caller.into(),
        timeout_ms,
    };
    let reply = client
        .request(
            format!("voice.tools.{tool}"),
            request.encode_to_vec().into(),
        )
        .await?;
    Ok(ToolResult::decode(reply.payload)?)
}

/// The tool's output, parsed (an error result is an error).
pub fn output(result: &ToolResult) -> anyhow::Result<Value> {
    match &result.result {
        Some(tool_result::Result::Output(text)) => Ok(serde_json::from_str(text)?),
        other => anyhow::bail!("expected an output, got {other:?}"),
    }
}
