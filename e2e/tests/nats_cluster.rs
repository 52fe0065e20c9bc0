//! The whole system on a 3-node NATS cluster with three replicas of every stream and bucket, as
//! k8s/ runs it: a NATS node dies in the middle of a phone call and the call goes on.
//!
//! Each test places the dental demo call (greeting, a tool call, a barge-in, goodbye) and kills
//! one node (SIGKILL) while the greeting plays: the node the call-worker is connected to, or the
//! leader of `VOICE_EVENTS`. The services move to the surviving nodes, JetStream elects new
//! leaders, and the caller must notice no more than a short gap in the greeting; the tool must
//! run once and the record in Postgres must be complete.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallReport, CallerScript, EndedBy, Segment};
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, AUTH_TOKEN, System, get_session};
use switchboard_proto::permissions::{Role, TOOL_WORKER};
use switchboard_proto::subject::CALLS_BUCKET;
use switchboard_proto::{EVENTS_STREAM, TOOL_RESULTS_BUCKET, TOOLS_BUCKET};
use switchboard_testkit::{eventually, workspace_root};
use tokio::time::Instant;

/// The longest silence a node loss may put into what the caller hears. The caller's script ends
/// its listening after 800 ms of silence, so a longer gap would also break the conversation.
const MAX_GAP: Duration = Duration::from_millis(800);

/// Which node a test kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The node the call-worker (which speaks, calls the tool and writes the call's events) is
    /// connected to.
    CallWorkersNode,
    /// The node leading `VOICE_EVENTS`, where every event of the call is written.
    EventsLeader,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_when_the_call_workers_nats_node_dies() -> anyhow::Result<()> {
    call_survives(Victim::CallWorkersNode).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_when_the_leader_of_the_events_stream_dies() -> anyhow::Result<()> {
    call_survives(Victim::EventsLeader).await
}

async fn call_survives(victim: Victim) -> anyhow::Result<()> {
    let mut system = System::start_on_cluster(3, &[("NATS_REPLICAS", "3".to_owned())]).await?;
    let cluster = system.cluster().context("a cluster")?;
    // Every stream and bucket of the system has three replicas (each read as its user).
    for (role, stream) in [
        (Role::Persister, EVENTS_STREAM.to_owned()),
        (Role::Gateway, format!("KV_{CALLS_BUCKET}")),
        (Role::CallWorker, format!("KV_{TOOLS_BUCKET}")),
        (TOOL_WORKER, format!("KV_{TOOL_RESULTS_BUCKET}")),
    ] {
        let js = async_nats::jetstream::new(system.connect_as(&role).await?);
        let info = js.get_stream(&stream).await?.cached_info().clone();
        ensure!(info.config.num_replicas == 3, "{stream}: {:?}", info.config);
    }

    let call_sid = format!(
        "CA{:032x}",
        u128::from(std::process::id()) << 64 | victim as u128
    );
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    cfg.call_sid = Some(call_sid.clone());
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;
    let placed = Instant::now();
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    // The call is live once its first events are in the record; the greeting is playing.
    let client = reqwest::Client::new();
    let url = format!("{}/api/sessions/{call_sid}", system.persister);
    eventually(Duration::from_secs(20), "the call's record", || {
        let req = client.get(&url).bearer_auth(ADMIN_TOKEN).send();
        async move { req.await.ok()?.error_for_status().ok().map(|_| ()) }
    })
    .await
    .with_context(|| system.logs())?;
    // Into the greeting's middle (it lasts about 3.8 s), while its audio is being produced: the
    // model's audio arrives paced in real time, so a stall shows as silence.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let node = match victim {
        Victim::CallWorkersNode => cluster.node_serving("call-worker").await,
        Victim::EventsLeader => cluster.stream_leader(EVENTS_STREAM).await.ok(),
    }
    .context("the node to kill")?;
    let gateway_node = cluster.node_serving("gateway").await;
    let worker_node = cluster.node_serving("call-worker").await;
    let killed_at = placed.elapsed();
    system.kill_nats_node(node).await;
    eprintln!(
        "{victim:?}: killed nats-{node} at {} ms after the call was placed (gateway on {:?}, \
         call-worker on {:?})",
        killed_at.as_millis(),
        gateway_node,
        worker_node
    );

    let report = call
        .await?
        .map_err(anyhow::Error::from)
        .with_context(|| system.logs())?;
    let context = || format!("{report:#?}\n{}", system.logs());
    ensure!(report.connected, "{}", context());
    ensure!(report.ended_by == EndedBy::Caller, "{}", context());
    ensure!(report.step_errors.is_empty(), "{}", context());
    ensure!(report.protocol_errors.is_empty(), "{}", context());
    ensure!(report.clears == 1, "one barge-in, no more: {}", context());

    // What the node loss cost the caller: the silences inside the greeting.
    let gaps = greeting_gaps(&report);
    let worst = gaps.iter().copied().max().unwrap_or_default();
    eprintln!(
        "{victim:?}: greeting gaps {gaps:?} ms (worst {worst} ms); heard segments {:?}",
        report.heard_segments
    );
    ensure!(
        Duration::from_millis(worst) < MAX_GAP,
        "the caller heard {worst} ms of silence: {}",
        context()
    );

    // How long each service that lost its server was without NATS (from its own log).
    let outages = reconnect_times(&system);
    eprintln!("{victim:?}: NATS reconnects (service, ms): {outages:?}");
    ensure!(
        outages.iter().any(|(service, _)| *service == "call-worker") == (worker_node == Some(node)),
        "the call-worker reconnects exactly when its server died: {outages:?}\n{}",
        system
            .service_log("call-worker")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("nats"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The record is complete and the tool ran once.
    let session = get_session(&system.persister, &report.call_sid)
        .await
        .with_context(context)?;
    check_record(&session).with_context(|| format!("{session:#}\n{}", context()))?;
    // A request sent again (a retry while NATS moved) is answered from the stored result, and
    // counted as a duplicate; the handler runs for the others.
    let (runs, metrics) = system.tool_runs("lookup_customer").await?;
    ensure!(runs == 1.0, "lookup_customer ran {runs} times\n{metrics}");

    let nats_log = system.nats_log();
    ensure!(
        !nats_log.contains("Violation"),
        "a service lacks a NATS grant:\n{nats_log}"
    );
    Ok(())
}

/// The silences (ms) between the stretches of the greeting: the leading stretches of audio
/// before the caller's first turn, which begins after at least 800 ms of silence (the script's
/// `silence_ms`) plus the caller's 1.8 s question.
fn greeting_gaps(report: &CallReport) -> Vec<u64> {
    let turn_gap = 2_000;
    report
        .heard_segments
        .windows(2)
        .map(|pair: &[Segment]| pair[1].start_ms.saturating_sub(pair[0].end_ms))
        .take_while(|gap| *gap < turn_gap)
        .collect()
}

/// For each service whose log shows a lost NATS connection: its name and the milliseconds from
/// `nats disconnected` to the next `nats connected`, by the log lines' timestamps.
fn reconnect_times(system: &System) -> Vec<(&'static str, u64)> {
    // `2026-12-06T05:38:53.344754Z  WARN ...` (maybe in terminal colours): the time of day, in ms.
    let at_ms = |line: &str| -> Option<f64> {
        let mut plain = String::with_capacity(line.len());
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (false, c) => plain.push(c),
                (true, 'm') => in_escape = false,
                (true, _) => {}
            }
        }
        let time = plain.split_whitespace().next()?.split('T').nth(1)?;
        let mut parts = time.trim_end_matches('Z').split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        let seconds = h.parse::<f64>().ok()? * 3600.0
            + m.parse::<f64>().ok()? * 60.0
            + s.parse::<f64>().ok()?;
        Some(seconds * 1000.0)
    };
    let mut found = Vec::new();
    for service in [
        "gateway",
        "call-worker",
        "tool-worker",
        "persister",
        "notifier",
    ] {
        let Some(log) = system.service_log(service) else {
            continue;
        };
        let mut lines = log.lines();
        let Some(lost) = lines.by_ref().find(|l| l.contains("nats disconnected")) else {
            continue;
        };
        let back = lines.find(|l| l.contains("nats connected"));
        if let (Some(lost), Some(back)) = (at_ms(lost), back.and_then(at_ms)) {
            found.push((service, (back - lost).max(0.0) as u64));
        }
    }
    found
}

