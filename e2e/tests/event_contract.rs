//! The event contract, seen by all three of its consumers at once: one phone call through the
//! whole system (every service under its production NATS user), and the persister's record,
//! the end-of-call webhook (verified by the official Standard Webhooks library, Python) and the
//! example outside subscriber (examples/crm-sync, TypeScript, under the shipped read-only
//! `outside` user) agree on it: the same transcript line by line, the same tool calls, the same
//! end reason, outcome and agent. The console lists the webhook's delivery on the call.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Subscriber, WebhookReceiver, place_call};
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, System};
use switchboard_testkit::eventually;

/// A transcript line as all three consumers can tell it: who, and what.
type Line = (String, String);

fn lines(transcript: &Value) -> anyhow::Result<Vec<Line>> {
    let mut lines: Vec<Line> = transcript
        .as_array()
        .context("a transcript")?
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default().to_owned(),
                t["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // The persister orders by when speech began, the others by the events' order.
    lines.sort();
    Ok(lines)
}

fn tool_names(tools: &Value) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = tools
        .as_array()
        .context("tool calls")?
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persister_a_webhook_receiver_and_an_outside_subscriber_agree_on_a_call()
-> anyhow::Result<()> {
    let mut receiver = WebhookReceiver::start()?;
    let system = System::start_with_webhooks(&[], &receiver.webhooks_file(&["call.ended"])).await?;
    let crm_url = system.create_database("crm").await?;
    let crm = sqlx::PgPool::connect(&crm_url).await?;
    let subscriber = Subscriber::start(&system, &crm_url)?;

    // 1. The persister.
    let session = place_call(&system).await?;
    let sid = session["call_sid"].as_str().context("call_sid")?;
    // 2. The webhook receiver.
    let (kind, report) = receiver
        .next(Duration::from_secs(30))
        .await
        .with_context(|| system.logs())?;
    ensure!(kind == "call.ended", "{kind}: {report}");
    let report = &report["data"];
    ensure!(report["call_sid"] == sid, "{report:#}");
    // 3. The outside subscriber, once its row says the call ended.
    let (end_reason, outcome, agent_id): (String, Option<String>, Option<String>) = eventually(
        Duration::from_secs(30),
        "the CRM row of the call, ended",
        || async {
            let row: (String, Option<String>, Option<String>, Option<String>) = sqlx::query_as(
                "SELECT status, end_reason, outcome, agent_id FROM crm_calls WHERE call_sid = $1",
            )
            .bind(sid)
            .fetch_optional(&crm)
            .await
            .ok()??;
            (row.0 == "ended").then(|| (row.1.unwrap_or_default(), row.2, row.3))
        },
    )
    .await
    .with_context(|| system.logs())?;
    let notes: Vec<(String, String)> =
        sqlx::query_as("SELECT author, text FROM crm_call_notes WHERE call_sid = $1 ORDER BY seq")
            .bind(sid)
            .fetch_all(&crm)
            .await?;
    let mut crm_lines: Vec<Line> = notes
        .iter()
        .filter(|(author, _)| author != "tool")
        .cloned()
        .collect();
    crm_lines.sort();
    let mut crm_tools: Vec<String> = notes
        .iter()
        .filter(|(author, _)| author == "tool")
        .map(|(_, name)| name.clone())
        .collect();
    crm_tools.sort();

    // The same transcript, line by line.
    let recorded = lines(&session["transcript"])?;
    ensure!(recorded.len() == 7, "{session:#}");
    let webhook = lines(&report["transcript"])?;
    ensure!(
        webhook == recorded,
        "webhook {webhook:#?}\npersister {recorded:#?}"
    );
    ensure!(
        crm_lines == recorded,
        "crm {crm_lines:#?}\npersister {recorded:#?}"
    );

    // The same tool calls (the webhook also carries the model's call ids).
    let recorded_tools = tool_names(&session["tools"])?;
    ensure!(recorded_tools == ["lookup_customer"], "{session:#}");
    ensure!(
        tool_names(&report["tool_calls"])? == recorded_tools,
        "{report:#}"
    );
    ensure!(crm_tools == recorded_tools, "{crm_tools:?}");
    ensure!(
        report["tool_calls"][0]["call_id"] == session["tools"][0]["call_id"],
        "{report:#}\n{session:#}"
    );

    // The same end, outcome and agent.
    ensure!(session["end_reason"] == end_reason.as_str(), "{session:#}");
    ensure!(report["end_reason"] == end_reason.as_str(), "{report:#}");
    ensure!(
        session["outcome"].as_str() == outcome.as_deref(),
        "{session:#}"
    );
    ensure!(
        report["outcome"]["outcome"].as_str() == outcome.as_deref(),
        "{report:#}"
    );
    ensure!(
        session["agent_id"].as_str() == agent_id.as_deref(),
        "{session:#}"
    );
    ensure!(
        report["agent_id"].as_str() == agent_id.as_deref(),
        "{report:#}"
    );

    // The console lists the delivery on the call (read from the notifier).
    let client = reqwest::Client::new();
    let url = format!("{}/api/sessions/{sid}/webhooks", system.persister);
    let delivery = eventually(Duration::from_secs(10), "the delivery logged", || {
        let req = client.get(&url).bearer_auth(ADMIN_TOKEN).send();
        async move {
            let log: Value = req.await.ok()?.error_for_status().ok()?.json().await.ok()?;
            let d = log["deliveries"].as_array()?.first()?.clone();
            (d["state"] == "delivered").then_some(d)
        }
    })
    .await?;
    ensure!(delivery["event_type"] == "call.ended", "{delivery:#}");
    ensure!(
        delivery["endpoint_url"] == receiver.url.as_str(),
        "{delivery:#}"
    );
    ensure!(delivery["call_sid"] == sid, "{delivery:#}");

    subscriber.stop().await?;
    ensure!(
        !system.nats_log().contains("Violation"),
        "permissions violation:\n{}",
        system.nats_log()
    );
    Ok(())
}
