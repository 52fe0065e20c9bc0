//! The tool SDK against a real nats-server: error results, panics, timeouts, queue groups,
//! registration and draining on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{Message as _, TOOLS_BUCKET, ToolCall, ToolResult, ToolSpec, tool_result};
use switchboard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;
use tool_workers::{Serving, Tool, ToolContext, ToolFailure, ToolServer};

fn request(name: &str, arguments: &str) -> bytes::Bytes {
    ToolCall {
        call_sid: "CA1".into(),
        call_id: format!("call_{arguments}"),
        name: name.into(),
        arguments: arguments.into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

async fn call(client: &async_nats::Client, name: &str, args: &str) -> anyhow::Result<ToolResult> {
    let reply = client
        .request(format!("voice.tools.{name}"), request(name, args))
        .await?;
    Ok(ToolResult::decode(reply.payload)?)
}

fn code(result: &ToolResult) -> Option<&str> {
    match &result.result {
        Some(tool_result::Result::Error(e)) => Some(e.code.as_str()),
        _ => None,
    }
}

fn output(result: &ToolResult) -> Option<Value> {
    match &result.result {
        Some(tool_result::Result::Output(text)) => serde_json::from_str(text).ok(),
        _ => None,
    }
}

/// `n` doubled; `n < 0` panics; `n == 7` sets an outcome; `wait_ms` sleeps first.
fn doubler(counter: Arc<AtomicUsize>) -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}, "wait_ms": {"type": "integer"}},
        "required": ["n"]
    });
    Tool::new(
        "double",
        "Doubles n.",
        schema,
        move |ctx: ToolContext, args: Value| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let n = args["n"].as_i64().unwrap_or_default();
                if let Some(ms) = args["wait_ms"].as_u64() {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if n < 0 {
                    panic!("negative input");
                }
                if n == 13 {
                    return Err(ToolFailure::not_found("no such number"));
                }
                if n == 7 {
                    ctx.set_outcome("lucky");
                }
                Ok(json!({"doubled": n * 2, "call_sid": ctx.call_sid}))
            }
        },
    )
    .expect("valid tool")
    .with_timeout(Duration::from_millis(500))
}

async fn start(
    client: &async_nats::Client,
    tool: Tool,
) -> anyhow::Result<(Serving, CancellationToken)> {
    let stop = CancellationToken::new();
    let serving = ToolServer::new()
        .tool(tool)
        .start(client.clone(), &Subjects::default(), stop.clone())
        .await?;
    Ok((serving, stop))
}

#[tokio::test]
async fn answers_errors_panics_and_timeouts_and_keeps_serving() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let (serving, stop) = start(&client, doubler(Arc::default())).await?;

    let r = call(&client, "double", r#"{"n": 21}"#).await?;
    assert_eq!(output(&r), Some(json!({"doubled": 42, "call_sid": "CA1"})));
    assert_eq!(r.outcome, "");

    let r = call(&client, "double", r#"{"n": 7}"#).await?;
    assert_eq!(r.outcome, "lucky");

    let r = call(&client, "double", r#"{"n": 13}"#).await?;
    assert_eq!(code(&r), Some("not_found"));

    // Garbage instead of a ToolCall.
    let reply = client
        .request("voice.tools.double", vec![0xff_u8; 8].into())
        .await?;
    assert_eq!(
        code(&ToolResult::decode(reply.payload)?),
        Some("invalid_request")
    );

    let r = call(&client, "double", r#"{"n": "two"}"#).await?;
    assert_eq!(code(&r), Some("invalid_arguments"));

    // A panic is an error result and the server lives on.
    let r = call(&client, "double", r#"{"n": -1}"#).await?;
    assert_eq!(code(&r), Some("panicked"));
    let r = call(&client, "double", r#"{"n": 2}"#).await?;
    assert_eq!(output(&r), Some(json!({"doubled": 4, "call_sid": "CA1"})));

    // Over the tool's 500 ms timeout.
    let r = call(&client, "double", r#"{"n": 1, "wait_ms": 5000}"#).await?;
    assert_eq!(code(&r), Some("timeout"));
    let r = call(&client, "double", r#"{"n": 3}"#).await?;
    assert_eq!(output(&r), Some(json!({"doubled": 6, "call_sid": "CA1"})));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving.wait()).await?;
    Ok(())
}

#[tokio::test]
async fn registers_the_spec_in_kv() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let tool = doubler(Arc::default());
    let schema = tool.parameters().clone();
    let (serving, stop) = start(&client, tool).await?;

    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(TOOLS_BUCKET).await?;
    let entry = kv.get("double").await?.context("no registry entry")?;
    let spec = ToolSpec::decode(entry)?;
    assert_eq!(spec.name, "double");
    assert_eq!(spec.description, "Doubles n.");
    assert_eq!(spec.timeout_ms, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&spec.parameters_schema)?,
        schema
    );

    stop.cancel();
    serving.wait().await;
    Ok(())
}

#[tokio::test]
async fn refreshes_the_registry_entry() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let stop = CancellationToken::new();
    let serving = ToolServer::new()
        .tool(doubler(Arc::default()))
        .refresh_every(Duration::from_millis(100))
        .start(client.clone(), &Subjects::default(), stop.clone())
        .await?;
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(TOOLS_BUCKET).await?;
    let first = kv.entry("double").await?.context("no entry")?.revision;
    let later = switchboard_testkit::eventually(Duration::from_secs(5), "a refresh", || {
        let kv = kv.clone();
        async move {
            let rev = kv.entry("double").await.ok()??.revision;
            (rev > first).then_some(rev)
        }
    })
    .await?;
    assert!(later > first);
    stop.cancel();
    serving.wait().await;
    Ok(())
}

#[tokio::test]
async fn a_failed_registration_is_retried_at_once_not_a_refresh_later() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    // A stream that holds the bucket's subjects keeps the bucket from being made, so the first
    // registration fails, as it does while a cluster's new bucket is still electing a leader.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "squatter".into(),
        subjects: vec![format!("$KV.{TOOLS_BUCKET}.>")],
        ..Default::default()
    })
    .await?;
    let stop = CancellationToken::new();
    let serving = ToolServer::new()
        .tool(doubler(Arc::default()))
        .refresh_every(Duration::from_secs(600))
        .start(client.clone(), &Subjects::default(), stop.clone())
        .await?;
    assert!(
        js.get_key_value(TOOLS_BUCKET).await.is_err(),
        "the first registration cannot have made the bucket"
    );
    js.delete_stream("squatter").await?;
    // Well before the next refresh (600 s): the retry backs off from 200 ms.
    switchboard_testkit::eventually(Duration::from_secs(5), "the tool registered", || {
        let js = js.clone();
        async move {
            let kv = js.get_key_value(TOOLS_BUCKET).await.ok()?;
            kv.get("double").await.ok()?
        }
    })
    .await?;
    stop.cancel();
    serving.wait().await;
    Ok(())
}