/// The dental call's record: both sides of the conversation in order, the interruption, the
/// tool call with its output, the end reason.
fn check_record(session: &Value) -> anyhow::Result<()> {
    ensure!(session["end_reason"] == "caller_hung_up");
    let lines: Vec<(&str, &str, bool)> = session["transcript"]
        .as_array()
        .context("transcript")?
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default(),
                t["text"].as_str().unwrap_or_default(),
                t["interrupted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("assistant", "Thanks for calling Acme Dental", false),
        ("user", "Can you look up my account?", false),
        ("assistant", "I found your account, Maria Garcia.", true),
        ("user", "never mind", false),
        ("assistant", "Yes, we are open on Saturdays", false),
        ("user", "Great, thank you. Bye!", false),
        ("assistant", "have a great day", false),
    ];
    ensure!(lines.len() == expected.len(), "transcript {lines:#?}");
    for (line, want) in lines.iter().zip(expected) {
        ensure!(
            line.0 == want.0 && line.1.contains(want.1) && line.2 == want.2,
            "transcript line {line:?} should be {want:?}"
        );
    }
    let tools = session["tools"].as_array().context("tools")?;
    ensure!(tools.len() == 1, "one tool call: {tools:#?}");
    ensure!(tools[0]["name"] == "lookup_customer");
    ensure!(tools[0]["output"]["name"] == "Maria Garcia", "{tools:#?}");
    ensure!(tools[0]["error"].is_null(), "{tools:#?}");
    Ok(())
}
