//! What a caller hears when the call-worker serving the call dies: the whole system as real
//! processes with three call-workers; each round places a call, kills its owner (kill -9) when
//! the caller has asked its question and waits for the answer (the model's tool call has been
//! written ahead), and measures the silence the caller hears from the kill to the first audio of
//! the new owner (callsim's heard segments: the first that starts after the new owner's claim). The killed worker is started again before the next
//! round.
//!
//! `cargo build --bins -p gateway -p call-worker -p persister -p realtime-sim -p tool-workers -p notifier`
//! then `cargo run -p switchboard-e2e --example takeover_bench -- [rounds, default 50]`.

use std::time::Duration;

use anyhow::Context as _;
use callsim::{CallConfig, CallerScript};
use futures::StreamExt as _;
use switchboard_e2e::{AUTH_TOKEN, System};
use switchboard_proto::permissions::Role;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _, call_event};

/// The greeting, a question, and time to hear the answer (the owner dies before it).
const SCRIPT: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
say_ms = 1800

[[step]]
pause_ms = 8000

[[step]]
hangup = true
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(50);
    let mut system = System::start_with_workers(3, &[]).await?;
    let nats = system.connect_as(&Role::Persister).await?;
    let mut gaps = Vec::new();
    let mut failed = 0;
    for round in 0..rounds {
        let sid = format!("CA{:032x}", 0xbe7c_0000_u128 + u128::from(round));
        let mut events = nats
            .subscribe(Subjects::default().call_events(&sid))
            .await?;
        nats.flush().await?;
        let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
        cfg.call_sid = Some(sid.clone());
        cfg.from = "+15550001234".into();
        cfg.to = "+15550001111".into();
        let script = CallerScript::from_toml_str(SCRIPT)?;
        let began = tokio::time::Instant::now();
        let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

        let mut owner = None;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .context("no events")?
        {
            match CallEvent::decode(msg.payload)?.body {
                Some(call_event::Body::Owner(o)) if owner.is_none() => owner = Some(o.worker_id),
                // The caller's question was heard and the model looks the caller up: the
                // caller is waiting for the answer.
                Some(call_event::Body::Dispatched(_)) => break,
                _ => {}
            }
        }
        let owner = owner.context("no owner")?;
        system.signal_worker(&owner, "KILL").await?;
        let killed_ms = began.elapsed().as_millis() as u64;
        // The new owner's claim: audio that starts after it is the new owner's (the dead
        // owner's last audio, if any, was under way before).
        let mut claimed_ms = None;
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), events.next()).await
        {
            if let Some(call_event::Body::Owner(o)) = CallEvent::decode(msg.payload)?.body
                && o.worker_id != owner
            {
                claimed_ms = Some(began.elapsed().as_millis() as u64);
                break;
            }
        }
        let report = call.await??;
        match claimed_ms
            .and_then(|claimed| report.heard_segments.iter().find(|s| s.start_ms > claimed))
            .map(|s| s.start_ms - killed_ms)
        {
            Some(gap) => gaps.push(gap),
            None => failed += 1,
        }
        system.restart_worker(&owner).await?;
        eprintln!("round {round}: gap {:?} ms", gaps.last());
    }
    gaps.sort_unstable();
    let pct = |p: f64| gaps[((gaps.len() as f64 - 1.0) * p).round() as usize];
    anyhow::ensure!(!gaps.is_empty(), "no round heard the new owner");
    println!(
        "kills {rounds}, heard again {}, p50 {} ms, p99 {} ms, max {} ms",
        gaps.len(),
        pct(0.5),
        pct(0.99),
        gaps[gaps.len() - 1]
    );
    if failed > 0 {
        println!("{failed} calls never heard the agent again");
    }
    Ok(())
}
