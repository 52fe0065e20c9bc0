//! Redelivered tool calls against a real nats-server: the handler runs once per
//! (tool, call_sid, call_id) across replicas, and every copy gets the same result.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{Message as _, ToolCall, ToolResult, tool_result};
use switchboard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;
use tool_workers::idempotency::RESULTS_BUCKET;
use tool_workers::{Serving, Tool, ToolContext, ToolServer};

/// A tool with a side effect: each run takes the next ticket number, after `wait_ms`.
fn ticketing(runs: Arc<AtomicUsize>) -> Tool {
    let schema = json!({"type": "object", "properties": {"wait_ms": {"type": "integer"}}});
    Tool::new(
        "take_ticket",
        "Takes a ticket.",
        schema,
        move |ctx: ToolContext, args: Value| {
            let runs = runs.clone();
            async move {
                let ticket = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(ms) = args["wait_ms"].as_u64() {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                ctx.set_outcome("ticketed");
                Ok(json!({"ticket": ticket, "call_id": ctx.call_id}))
            }
        },
    )
    .expect("valid tool")
    .with_timeout(Duration::from_secs(3))
}

fn call(call_id: &str, arguments: &str) -> bytes::Bytes {
    ToolCall {
        call_sid: "CA1".into(),
        call_id: call_id.into(),
        name: "take_ticket".into(),
        arguments: arguments.into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

async fn ask(
    client: &async_nats::Client,
    subject: &str,
    payload: bytes::Bytes,
) -> anyhow::Result<ToolResult> {
    let reply = client.request(subject.to_owned(), payload).await?;
    Ok(ToolResult::decode(reply.payload)?)
}

fn ticket(result: &ToolResult) -> Option<u64> {
    match &result.result {
        Some(tool_result::Result::Output(text)) => serde_json::from_str::<Value>(text)
            .ok()?
            .get("ticket")?
            .as_u64(),
        _ => None,
    }
}

async fn replica(
    nats: &NatsServer,
    subjects: &Subjects,
    tool: Tool,
    idempotent: bool,
) -> anyhow::Result<(Serving, CancellationToken)> {
    let client = async_nats::connect(nats.url()).await?;
    let stop = CancellationToken::new();
    let serving = ToolServer::new()
        .tool(tool)
        .idempotent(idempotent)
        .start(client, subjects, stop.clone())
        .await?;
    Ok((serving, stop))
}

async fn stop_all(replicas: Vec<(Serving, CancellationToken)>) {
    for (serving, stop) in replicas {
        stop.cancel();
        serving.wait().await;
    }
}

#[tokio::test]
async fn concurrent_copies_on_two_replicas_run_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    // Two replicas that share the results bucket, each reached on its own subject, so each copy
    // certainly goes to a different replica.
    let runs = Arc::new(AtomicUsize::new(0));
    let (sa, sb) = (Subjects::new("a"), Subjects::new("b"));
    let a = replica(&nats, &sa, ticketing(runs.clone()), true).await?;
    let b = replica(&nats, &sb, ticketing(runs.clone()), true).await?;

    let payload = call("call_same", r#"{"wait_ms": 300}"#);
    let (to_a, to_b) = (sa.tool("take_ticket"), sb.tool("take_ticket"));
    let (ra, rb) = tokio::join!(
        ask(&client, &to_a, payload.clone()),
        ask(&client, &to_b, payload),
    );
    let (ra, rb) = (ra?, rb?);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran twice");
    assert_eq!(ticket(&ra), Some(1));
    assert_eq!(ra, rb, "the copies got different results");
    assert_eq!(rb.outcome, "ticketed");

    stop_all(vec![a, b]).await;
    Ok(())
}

#[tokio::test]
async fn concurrent_copies_through_the_queue_group_run_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let subjects = Subjects::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let a = replica(&nats, &subjects, ticketing(runs.clone()), true).await?;
    let b = replica(&nats, &subjects, ticketing(runs.clone()), true).await?;

    const CALLS: usize = 10;
    let mut pairs = Vec::new();
    for i in 0..CALLS {
        let payload = call(&format!("call_{i}"), r#"{"wait_ms": 100}"#);
        let subject = subjects.tool("take_ticket");
        let (c1, c2) = (client.clone(), client.clone());
        let (p1, s1) = (payload.clone(), subject.clone());
        pairs.push(tokio::spawn(async move {
            let (r1, r2) = tokio::join!(ask(&c1, &s1, p1), ask(&c2, &subject, payload));
            anyhow::Ok((r1?, r2?))
        }));
    }
    let mut tickets = Vec::new();
    for pair in pairs {
        let (r1, r2) = pair.await??;
        assert_eq!(r1, r2, "the copies of one call got different results");
        tickets.push(ticket(&r1).expect("a ticket"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), CALLS);
    tickets.sort_unstable();
    tickets.dedup();
    assert_eq!(tickets.len(), CALLS, "two calls shared a ticket");

    stop_all(vec![a, b]).await;
    Ok(())
}

#[tokio::test]
async fn a_later_copy_gets_the_stored_result() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let subjects = Subjects::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let server = replica(&nats, &subjects, ticketing(runs.clone()), true).await?;
    let subject = subjects.tool("take_ticket");

    // A call id with characters KV keys do not allow is escaped, not refused.
    let odd_id = "call 1.*>/é";
    let first = ask(&client, &subject, call(odd_id, "{}")).await?;
    let again = ask(&client, &subject, call(odd_id, "{}")).await?;
    assert_eq!(ticket(&first), Some(1));
    assert_eq!(first, again);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Another invocation runs.
    let other = ask(&client, &subject, call("call_2", "{}")).await?;
    assert_eq!(ticket(&other), Some(2));

    let js = async_nats::jetstream::new(client.clone());
    let bucket = js.get_key_value(RESULTS_BUCKET).await?;
    assert!(bucket.get("take_ticket.CA1.call_2").await?.is_some());

    stop_all(vec![server]).await;
    Ok(())
}

#[tokio::test]
async fn deduplication_can_be_turned_off() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let subjects = Subjects::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let server = replica(&nats, &subjects, ticketing(runs.clone()), false).await?;
    let subject = subjects.tool("take_ticket");
    let first = ask(&client, &subject, call("call_1", "{}")).await?;
    let again = ask(&client, &subject, call("call_1", "{}")).await?;
    assert_eq!((ticket(&first), ticket(&again)), (Some(1), Some(2)));
    stop_all(vec![server]).await;
    Ok(())
}
