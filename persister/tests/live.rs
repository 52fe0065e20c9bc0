//! `GET /api/live`: call events as Server-Sent Events, and slow clients dropped, not waited for.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use switchboard_proto::Role;
use switchboard_proto::call_event::Body;

const T0: i64 = 1_767_225_600_000;

/// Publishes `ev` until it reaches `resp` (the live subscription is set up asynchronously; core
/// subscribers see every copy, JetStream stores one) and returns it as received.
async fn first_event(
    fx: &Fixture,
    resp: &mut reqwest::Response,
    ev: &switchboard_proto::CallEvent,
) -> anyhow::Result<Value> {
    for _ in 0..100 {
        fx.publish(ev).await?;
        let read = tokio::time::timeout(Duration::from_millis(300), read_events(resp, 1)).await;
        if let Ok(Ok((events, _))) = read
            && let Some(first) = events.into_iter().next()
        {
            return Ok(first);
        }
    }
    anyhow::bail!("no live event arrived")
}

/// Reads SSE `data:` lines from a response until `n` events came or the stream ended.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> anyhow::Result<(Vec<Value>, bool)> {
    read_events_within(resp, n, Duration::from_secs(20)).await
}

async fn read_events_within(
    resp: &mut reqwest::Response,
    n: usize,
    wait: Duration,
) -> anyhow::Result<(Vec<Value>, bool)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let Some(chunk) = tokio::time::timeout(wait, resp.chunk()).await?? else {
            return Ok((out, true));
        };
        buf.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    out.push(serde_json::from_str(data.trim())?);
                }
            }
        }
    }
    Ok((out, false))
}

async fn open_live(fx: &Fixture) -> anyhow::Result<reqwest::Response> {
    let resp = fx.get("/api/live").await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    anyhow::ensure!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "not an event stream"
    );
    Ok(resp)
}

#[tokio::test]
async fn streams_call_events_as_they_happen() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let unauthenticated = fx.http.get(format!("{}/api/live", fx.base)).send().await?;
    assert_eq!(unauthenticated.status(), 401);

    let mut resp = open_live(&fx).await?;
    let sid = "CA00000000000000000000000000000L01";
    let start = event(sid, 1, T0, started("front-desk", "+15550001234"));
    let first = first_event(&fx, &mut resp, &start).await?;
    assert_eq!(first["call_sid"], sid);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "started");
    assert_eq!(first["agent_id"], "front-desk");
    assert_eq!(first["from"], "+15550001234");
    assert_eq!(first["direction"], "inbound");

    let mut line = said(Role::User, "Can you look up my account?", "item_u1", 2300);
    line.heard_ms = 0;
    fx.publish(&event(sid, 2, T0 + 2300, Body::Transcript(line)))
        .await?;
    fx.publish(&event(sid, 3, T0 + 5000, ended("caller_hung_up", 5000)))
        .await?;
    // Skip copies of the first event still in flight.
    let mut next = Vec::new();
    while next.len() < 2 {
        let (events, ended) = read_events(&mut resp, 1).await?;
        anyhow::ensure!(!ended, "live stream ended");
        next.extend(events.into_iter().filter(|e| e["kind"] != "started"));
    }
    assert_eq!(next[0]["kind"], "transcript");
    assert_eq!(next[0]["role"], "user");
    assert_eq!(next[0]["text"], "Can you look up my account?");
    assert_eq!(next[0]["offset_ms"], 2300);
    assert_eq!(next[1]["kind"], "ended");
    assert_eq!(next[1]["reason"], "caller_hung_up");
    assert!(next[1]["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
    fx.stop().await
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_slows_nothing() -> anyhow::Result<()> {
    const EVENTS: u64 = 1500;
    let fx = Fixture::start_with_live_buffer(64).await?;
    let mut stuck = open_live(&fx).await?;
    let mut healthy = open_live(&fx).await?;
    // Both are subscribed once an event reaches the healthy one.
    let warmup = "CA00000000000000000000000000000L02";
    first_event(
        &fx,
        &mut healthy,
        &event(warmup, 1, T0, started("front-desk", "+15550001234")),
    )
    .await?;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < EVENTS as usize {
            let (events, ended) = read_events(&mut healthy, 1).await?;
            anyhow::ensure!(!ended, "the healthy client was disconnected");
            n += events.iter().filter(|e| e["kind"] == "transcript").count();
        }
        Ok(n)
    });

    // 16 KB per event: far more than the socket buffers of a client that never reads.
    let sid = "CA00000000000000000000000000000L03";
    let text = "la ".repeat(16 * 1024 / 3);
    for seq in 1..=EVENTS {
        let line = said(Role::Assistant, &text, &format!("item_{seq}"), 0);
        fx.publish(&event(sid, seq, T0, Body::Transcript(line)))
            .await?;
    }
    // The record is complete regardless of the stuck client.
    fx.wait_events(sid, EVENTS as i64).await?;
    assert_eq!(reader.await??, EVENTS as usize);

    // The stuck client got what fit in its buffers, then the server hung up on it.
    let (events, ended) = read_events(&mut stuck, EVENTS as usize + 1).await?;
    assert!(ended, "the stuck client was not disconnected");
    assert!(
        (events.len() as u64) < EVENTS,
        "the stuck client got all {} events",
        events.len()
    );
    fx.stop().await
}
