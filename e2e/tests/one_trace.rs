//! One call is one trace: with every service exporting to an in-process OTLP collector, a call
//! that uses a tool yields spans from gateway, call-worker, tool-worker and persister that share
//! one trace id and form one tree rooted at the gateway's `webhook` span. The context crosses
//! process boundaries only through NATS headers and the TwiML stream parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript};
use switchboard_e2e::{AUTH_TOKEN, System, get_session};
use switchboard_testkit::otlp::{Collector, ExportedSpan};
use switchboard_testkit::workspace_root;

/// (service, span name) pairs the call's trace must contain.
const EXPECTED: [(&str, &str); 9] = [
    ("gateway", "webhook"),
    ("gateway", "offer"),
    ("gateway", "stream"),
    ("call-worker", "call"),
    ("call-worker", "realtime.connect"),
    ("call-worker", "turn"),
    ("call-worker", "tool"),
    ("tool-worker", "tool.handle"),
    ("persister", "persist"),
];

/// The trace of `call_sid`: the id of its gateway `webhook` span.
fn trace_of<'a>(spans: &'a [ExportedSpan], call_sid: &str) -> Option<&'a str> {
    spans
        .iter()
        .find(|s| {
            s.service == "gateway" && s.name == "webhook" && s.attr("call_sid") == Some(call_sid)
        })
        .map(|s| s.trace_id.as_str())
}

fn names_in(spans: &[ExportedSpan], trace_id: &str) -> BTreeSet<(String, String)> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| (s.service.clone(), s.name.clone()))
        .collect()
}

fn complete(spans: &[ExportedSpan], call_sid: &str) -> bool {
    let Some(trace_id) = trace_of(spans, call_sid) else {
        return false;
    };
    let names = names_in(spans, trace_id);
    EXPECTED
        .iter()
        .all(|(service, name)| names.contains(&((*service).to_owned(), (*name).to_owned())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_trace_across_the_four_services() -> anyhow::Result<()> {
    let mut collector = Collector::start().await?;
    let system = System::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        // Export within a fraction of a second instead of the default 5 s batches.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ])
    .await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;
    let report = callsim::place_call(&cfg, &script)
        .await
        .with_context(|| system.logs())?;
    ensure!(
        report.connected,
        "stream never connected: {}",
        system.logs()
    );
    let call_sid = report.call_sid.clone();
    // The record is complete, so the persister has written (and traced) the last event.
    get_session(&system.persister, &call_sid)
        .await
        .with_context(|| system.logs())?;

    let spans = collector
        .wait_for(Duration::from_secs(30), |spans| complete(spans, &call_sid))
        .await
        .with_context(|| format!("the call's trace is incomplete\n{}", system.logs()))?;
    let trace_id = trace_of(&spans, &call_sid).context("webhook span")?;
    let trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();

    // One tree: a single root (the webhook), and every other span's parent is in the trace.
    let ids: BTreeMap<&str, &ExportedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let roots: Vec<&&ExportedSpan> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    ensure!(
        roots.len() == 1 && roots[0].name == "webhook",
        "one root, the webhook: {roots:#?}"
    );
    for span in &trace {
        ensure!(
            span.parent_span_id.is_empty() || ids.contains_key(span.parent_span_id.as_str()),
            "span {}/{} has a parent outside the trace: {trace:#?}",
            span.service,
            span.name
        );
    }

    // Where the context crossed a process boundary, the parent is the span that sent it.
    let parent_of = |service: &str, name: &str| -> anyhow::Result<(String, String)> {
        let span = trace
            .iter()
            .find(|s| s.service == service && s.name == name)
            .with_context(|| format!("{service}/{name}"))?;
        let parent = ids
            .get(span.parent_span_id.as_str())
            .with_context(|| format!("parent of {service}/{name}"))?;
        Ok((parent.service.clone(), parent.name.clone()))
    };
    ensure!(parent_of("call-worker", "call")? == ("gateway".into(), "offer".into()));
    ensure!(parent_of("tool-worker", "tool.handle")? == ("call-worker".into(), "tool".into()));
    ensure!(parent_of("gateway", "stream")? == ("gateway".into(), "webhook".into()));

    let tool = trace
        .iter()
        .find(|s| s.name == "tool.handle")
        .context("tool.handle")?;
    ensure!(tool.attr("tool") == Some("lookup_customer"), "{tool:#?}");
    ensure!(
        trace
            .iter()
            .any(|s| s.name == "turn" && s.attr("kind") == Some("greeting")),
        "a greeting turn span: {trace:#?}"
    );

    // Spans of other traces never claim this call.
    let strays: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id != trace_id && s.attr("call_sid") == Some(call_sid.as_str()))
        .filter(|s| s.name != "persist.batch")
        .collect();
    ensure!(
        strays.is_empty(),
        "spans of the call outside its trace: {strays:#?}"
    );
    Ok(())
}
