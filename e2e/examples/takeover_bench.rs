//! What a caller hears when the call-worker serving the call dies, is cut off, or drains: the
//! whole system as real processes with three call-workers; each round places a call and, once
//! the caller has asked its question and the model's tool call has been written ahead (the
//! caller waits for the answer), does one of:
//!
//! - `kill` (default): `kill -9` of the owner. The figure is the silence from the kill to the
//!   first audio of the new owner.
//! - `stop`: SIGSTOP of the owner (a partition: its sockets stay open). The figure is the
//!   silence from the pause to the first audio of the new owner; the paused worker gets
//!   SIGCONT after the round, and must not speak again.
//! - `term`: SIGTERM of the owner, with `DRAIN_SECONDS=2`: it answers, then hands the call over
//!   while its answer plays. The figure is the hand-over gap: the silence between the last audio
//!   the caller heard from the old owner and the first from the new one.
//!
//! The new owner's audio is the first of callsim's heard segments that starts after the new
//! owner's `owner` claim. A killed or drained worker is started again before the next round.
//!
//! `cargo build --bins -p gateway -p call-worker -p persister -p realtime-sim -p tool-workers -p notifier`
//! then `cargo run -q -p switchboard-e2e --example takeover_bench -- [rounds, default 50]
//! [kill|stop|term] [realtime-sim connect delay in ms, default 0]`.

use std::time::Duration;

use anyhow::Context as _;
use callsim::{CallConfig, CallReport, CallerScript};
use futures::StreamExt as _;
use switchboard_e2e::{AUTH_TOKEN, SimSettings, System};
use switchboard_proto::permissions::Role;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _, call_event};

/// The greeting, a question, and time to hear the answer (the owner goes before it).
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

/// What happens to the owner of each round's call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Stop,
    Term,
}

impl Fault {
    fn signal(self) -> &'static str {
        match self {
            Fault::Kill => "KILL",
            Fault::Stop => "STOP",
            Fault::Term => "TERM",
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(50);
    let fault = match args.next().as_deref() {
        None | Some("kill") => Fault::Kill,
        Some("stop") => Fault::Stop,
        Some("term") => Fault::Term,
        Some(other) => anyhow::bail!("unknown fault {other}: kill, stop or term"),
    };
    let connect_delay =
        Duration::from_millis(args.next().map(|n| n.parse()).transpose()?.unwrap_or(0));
    let extra = match fault {
        Fault::Term => vec![("DRAIN_SECONDS", "2".to_owned())],
        _ => Vec::new(),
    };
    let mut system =
        System::start_with_workers_and_sim(3, &extra, &SimSettings { connect_delay }).await?;
    let nats = system.connect_as(&Role::Persister).await?;
    let mut gaps = Vec::new();
    let mut failed = Vec::new();
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
        system.signal_worker(&owner, fault.signal()).await?;
        let fault_ms = began.elapsed().as_millis() as u64;
        // The new owner's claim: audio that starts after it is the new owner's (the old
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
        if fault == Fault::Stop {
            system.signal_worker(&owner, "CONT").await?;
        }
        let report = call.await??;
        match claimed_ms.and_then(|claimed| gap(&report, fault, fault_ms, claimed)) {
            Some(gap) => gaps.push(gap),
            None => failed.push((sid.clone(), report)),
        }
        match fault {
            Fault::Kill | Fault::Term => system.restart_worker(&owner).await?,
            // The woken worker learnt it lost the call and serves others again.
            Fault::Stop => {}
        }
        eprintln!("round {round}: gap {:?} ms", gaps.last());
    }
    gaps.sort_unstable();
    anyhow::ensure!(!gaps.is_empty(), "no round heard the new owner");
    let pct = |p: f64| gaps[((gaps.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{fault:?} x {rounds} (realtime-sim connect delay {} ms): heard again {}, min {} ms, \
         p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        connect_delay.as_millis(),
        gaps.len(),
        gaps[0],
        pct(0.5),
        pct(0.9),
        pct(0.99),
        gaps[gaps.len() - 1]
    );
    for (sid, report) in &failed {
        println!("{sid} never heard the new owner: {report:?}");
    }
    Ok(())
}

/// The silence the round measures, if the caller heard the new owner.
fn gap(report: &CallReport, fault: Fault, fault_ms: u64, claimed_ms: u64) -> Option<u64> {
    let new = report
        .heard_segments
        .iter()
        .find(|s| s.start_ms > claimed_ms)?;
    Some(match fault {
        Fault::Kill | Fault::Stop => new.start_ms.saturating_sub(fault_ms),
        // From the end of the old owner's last audio (or the signal, if it had gone quiet).
        Fault::Term => {
            let last_old = report
                .heard_segments
                .iter()
                .filter(|s| s.start_ms <= claimed_ms)
                .map(|s| s.end_ms)
                .max()
                .unwrap_or(fault_ms);
            new.start_ms.saturating_sub(last_old.max(fault_ms))
        }
    })
}
