//! `tool-bench`: what the tool path adds to a tool call, at a given concurrency.
//!
//! Serves a tool whose handler does nothing but (optionally) wait a known time, and measures it
//! from many concurrent callers doing NATS requests, as call-workers do. The handler reports how
//! long it actually ran, so each sample is the round trip minus the handler time: the cost of the
//! envelope, NATS, the queue group, validation, task spawning and (with `--idempotent`) the
//! results bucket. Prints p50/p90/p99/max in microseconds.
//!
//! Without `--nats-url` it starts its own nats-server (the testkit's). See
//! docs/benchmarks.md for the method.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{Message as _, ToolCall, ToolResult, tool_result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tool_workers::{Tool, ToolContext, ToolServer};

#[derive(Debug, Parser)]
#[command(name = "tool-bench", about = "Measures the latency the tool path adds")]
struct Args {
    /// NATS server to use; without it a local nats-server is started.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Measured requests in total (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Warm-up requests, not measured.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// How long the handler waits before answering, in milliseconds (0: answers at once).
    #[arg(long, default_value_t = 0)]
    handler_ms: u64,
    /// Deduplicate redeliveries through the results bucket (two KV round trips per call).
    #[arg(long)]
    idempotent: bool,
    /// Serve the subject with a bare NATS responder instead of the SDK (same envelope, no
    /// validation, no tasks): the floor that NATS and this machine set, to compare against.
    #[arg(long, conflicts_with = "idempotent")]
    bare: bool,
    /// Serve nothing: drive whatever already serves `bench_noop` at `--nats-url` (a tool written
    /// with another SDK, e.g. sdks/python/bench/bench_noop.py), which must answer with
    /// `{"handler_us": ...}` after waiting `--handler-ms`.
    #[arg(long, conflicts_with_all = ["idempotent", "bare"], requires = "nats_url")]
    external: bool,
}

const TOOL: &str = "bench_noop";

fn noop_tool(handler_ms: u64) -> anyhow::Result<Tool> {
    let schema = json!({"type": "object", "properties": {"seq": {"type": "integer"}}});
    Ok(Tool::new(
        TOOL,
        "Does nothing, for benchmarks.",
        schema,
        move |_ctx: ToolContext, _args: Value| async move {
            let started = Instant::now();
            if handler_ms > 0 {
                tokio::time::sleep(Duration::from_millis(handler_ms)).await;
            }
            let handler_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            Ok(json!({ "handler_us": handler_us }))
        },
    )?)
}

/// The baseline: answers each request from the subscription loop (after `handler_ms`, without
/// blocking the loop), in the same envelope as the SDK, with nothing else in between.
async fn bare_responder(client: async_nats::Client, subject: String, handler_ms: u64) {
    use futures::StreamExt as _;
    let Ok(mut sub) = client.queue_subscribe(subject, "bench".into()).await else {
        eprintln!("tool-bench: subscribing the bare responder failed");
        return;
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply else { continue };
        let client = client.clone();
        let answer = async move {
            let started = Instant::now();
            if handler_ms > 0 {
                tokio::time::sleep(Duration::from_millis(handler_ms)).await;
            }
            let handler_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let result = ToolResult {
                result: Some(tool_result::Result::Output(
                    json!({ "handler_us": handler_us }).to_string(),
                )),
                ..Default::default()
            };
            let _ = client.publish(reply, result.encode_to_vec().into()).await;
        };
        if handler_ms > 0 {
            tokio::spawn(answer);
        } else {
            answer.await;
        }
    }
}

/// One request; returns the round trip minus the handler's own time, in microseconds.
async fn one(client: &async_nats::Client, subject: &str, seq: usize) -> anyhow::Result<u64> {
    let request = ToolCall {
        call_sid: "CAbench".into(),
        call_id: format!("call_{seq}"),
        name: TOOL.into(),
        arguments: json!({ "seq": seq }).to_string(),
        timeout_ms: 5000,
        ..Default::default()
    };
    let started = Instant::now();
    let reply = client
        .request(subject.to_owned(), request.encode_to_vec().into())
        .await?;
    let round_trip = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let result = ToolResult::decode(reply.payload)?;
    let Some(tool_result::Result::Output(output)) = result.result else {
        anyhow::bail!("the tool failed: {result:?}");
    };
    let handler_us = serde_json::from_str::<Value>(&output)?["handler_us"]
        .as_u64()
        .context("no handler_us in the output")?;
    Ok(round_trip.saturating_sub(handler_us))
}

/// Runs `total` requests from `concurrency` callers. With a handler that waits, caller `i` starts
/// `i / concurrency` of the handler time late: otherwise all callers start together, their
/// handlers' timers fire on the same millisecond tick and every reply of the loop arrives in one
/// burst, which measures the burst's queue rather than the tool path (real calls do not call
/// their tools in lockstep).
async fn run_phase(
    client: &async_nats::Client,
    subject: &str,
    concurrency: usize,
    total: usize,
    offset: usize,
    handler: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let (client, subject, next) = (client.clone(), subject.to_owned(), next.clone());
        let stagger = handler.mul_f64(caller as f64 / concurrency as f64);
        callers.push(tokio::spawn(async move {
            tokio::time::sleep(stagger).await;
            let mut hist = Histogram::<u64>::new(3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(hist);
                }
                hist.record(one(&client, &subject, offset + i).await?)?;
            }
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for caller in callers {
        all.add(caller.await??)?;
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    let _local_nats;
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let server = switchboard_testkit::NatsServer::start().await?;
            let url = server.url().to_owned();
            _local_nats = server;
            url
        }
    };
    let subjects = Subjects::default();
    let stop = CancellationToken::new();
    let server_client = async_nats::connect(&url).await?;
    let serving = if args.external {
        drop(server_client);
        None
    } else if args.bare {
        tokio::spawn(bare_responder(
            server_client,
            subjects.tool(TOOL),
            args.handler_ms,
        ));
        None
    } else {
        Some(
            ToolServer::new()
                .tool(noop_tool(args.handler_ms)?)
                .idempotent(args.idempotent)
                .start(server_client, &subjects, stop.clone())
                .await?,
        )
    };
    // Callers share one connection, as the calls of one call-worker do.
    let client = async_nats::connect(&url).await?;
    let subject = subjects.tool(TOOL);

    let handler = Duration::from_millis(args.handler_ms);
    run_phase(&client, &subject, args.concurrency, args.warmup, 0, handler).await?;
    let started = Instant::now();
    let hist = run_phase(
        &client,
        &subject,
        args.concurrency,
        args.requests,
        args.warmup,
        handler,
    )
    .await?;
    let elapsed = started.elapsed();

    println!(
        "tool-bench: {} requests, {} concurrent, handler {} ms, idempotent {}, {}",
        hist.len(),
        args.concurrency,
        args.handler_ms,
        args.idempotent,
        if args.external {
            "external responder"
        } else if args.bare {
            "bare NATS responder"
        } else {
            "SDK"
        }
    );
    println!(
        "added latency (round trip - handler) us: p50 {} p90 {} p99 {} max {}",
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.90),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    println!(
        "throughput: {:.0} requests/s",
        hist.len() as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
    if let Some(serving) = serving {
        serving.wait().await;
    }
    Ok(())
}
