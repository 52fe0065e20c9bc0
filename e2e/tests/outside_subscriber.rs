//! The example outside subscriber (TypeScript, examples/crm-sync, code generated from proto/)
//! under the shipped read-only `outside` NATS user: it keeps its CRM table in step with the
//! persister's record of each call, through its own durable consumer, and a call placed while
//! it is stopped is caught up after its restart without loss or double counting.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Subscriber, place_call};
use serde_json::Value;
use switchboard_e2e::System;
use switchboard_testkit::eventually;

/// Waits until the CRM row of the persister's `session` says the call ended, then compares.
async fn check_row(db: &sqlx::PgPool, session: &Value) -> anyhow::Result<()> {
    let sid = session["call_sid"].as_str().context("call_sid")?.to_owned();
    let row: (String, String, Option<String>, i32, i32) = eventually(
        Duration::from_secs(30),
        "the CRM row of the call, ended",
        || {
            let sid = sid.clone();
            async move {
                let row: (String, String, Option<String>, i32, i32) = sqlx::query_as(
                    "SELECT status, end_reason, agent_id, transcript_lines, tool_calls
                     FROM crm_calls WHERE call_sid = $1",
                )
                .bind(&sid)
                .fetch_optional(db)
                .await
                .ok()??;
                (row.0 == "ended").then_some(row)
            }
        },
    )
    .await?;
    let transcript = session["transcript"]
        .as_array()
        .context("transcript")?
        .len() as i32;
    let tools = session["tools"].as_array().map_or(0, Vec::len) as i32;
    ensure!(
        row.1 == session["end_reason"].as_str().unwrap_or_default(),
        "{row:?} {session}"
    );
    ensure!(
        row.2.as_deref() == session["agent_id"].as_str(),
        "{row:?} {session}"
    );
    ensure!(
        row.3 == transcript,
        "transcript lines {row:?} vs {transcript}"
    );
    ensure!(row.4 == tools && tools > 0, "tool calls {row:?} vs {tools}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outside_subscriber_follows_calls_across_its_restart() -> anyhow::Result<()> {
    let system = System::start().await?;
    let database_url = system.create_database("crm").await?;
    let db = sqlx::PgPool::connect(&database_url).await?;

    let subscriber = Subscriber::start(&system, &database_url)?;
    let first = place_call(&system).await?;
    check_row(&db, &first).await?;
    subscriber.stop().await?;

    // A call while the subscriber is down: its durable consumer keeps its place.
    let second = place_call(&system).await?;
    let subscriber = Subscriber::start(&system, &database_url)?;
    check_row(&db, &second).await?;
    // The first call was not counted again.
    check_row(&db, &first).await?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM crm_applied")
        .fetch_one(&db)
        .await?;
    ensure!(applied > 0);
    subscriber.stop().await?;
    ensure!(
        !system.nats_log().contains("Violation"),
        "permissions violation:\n{}",
        system.nats_log()
    );
    Ok(())
}
