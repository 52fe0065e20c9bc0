//! Logging, tracing export and metrics setup for a binary.
//!
//! Logs go to stdout (`RUST_LOG` filters, default `info`; `LOG_FORMAT=json` gives one JSON object
//! per line that carries the fields of the spans it happened in, so every line of a call has its
//! `call_sid`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same spans are also exported over
//! OTLP/gRPC, so one call can be followed across gateway, call-worker, tool-workers and persister
//! (the [`crate::trace`] module carries the context through NATS headers).

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The standard OpenTelemetry variable naming the collector (e.g. `http://otel-collector:4317`).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Why the OTLP pipeline could not be built or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("building the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("shutting the tracer provider down: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// Keeps the span exporter alive. Dropping it (or calling [`TelemetryGuard::shutdown`]) flushes
/// the spans still queued and stops the exporter, so keep it in `main` until the service has
/// drained: `let telemetry = init_logging("gateway");` ... `telemetry.shutdown()`.
///
/// The flush blocks the calling thread while the exporter (which runs on the tokio runtime)
/// sends the last batch: shut down from a multi-threaded runtime, before it is dropped.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops span export at once"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported (an OTLP endpoint was configured and the exporter built).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes queued spans and stops the exporter.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => Ok(provider.shutdown()?),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: span exporter shutdown failed: {error}");
        }
    }
}

/// Installs the log subscriber and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the OTLP span
/// exporter (service name `service`). Also installs the rustls crypto provider every TLS client
/// in the process uses. Call it inside the tokio runtime (the gRPC exporter needs it); if the
/// exporter cannot be built the service still runs, with logs only, and says so on stderr.
///
/// Idempotent in effect: a second call in the same process (tests) leaves the first subscriber
/// in place and returns a guard that exports nothing.
pub fn init_logging(service: &str) -> TelemetryGuard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let endpoint = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty());

    let provider = match endpoint.as_deref().map(|e| tracer_provider(service, e)) {
        Some(Ok(provider)) => Some(provider),
        Some(Err(error)) => {
            eprintln!("telemetry: not exporting spans: {error}");
            None
        }
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()))
    });

    let result = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        // Logs go to stderr: Kubernetes collects both streams, and command-line tools (callsim)
        // keep stdout for their own output, such as a JSON report.
        .with(fmt_layer(json, std::io::stderr))
        .try_init();
    if result.is_err() {
        // Someone else's subscriber is in charge: spans would never reach this exporter.
        return TelemetryGuard::default();
    }
    tracing::debug!(
        service,
        exporting = provider.is_some(),
        "logging initialised"
    );
    TelemetryGuard { provider }
}

/// A tracer provider exporting to the OTLP/gRPC collector at `endpoint` in batches, with the
/// resource `service.name = service` (plus `OTEL_RESOURCE_ATTRIBUTES`). Must be called inside
/// a tokio runtime.
pub fn tracer_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The log line formatter. JSON lines list the spans they happened in with their fields
/// (`"spans":[{"name":"call","call_sid":"CA..."}]`), which is what lets an operator grep one call.
fn fmt_layer<S, W>(json: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        layer.boxed()
    }
}

/// Installs the Prometheus recorder and keeps its histograms trimmed; the handle renders
/// `/metrics`. Returns `None` if a recorder is already installed (e.g. several services in one
/// test process).
pub fn install_metrics() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().ok()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::fmt_layer;

    /// A log sink the test reads back: every write becomes one message.
    #[derive(Clone)]
    struct Sink(mpsc::Sender<Vec<u8>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_enclosing_spans() {
        let (tx, rx) = mpsc::channel();
        let writer = Sink(tx);
        let subscriber =
            tracing_subscriber::registry().with(fmt_layer(true, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("call", call_sid = "CA0123");
            let _call = call.enter();
            let turn = tracing::info_span!("turn", turn = 3);
            let _turn = turn.enter();
            tracing::info!(latency_ms = 412, "response started");
        });
        let text = String::from_utf8(rx.try_iter().flatten().collect()).expect("UTF-8 logs");
        let line = text.lines().last().expect("one log line");
        assert!(line.contains(r#""message":"response started""#), "{line}");
        assert!(line.contains(r#""latency_ms":412"#), "{line}");
        assert!(line.contains(r#""call_sid":"CA0123""#), "{line}");
        assert!(line.contains(r#""turn":3"#), "{line}");
    }
}
