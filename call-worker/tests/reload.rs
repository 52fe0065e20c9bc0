//! The agents file is reloaded while the worker runs: new calls use the new agents, a broken
//! file is refused, calls in progress keep the agent they started with.

mod common;

use common::*;
use switchboard_realtime::ClientEvent;
use switchboard_testkit::eventually;

const NIGHT: &str = "[[agent]]\nid = \"night-desk\"\nnumbers = [\"+15550001111\"]\n\
    instructions = \"You are the night line of Acme Dental.\"\nvoice = \"cedar\"\n";

fn instructions_of(e: &ClientEvent) -> Option<String> {
    match e {
        ClientEvent::SessionUpdate { session, .. } => session.instructions.clone(),
        _ => None,
    }
}

#[tokio::test]
async fn a_rewritten_agents_file_routes_new_calls_and_spares_calls_in_progress()
-> anyhow::Result<()> {
    // The first session of the call in progress is dropped on its first response, so its
    // second session shows which agent the call still has.
    let script = "[session]\nspeed = 20.0\n[[response]]\ndrop = true\n";
    let h = Harness::start(script, &agents_toml(None, &[]), |c| c.agents_reload_ms = 50).await?;
    let file = h.dir.path().join("agents.toml");

    let mut gw = h.gateway("CAbefore").await?;
    let reply = h.offer("CAbefore", "+15550001111").await?;
    assert_eq!(reply.agent_id, "front-desk");
    gw.start().await?;

    // A valid rewrite: new offers are routed by it.
    std::fs::write(&file, NIGHT)?;
    let probe = std::sync::atomic::AtomicU32::new(0);
    // Probes answered before the reload was seen open front-desk sessions of their own.
    let early_probes = std::sync::atomic::AtomicUsize::new(0);
    eventually(WAIT, "offers routed to the new agent", || async {
        let n = probe.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Each probe is a new call: a repeated offer would be answered with its first agent.
        let r = h.offer(&format!("CAprobe{n}"), "+15550001111").await.ok()?;
        if r.accepted && r.agent_id == "front-desk" {
            early_probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        (r.agent_id == "night-desk").then_some(())
    })
    .await?;
    let early_probes = early_probes.load(std::sync::atomic::Ordering::Relaxed);

    // An invalid rewrite (an agent without instructions) is refused: the table stays.
    std::fs::write(
        &file,
        "[[agent]]\nid = \"broken\"\nnumbers = [\"+15550001111\"]\nvoice = \"cedar\"\n",
    )?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = h.offer("CAafter", "+15550001111").await?;
    assert!(r.accepted, "{r:?}");
    assert_eq!(r.agent_id, "night-desk");

    // The call that started before the reloads still speaks as its own agent: its replacement
    // session (after the scripted drop) is configured with the original instructions.
    gw.speak(600).await?;
    gw.silence(700).await?;
    let sessions = eventually(WAIT, "the call's second session", || async {
        let all = h.sim.sessions().await;
        let mine: Vec<_> = all
            .into_iter()
            .filter(|s| {
                s.client_events
                    .first()
                    .and_then(instructions_of)
                    .is_some_and(|i| i.contains("front desk"))
            })
            .collect();
        (mine.len() >= 2 + early_probes).then_some(mine)
    })
    .await?;
    assert_eq!(
        sessions.len(),
        2 + early_probes,
        "only the call in progress (and probes answered before the reload) use the old agent"
    );
    Ok(())
}

/// Edits to an `instructions_file` are picked up like edits to the agents file itself.
#[tokio::test]
async fn an_edited_instructions_file_is_reloaded() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir()?;
    let prompt = dir.path().join("desk.md");
    std::fs::write(&prompt, "You are the front desk.")?;
    let file = dir.path().join("agents.toml");
    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions_file = \"desk.md\"\n",
    )?;
    let agents = Arc::new(call_worker::agents::Agents::load(&file)?);
    let stop = tokio_util::sync::CancellationToken::new();
    let rx = call_worker::reload::watch(
        agents,
        Duration::from_millis(20),
        stop.clone(),
        None,
        &tokio_util::task::TaskTracker::new(),
    );

    // Only the instructions change; the agents file is untouched.
    std::fs::write(&prompt, "You are the night line, closed until 8 am.")?;
    eventually(WAIT, "the new instructions", || {
        let rx = rx.clone();
        async move {
            let agents = rx.borrow().clone();
            let desk = agents.by_id("desk")?.clone();
            desk.instructions.contains("night line").then_some(())
        }
    })
    .await?;
    stop.cancel();
    Ok(())
}
