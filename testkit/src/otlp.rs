//! An in-process OTLP/gRPC trace collector: the real `TraceService` over tonic, so a test can
//! point services (in-process or as processes, via `OTEL_EXPORTER_OTLP_ENDPOINT`) at it and
//! assert the spans they export.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::mpsc;

/// One exported span, flattened for assertions. Ids are lower-case hex; a root span has an
/// empty `parent_span_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The exporting process's `service.name` resource attribute.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Span attributes rendered as strings.
    pub attributes: BTreeMap<String, String>,
}

impl ExportedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running collector; it stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    spans: Vec<ExportedSpan>,
    server: tokio::task::JoinHandle<()>,
}

struct Service(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Service {
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

impl Collector {
    /// Starts a collector on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)
            .map_err(|e| anyhow::anyhow!("binding the OTLP collector: {e}"))?;
        let addr = incoming.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Service(tx)))
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "OTLP collector stopped");
            }
        });
        Ok(Self {
            addr,
            rx,
            spans: Vec::new(),
            server,
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&mut self) -> &[ExportedSpan] {
        while let Ok(request) = self.rx.try_recv() {
            self.spans.extend(flatten(&request));
        }
        &self.spans
    }

    /// Waits until `done` holds for the spans received so far, and returns them; fails after
    /// `timeout` with the spans seen, so a failing test shows what did arrive.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[ExportedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ExportedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(self.spans()) {
                return Ok(self.spans.clone());
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(request)) => self.spans.extend(flatten(&request)),
                Ok(None) => anyhow::bail!("the collector stopped"),
                Err(_) => {
                    return Err(anyhow::anyhow!("{:#?}", self.spans))
                        .context(format!("spans not complete after {timeout:?}"));
                }
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn flatten(request: &ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(render)
            .unwrap_or_default();
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            out.push(ExportedSpan {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            kv.value.as_ref().map(render).unwrap_or_default(),
                        )
                    })
                    .collect(),
            });
        }
    }
    out
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
