//! Spans reach an OTLP/gRPC collector: an in-process collector (the real OTLP TraceService over
//! tonic) receives what `telemetry::tracer_provider` exports, with the service name, the span
//! names and the parent/child link that came through NATS headers.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use switchboard_service::{telemetry, trace};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

/// A collector that hands every export request to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// (service.name, span name, trace id, parent span id) of every exported span.
fn spans(request: &ExportTraceServiceRequest) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                out.push((
                    service.clone(),
                    span.name.clone(),
                    span.trace_id.clone(),
                    span.parent_span_id.clone(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_linked_through_nats_headers_reach_the_collector() -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)
        .map_err(|e| anyhow::anyhow!("bind: {e}"))?;
    let addr = incoming.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(incoming),
    );

    let provider = telemetry::tracer_provider("gateway", &format!("http://{addr}"))?;
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

    let mut exported = Vec::new();
    while exported.len() < 2 {
        let request = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("collector received nothing")?
            .context("collector gone")?;
        exported.extend(spans(&request));
    }
    server.abort();

    let find = |name: &str| {
        exported
            .iter()
            .find(|s| s.1 == name)
            .cloned()
            .with_context(|| format!("span {name} not exported: {exported:?}"))
    };
    let offer = find("offer_call")?;
    let accept = find("accept_offer")?;
    assert_eq!(offer.0, "gateway", "service.name resource attribute");
    assert_eq!(accept.2, offer.2, "same trace on both sides of NATS");
    assert!(!accept.3.is_empty(), "the handler span has a parent");
    let trace_hex: String = offer.2.iter().map(|b| format!("{b:02x}")).collect();
    assert!(publisher_trace.is_some_and(|t| t.contains(&trace_hex)));
    Ok(())
}
