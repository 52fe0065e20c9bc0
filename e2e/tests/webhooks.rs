//! A phone call through the whole system with the notifier running under its production NATS
//! user: the webhook receiver, which verifies every delivery with the official Standard Webhooks
//! library (Python), gets `call.started` and `call.ended`, and the end-of-call report's
//! transcript is the persister's record of the call.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::{WebhookReceiver, place_call};
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, System};
use switchboard_testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_call_webhook_matches_the_persisters_record() -> anyhow::Result<()> {
    let mut receiver = WebhookReceiver::start()?;
    let webhooks = receiver.webhooks_file(&["call.started", "call.ended"]);
    let system = System::start_with_webhooks(&[], &webhooks).await?;

    let session = place_call(&system).await?;
    let sid = session["call_sid"].as_str().context("call_sid")?;

    let mut started = None;
    let mut ended = None;
    while ended.is_none() {
        let (kind, body) = receiver
            .next(Duration::from_secs(30))
            .await
            .with_context(|| system.logs())?;
        match kind.as_str() {
            "call.started" => started = Some(body),
            "call.ended" => ended = Some(body),
            other => anyhow::bail!("unexpected type {other:?}"),
        }
    }
    let started = started.context("call.started before call.ended")?;
    let ended = ended.unwrap_or_default();
    let data = &ended["data"];
    ensure!(started["data"]["call_sid"] == sid, "{started}");
    ensure!(data["call_sid"] == sid, "{data}");
    ensure!(
        data["end_reason"] == session["end_reason"],
        "{data}\n{session}"
    );
    ensure!(data["agent_id"] == session["agent_id"], "{data}\n{session}");
    ensure!(data["tool_calls"][0]["name"] == "lookup_customer", "{data}");

    // The same transcript, line by line, as the persister recorded it.
    let line = |t: &Value| {
        (
            t["role"].as_str().unwrap_or_default().to_owned(),
            t["text"].as_str().unwrap_or_default().to_owned(),
            t["interrupted"].as_bool().unwrap_or_default(),
        )
    };
    let mut webhook: Vec<_> = data["transcript"]
        .as_array()
        .context("transcript")?
        .iter()
        .map(line)
        .collect();
    let mut recorded: Vec<_> = session["transcript"]
        .as_array()
        .context("recorded transcript")?
        .iter()
        .map(line)
        .collect();
    ensure!(recorded.len() == 7, "{session:#}");
    // The persister orders by when speech began; the report keeps the events' order.
    webhook.sort();
    recorded.sort();
    ensure!(webhook == recorded, "{webhook:#?}\nvs\n{recorded:#?}");

    // The delivery log has both, delivered on the first attempt.
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/webhooks/deliveries?state=delivered",
        system.notifier
    );
    let deliveries = eventually(Duration::from_secs(10), "both delivered", || {
        let req = client.get(&url).bearer_auth(ADMIN_TOKEN).send();
        async move {
            let log: Value = req.await.ok()?.error_for_status().ok()?.json().await.ok()?;
            let deliveries = log["deliveries"].as_array()?.clone();
            (deliveries.len() == 2).then_some(deliveries)
        }
    })
    .await?;
    for d in &deliveries {
        ensure!(d["attempts"] == 1, "{d:#}");
    }
    ensure!(
        !system.nats_log().contains("Violation"),
        "permissions violation:\n{}",
        system.nats_log()
    );
    Ok(())
}
