//! Every service stops within its drain deadline whatever its broker is doing.
//!
//! A call is in progress when the nats-server goes away; then every service gets SIGTERM. Each
//! must exit with status 0 within `DRAIN_SECONDS`, and the call's last events, which could not
//! reach JetStream, must be in the worker's log in full (recoverable), not silently gone.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript};
use switchboard_e2e::{AUTH_TOKEN, System, get_session};
use switchboard_testkit::{eventually, workspace_root};

const DRAIN_SECONDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exits_within_its_drain_deadline_with_nats_gone() -> anyhow::Result<()> {
    let mut system = System::start_with(&[("DRAIN_SECONDS", DRAIN_SECONDS.to_string())]).await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let call_sid = format!("CA{:032x}", 0x5eed_u128);
    cfg.call_sid = Some(call_sid.clone());
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    // The call is live: its `started` event has reached the persister.
    let client = reqwest::Client::new();
    let url = format!("{}/api/sessions/{call_sid}", system.persister);
    eventually(Duration::from_secs(20), "the call's started record", || {
        let req = client
            .get(&url)
            .bearer_auth(switchboard_e2e::ADMIN_TOKEN)
            .send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await
    .with_context(|| system.logs())?;

    system.stop_nats().await;
    let deadline = Duration::from_secs(DRAIN_SECONDS);
    let exits = system
        .terminate_all(deadline + Duration::from_secs(5))
        .await;
    eprintln!("exits: {exits:?}");
    for (name, status, took) in &exits {
        ensure!(
            status.is_some_and(|s| s.success()),
            "{name} exited with {status:?} after {took:?}\n{}",
            system.logs()
        );
        // Scheduling slack for a loaded machine; the services themselves aim at the deadline.
        ensure!(
            *took <= deadline + Duration::from_millis(700),
            "{name} took {took:?} to stop (DRAIN_SECONDS={DRAIN_SECONDS})\n{}",
            system.logs()
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), call).await;

    // The worker ended the call without a broker: its `ended` event is in the log, whole.
    let logs = system.logs();
    let spilled = logs
        .lines()
        .filter(|l| l.contains("call event not published") && l.contains(&call_sid))
        .collect::<Vec<_>>();
    ensure!(
        spilled.iter().any(|l| l.contains("ended")),
        "the call's `ended` event should be spilled to the log with its call_sid:\n{logs}"
    );
    ensure!(
        get_session_is_unreachable(&system).await,
        "the persister should be gone"
    );
    Ok(())
}

async fn get_session_is_unreachable(system: &System) -> bool {
    tokio::time::timeout(
        Duration::from_secs(1),
        get_session(&system.persister, "CA0"),
    )
    .await
    .map_or(true, |r| r.is_err())
}
