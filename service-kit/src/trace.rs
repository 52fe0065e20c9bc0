//! Trace context through NATS headers, so one call is one trace across services.
//!
//! A publisher calls [`inject`] on the headers of a request or event; the receiver calls
//! [`set_parent`] on the span that handles the message (or [`extract`] for the raw context).
//! The wire format is W3C Trace Context (`traceparent`, `tracestate`) whatever propagator the
//! process installed globally: it is part of the contract between services written in any
//! language. Headers survive JetStream storage, so a consumer reading an event hours later still
//! finds the trace of the call that produced it.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes propagation fields into NATS headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Validated conversions: a propagator handing us a name NATS cannot carry must not
        // panic the publisher (the `&str` conversions assert).
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(key), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// Reads propagation fields from NATS headers.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let name = HeaderName::from_str(key).ok()?;
        self.0.get(name).map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Adds the current span's trace context to `headers` (no-op outside a traced span).
pub fn inject(headers: &mut HeaderMap) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Adds `cx`'s trace context to `headers`.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// A new header map carrying the current span's trace context.
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers
}

/// The trace context carried by `headers` (an empty context when there is none or it is
/// malformed: the receiver then starts a new trace). Built on an empty context, not the
/// current one, so a message never inherits whatever span the receiver happens to be in.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(headers))
}

/// Makes `span` a child of the trace carried by `headers`, if any.
pub fn set_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent = extract(headers);
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "trace context not attached to span");
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Runs `f` with a subscriber that gives spans real OpenTelemetry contexts (no exporter).
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn trace_id(span: &tracing::Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    #[test]
    fn round_trip_keeps_the_trace_id() {
        traced(|| {
            let publish = tracing::info_span!("publish");
            let sent = {
                let _entered = publish.enter();
                headers()
            };
            let traceparent = sent.get("traceparent").map(|v| v.as_str().to_owned());
            let sent_trace = trace_id(&publish);
            assert_ne!(sent_trace, TraceId::INVALID);
            assert!(
                traceparent.is_some_and(|t| t.contains(&sent_trace.to_string())),
                "traceparent carries the publisher's trace id"
            );

            let handle = tracing::info_span!("handle");
            set_parent(&handle, &sent);
            assert_eq!(trace_id(&handle), sent_trace);

            let cx = extract(&sent);
            assert_eq!(cx.span().span_context().trace_id(), sent_trace);
            assert!(cx.span().span_context().is_remote());
        });
    }

    #[test]
    fn no_or_malformed_context_starts_a_new_trace() {
        traced(|| {
            let other = tracing::info_span!("other");
            let _other = other.enter();

            let empty = HeaderMap::new();
            assert!(!extract(&empty).span().span_context().is_valid());

            let mut garbage = HeaderMap::new();
            garbage.insert("traceparent", "00-not-a-trace-01");
            assert!(!extract(&garbage).span().span_context().is_valid());

            let handle = tracing::info_span!(parent: None, "handle");
            set_parent(&handle, &garbage);
            let id = trace_id(&handle);
            assert_ne!(id, TraceId::INVALID);
            assert_ne!(
                id,
                trace_id(&other),
                "a fresh root trace, not the current span's"
            );
        });
    }

    #[test]
    fn injecting_outside_a_span_adds_nothing() {
        let headers = headers();
        assert!(headers.get("traceparent").is_none());
    }
}