#[tokio::test]
async fn replicas_share_the_queue_group() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let (a_count, b_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, stop_a) = start(&client, doubler(a_count.clone())).await?;
    let client_b = async_nats::connect(nats.url()).await?;
    let (b, stop_b) = start(&client_b, doubler(b_count.clone())).await?;

    // Count every reply that arrives on one inbox: each request must get exactly one.
    const N: usize = 40;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    for i in 0..N {
        client
            .publish_with_reply(
                "voice.tools.double",
                inbox.clone(),
                request("double", &format!(r#"{{"n": {i}}}"#)),
            )
            .await?;
    }
    client.flush().await?;
    let mut got = 0;
    while got < N {
        tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await?
            .context("inbox closed")?;
        got += 1;
    }
    // Nothing more comes: no request was answered twice.
    let extra = tokio::time::timeout(Duration::from_millis(300), replies.next()).await;
    assert!(extra.is_err(), "a request was answered more than once");
    let (na, nb) = (
        a_count.load(Ordering::SeqCst),
        b_count.load(Ordering::SeqCst),
    );
    assert_eq!(na + nb, N);
    assert!(na > 0 && nb > 0, "one replica got nothing: {na} / {nb}");

    stop_a.cancel();
    stop_b.cancel();
    a.wait().await;
    b.wait().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let counter = Arc::new(AtomicUsize::new(0));
    let (serving, stop) = start(&client, doubler(counter.clone())).await?;

    let pending = {
        let client = client.clone();
        tokio::spawn(async move { call(&client, "double", r#"{"n": 5, "wait_ms": 300}"#).await })
    };
    // Shut down once the handler is running.
    switchboard_testkit::eventually(Duration::from_secs(5), "handler started", || {
        let counter = counter.clone();
        async move { (counter.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await?;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving.wait()).await?;
    let r = pending.await??;
    assert_eq!(output(&r), Some(json!({"doubled": 10, "call_sid": "CA1"})));

    // Drained: nobody answers any more.
    let err = client
        .request("voice.tools.double", request("double", r#"{"n": 1}"#))
        .await
        .expect_err("no responders after drain");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
    Ok(())
}

#[tokio::test]
async fn refuses_duplicate_tools() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let err = ToolServer::new()
        .tool(doubler(Arc::default()))
        .tool(doubler(Arc::default()))
        .start(client, &Subjects::default(), CancellationToken::new())
        .await
        .expect_err("duplicate names");
    assert!(matches!(err, tool_workers::ServeError::DuplicateTool(name) if name == "double"));
    Ok(())
}
