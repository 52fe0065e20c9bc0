//! Gateway failover: two gateways behind one public URL, a call in progress through the first,
//! `kill -9` of that gateway. Twilio (callsim) reports the failed stream to the stream status
//! callback and requests the `<Connect>` action URL, which the surviving gateway answers with a
//! new stream of the same call; the same worker goes on with the same conversation, and the
//! record is one call.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript, EndedBy};
use futures::StreamExt as _;
use switchboard_e2e::{AUTH_TOKEN, System, get_session};
use switchboard_proto::permissions::Role;
use switchboard_proto::{CallEvent, Message as _, call_event};
use switchboard_testkit::otlp::{Collector, ExportedSpan};
use switchboard_testkit::workspace_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_the_kill_of_its_gateway() -> anyhow::Result<()> {
    // Every service exports its spans: the call stays one trace across the re-attach.
    let mut collector = Collector::start().await?;
    let mut system = System::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ])
    .await?;
    let second = system.start_gateway("gateway-b").await?;

    // The call's events as they happen (the persister's live view may follow them).
    let events = system.connect_as(&Role::Persister).await?;
    let mut transcripts = events.subscribe("voice.events.*.transcript").await?;
    events.flush().await?;

    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.failover = vec![second.clone()];
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    // The greeting has been said through the first gateway: kill it.
    let greeting = tokio::time::timeout(Duration::from_secs(30), transcripts.next())
        .await
        .context("no transcript within 30 s")?
        .context("transcript subscription ended")?;
    let greeting = CallEvent::decode(greeting.payload)?;
    let Some(call_event::Body::Transcript(line)) = &greeting.body else {
        anyhow::bail!("not a transcript: {greeting:?}");
    };
    ensure!(
        line.text.contains("Thanks for calling Acme Dental"),
        "{line:?}"
    );
    system.kill_gateway()?;

    let report = call.await?.with_context(|| system.logs())?;
    let context = || format!("{report:#?}\n{}", system.logs());

    // The caller's side: one call, two streams, the second opened through the action URL on
    // the surviving gateway, and the script played to its end.
    ensure!(report.connected, "{}", context());
    ensure!(report.ended_by == EndedBy::Caller, "{}", context());
    ensure!(report.step_errors.is_empty(), "{}", context());
    ensure!(report.stream_sids.len() == 2, "{}", context());
    ensure!(report.reattached == 1, "{}", context());
    ensure!(report.connect_actions == 1, "{}", context());
    // The only thing Twilio would flag: the killed gateway's socket closed without a close
    // frame.
    ensure!(
        report
            .protocol_errors
            .iter()
            .all(|e| e.starts_with("31924")),
        "{}",
        context()
    );
    // Answers were heard after the re-attach: greeting, then the answers to both questions.
    ensure!(report.response_latencies_ms.len() >= 2, "{}", context());

    // The surviving gateway answered the action request and got the stream status callbacks:
    // the first stream's failure, the second stream's start and stop.
    let metrics_url = format!("{second}/metrics");
    let wanted = [
        "gateway_reattaches_total{via=\"action\"} 1",
        "gateway_stream_status_total{event=\"stream-error\"} 1",
        "gateway_stream_status_total{event=\"stream-started\"} 1",
        "gateway_stream_status_total{event=\"stream-stopped\"} 1",
    ];
    switchboard_testkit::eventually(
        Duration::from_secs(10),
        "the surviving gateway's re-attach metrics",
        || {
            let url = metrics_url.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                wanted.iter().all(|w| text.contains(w)).then_some(())
            }
        },
    )
    .await
    .with_context(context)?;

    // The record: one call, answered by one worker, with the whole conversation.
    let session = get_session(&system.persister, &report.call_sid)
        .await
        .with_context(context)?;
    let ctx = || format!("{session:#}\n{}", context());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    let transcript = session["transcript"].as_array().context("transcript")?;
    let lines: Vec<(&str, &str)> = transcript
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default(),
                t["text"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("assistant", "Thanks for calling Acme Dental"),
        ("user", "Can you look up my account?"),
        ("assistant", "I found your account, Maria Garcia."),
        ("user", "never mind"),
        ("assistant", "No problem. Yes, we are open on Saturdays"),
        ("user", "Great, thank you. Bye!"),
        ("assistant", "have a great day"),
    ];
    ensure!(
        lines.len() == expected.len()
            && lines
                .iter()
                .zip(expected.iter())
                .all(|((role, text), (want_role, want_text))| role == want_role
                    && text.contains(want_text)),
        "transcript {lines:#?}\n{}",
        ctx()
    );
    let tools = session["tools"].as_array().context("tools")?;
    ensure!(tools.len() == 1, "{}", ctx());

    // One trace: the stream the surviving gateway opened (Twilio's action request carries no
    // trace context) is in the trace the first gateway's webhook began, through the call's
    // owner claim. (The first stream's span died unexported with its gateway.)
    let call_sid = report.call_sid.as_str();
    let in_call = |s: &ExportedSpan| s.attr("call_sid") == Some(call_sid);
    let spans = collector
        .wait_for(Duration::from_secs(30), |spans| {
            spans
                .iter()
                .filter(|s| s.name == "stream" && in_call(s))
                .count()
                >= 1
                && spans.iter().any(|s| s.name == "webhook" && in_call(s))
        })
        .await
        .with_context(ctx)?;
    let trace_id = spans
        .iter()
        .find(|s| s.name == "webhook" && in_call(s))
        .map(|s| s.trace_id.clone())
        .context("webhook span")?;
    let streams: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.name == "stream" && in_call(s))
        .collect();
    ensure!(
        streams.iter().all(|s| s.trace_id == trace_id),
        "each stream of the call is in the call's trace {trace_id}: {streams:#?}"
    );
    Ok(())
}
