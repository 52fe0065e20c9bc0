//! The Python example tool (`examples/python-tool/clinic_hours.py`, on the Python SDK in
//! sdks/python) against a real nats-server: it registers its `ToolSpec`, answers a `ToolCall`
//! through its queue group, and turns bad arguments into an error result. It runs with the
//! repository's `.venv`, where scripts/setup installs the SDK.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use switchboard_proto::{Message as _, TOOLS_BUCKET, ToolCall, ToolResult, ToolSpec, tool_result};
use switchboard_testkit::{NatsServer, eventually};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

async fn call(client: &async_nats::Client, arguments: &str) -> anyhow::Result<ToolResult> {
    let request = ToolCall {
        call_sid: "CA0789".into(),
        call_id: "call_1".into(),
        name: "clinic_hours".into(),
        arguments: arguments.into(),
        agent_id: "front-desk".into(),
        caller: "+15550001234".into(),
        timeout_ms: 2000,
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("voice.tools.clinic_hours", request.encode_to_vec().into()),
    )
    .await??;
    Ok(ToolResult::decode(reply.payload)?)
}

#[tokio::test]
async fn python_tool_registers_and_answers() -> anyhow::Result<()> {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/setup",
        python.display()
    );
    let example = root.join("examples/python-tool");

    let nats = NatsServer::start().await?;
    let mut tool = tokio::process::Command::new(&python)
        .arg(example.join("clinic_hours.py"))
        .env("NATS_URL", nats.url())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the Python tool")?;

    // Registered in the tool registry, with an object schema.
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let spec = eventually(Duration::from_secs(20), "clinic_hours registered", || {
        let js = js.clone();
        async move {
            let kv = js.get_key_value(TOOLS_BUCKET).await.ok()?;
            let bytes = kv.get("clinic_hours").await.ok()??;
            ToolSpec::decode(bytes).ok()
        }
    })
    .await?;
    assert_eq!(spec.name, "clinic_hours");
    assert_eq!(spec.timeout_ms, 2000);
    let schema: Value = serde_json::from_str(&spec.parameters_schema)?;
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["day"]["type"], "string");

    let result = call(&client, r#"{"day": "wednesday"}"#).await?;
    let Some(tool_result::Result::Output(text)) = &result.result else {
        anyhow::bail!("expected an output, got {result:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(text)?,
        json!({"timezone": "America/New_York", "day": "wednesday", "open": true,
            "opens": "09:00", "closes": "19:00"})
    );

    for bad in [r#"{"day": "someday"}"#, "not json", "[1]"] {
        let result = call(&client, bad).await?;
        let Some(tool_result::Result::Error(error)) = &result.result else {
            anyhow::bail!("expected an error for {bad:?}, got {result:?}");
        };
        assert_eq!(error.code, "invalid_arguments", "{bad}");
        assert!(!error.message.is_empty());
    }

    tool.kill().await?;
    Ok(())
}
