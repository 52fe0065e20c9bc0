//! Spans reach an OTLP/gRPC collector: the testkit's in-process collector (the real OTLP
//! TraceService over tonic) receives what `telemetry::tracer_provider` exports, with the service
//! name, the span names and the parent/child link that came through NATS headers.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use switchboard_service::{telemetry, trace};
use switchboard_testkit::otlp::Collector;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_linked_through_nats_headers_reach_the_collector() -> anyhow::Result<()> {
    let mut collector = Collector::start().await?;
    let provider = telemetry::tracer_provider("gateway", &collector.endpoint())?;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway")));
    let (publisher_trace, headers) = tracing::subscriber::with_default(subscriber, || {
        let publish = tracing::info_span!("offer_call", call_sid = "CA42");
        let _entered = publish.enter();
        let headers = trace::headers();
        let handle = tracing::info_span!(parent: None, "accept_offer");
        trace::set_parent(&handle, &headers);
        drop(handle);
        (
            headers.get("traceparent").map(|v| v.as_str().to_owned()),
            headers,
        )
    });
    assert!(headers.get("traceparent").is_some());

    // Shutting down flushes the batch; it blocks while the exporter talks to the collector.
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await?
        .context("provider shutdown")?;

    let exported = collector
        .wait_for(Duration::from_secs(10), |spans| spans.len() >= 2)
        .await?;
    let find = |name: &str| {
        exported
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .with_context(|| format!("span {name} not exported: {exported:?}"))
    };
    let offer = find("offer_call")?;
    let accept = find("accept_offer")?;
    assert_eq!(offer.service, "gateway", "service.name resource attribute");
    assert_eq!(offer.attr("call_sid"), Some("CA42"));
    assert_eq!(
        accept.trace_id, offer.trace_id,
        "same trace on both sides of NATS"
    );
    assert_eq!(
        accept.parent_span_id, offer.span_id,
        "the handler span's parent"
    );
    assert!(publisher_trace.is_some_and(|t| t.contains(&offer.trace_id)));
    Ok(())
}
