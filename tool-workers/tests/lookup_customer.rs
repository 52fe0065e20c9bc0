//! The `tool-worker` binary against a real nats-server and Postgres: `lookup_customer` over NATS,
//! the record is always the caller's own (whatever number the model passes), argument errors, the
//! registry entry, readiness and a clean SIGTERM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use switchboard_proto::{Message as _, TOOLS_BUCKET, ToolCall, ToolResult, ToolSpec, tool_result};
use switchboard_testkit::{NatsServer, Postgres, Service, eventually, free_port};

/// The number callsim and the demo call from: Maria Garcia in the seeded directory.
const MARIA: &str = "+15550001234";

async fn call(client: &async_nats::Client, arguments: &str) -> anyhow::Result<ToolResult> {
    call_from(client, MARIA, arguments).await
}

async fn call_from(
    client: &async_nats::Client,
    caller: &str,
    arguments: &str,
) -> anyhow::Result<ToolResult> {
    // Each invocation has its own id, as the model's have (a repeated id is a redelivery).
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let request = ToolCall {
        call_sid: "CA0123".into(),
        call_id: format!("call_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        name: "lookup_customer".into(),
        arguments: arguments.into(),
        agent_id: "front-desk".into(),
        caller: caller.into(),
        timeout_ms: 5000,
    };
    let reply = client
        .request(
            "voice.tools.lookup_customer",
            request.encode_to_vec().into(),
        )
        .await?;
    Ok(ToolResult::decode(reply.payload)?)
}

fn output(result: &ToolResult) -> anyhow::Result<Value> {
    match &result.result {
        Some(tool_result::Result::Output(text)) => Ok(serde_json::from_str(text)?),
        other => anyhow::bail!("expected an output, got {other:?}"),
    }
}

fn error(result: &ToolResult) -> anyhow::Result<(String, String)> {
    match &result.result {
        Some(tool_result::Result::Error(e)) => Ok((e.code.clone(), e.message.clone())),
        other => anyhow::bail!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn lookup_customer_over_nats() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats = NatsServer::start().await?;
    let pg = Postgres::start().await?;
    let db = pg.create_database("switchboard_tools").await?;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut worker = Service::spawn(
        "tool-worker",
        &[
            ("LISTEN", listen.clone()),
            ("DATABASE_URL", db),
            ("NATS_URL", nats.url().to_owned()),
        ],
    )?;
    worker.wait_ready(&listen).await?;
    let client = async_nats::connect(nats.url()).await?;

    let maria = json!({"found": true, "name": "Maria Garcia", "phone": MARIA,
        "tier": "gold", "notes": "Prefers morning appointments"});
    // The caller's own record, found by the number the call comes from.
    assert_eq!(output(&call(&client, "{}").await?)?, maria);

    // The model asks for somebody else's number ("my number is 555 000 5678"): the caller still
    // gets only their own record, never James Chen's.
    for asked in [
        r#"{"phone":"+15550005678"}"#,
        r#"{"phone":"(555) 000-5678"}"#,
    ] {
        let result = call(&client, asked).await?;
        assert_eq!(output(&result)?, maria, "{asked}");
        let text = format!("{result:?}");
        assert!(!text.contains("James") && !text.contains("5678"), "{text}");
    }

    // An unknown caller is an answer, not an error; asking for a known number does not help.
    let result = call_from(&client, "+15551239999", r#"{"phone":"+15550001234"}"#).await?;
    assert_eq!(
        output(&result)?,
        json!({"found": false, "phone": "+15551239999"})
    );

    // A withheld number or a non-phone caller finds nobody.
    for caller in ["anonymous", "client:alice", ""] {
        let result = call_from(&client, caller, r#"{"phone":"+15550001234"}"#).await?;
        assert_eq!(
            output(&result)?,
            json!({"found": false, "number_withheld": true}),
            "{caller}"
        );
    }

    // Arguments that are not a JSON object are still refused clearly.
    let (code, message) = error(&call(&client, "[1]").await?)?;
    assert_eq!(code, "invalid_arguments");
    assert!(message.contains("object"), "{message}");

    // Not JSON at all.
    let (code, message) = error(&call(&client, "phone=+15550001234").await?)?;
    assert_eq!(code, "invalid_arguments");
    assert!(message.contains("not valid JSON"), "{message}");

    // Registered for the call-workers, with the schema the model gets.
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(TOOLS_BUCKET).await?;
    let spec = kv
        .get("lookup_customer")
        .await?
        .context("lookup_customer not in the registry")?;
    let spec = ToolSpec::decode(spec)?;
    assert_eq!(spec.name, "lookup_customer");
    assert!(!spec.description.is_empty());
    assert!(spec.timeout_ms > 0);
    assert_eq!(
        serde_json::from_str::<Value>(&spec.parameters_schema)?,
        tool_workers::customers::parameters()
    );

    // Metrics are served.
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("tool_requests_total"), "{metrics}");

    // SIGTERM: exits cleanly and stops answering.
    let status = worker.terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "exit status {status}");
    let gone = eventually(Duration::from_secs(5), "no responders", || {
        let client = client.clone();
        async move {
            match client
                .request("voice.tools.lookup_customer", "x".into())
                .await
            {
                Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                    Some(())
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the tool still answers after shutdown");
    Ok(())
}
