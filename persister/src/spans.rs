//! The tracing spans of a batch: `persist.batch` for the batch, and one `persist` span per call
//! in it, continuing that call's trace.
//!
//! A batch mixes events of many calls, each published inside its own call's trace (W3C trace
//! context in the JetStream message headers), so the batch itself belongs to no call: the
//! `persist` span of a call takes its parent from the headers of that call's first event in the
//! batch, and links to `persist.batch` (follows-from) so the shared transaction stays findable.
//! A call whose events carry no trace context gets its `persist` span under `persist.batch`.
//!
//! Spans are created per batch and per call, never per event; with tracing disabled nothing is
//! grouped or parsed.

use std::collections::HashMap;

use async_nats::HeaderMap;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The spans of one batch; they end when this is dropped (after the commit and the acks).
pub struct BatchSpans {
    pub batch: Span,
    pub calls: Vec<Span>,
}

/// Builds the spans of a batch from `(call_sid, headers)` of its events, in delivery order.
pub fn for_batch<'a>(
    events: impl ExactSizeIterator<Item = (&'a str, Option<&'a HeaderMap>)>,
) -> BatchSpans {
    let batch = tracing::info_span!(
        parent: None,
        "persist.batch",
        events = events.len(),
        calls = tracing::field::Empty
    );
    if batch.is_disabled() {
        return BatchSpans {
            batch,
            calls: Vec::new(),
        };
    }
    // The first event of each call, in order of first appearance.
    let mut first: HashMap<&str, Option<&HeaderMap>> = HashMap::new();
    let mut order = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (sid, headers) in events {
        *counts.entry(sid).or_insert(0) += 1;
        first.entry(sid).or_insert_with(|| {
            order.push(sid);
            headers
        });
    }
    batch.record("calls", order.len());
    let calls = order
        .into_iter()
        .map(|sid| {
            let span = tracing::info_span!(
                parent: &batch,
                "persist",
                call_sid = sid,
                events = counts.get(sid).copied().unwrap_or(0)
            );
            if let Some(headers) = first.get(sid).copied().flatten() {
                let cx = switchboard_service::trace::extract(headers);
                // A missing or malformed context keeps the span under `persist.batch` rather
                // than starting a trace of its own.
                if cx.span().span_context().is_valid() {
                    if let Err(error) = span.set_parent(cx) {
                        tracing::debug!(%error, "trace context not attached to span");
                    }
                    span.follows_from(&batch);
                }
            }
            span
        })
        .collect();
    BatchSpans { batch, calls }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceId, TracerProvider as _};
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

    fn trace_id(span: &Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    /// Headers as the call's publisher writes them: the context of a span of that call.
    fn published_in(span: &Span) -> HeaderMap {
        let _entered = span.enter();
        switchboard_service::trace::headers()
    }

    #[test]
    fn each_call_continues_the_trace_of_its_first_event() {
        traced(|| {
            let call_a = tracing::info_span!(parent: None, "call", call_sid = "CA_a");
            let call_b = tracing::info_span!(parent: None, "call", call_sid = "CA_b");
            let (a1, a2, b1) = (
                published_in(&call_a),
                published_in(&call_a),
                published_in(&call_b),
            );
            let untraced = HeaderMap::new();
            assert_ne!(trace_id(&call_a), trace_id(&call_b));

            let spans = for_batch(
                [
                    ("CA_b", Some(&b1)),
                    ("CA_a", Some(&a1)),
                    ("CA_c", Some(&untraced)),
                    ("CA_a", Some(&a2)),
                    ("CA_d", None),
                ]
                .into_iter(),
            );
            assert_eq!(spans.calls.len(), 4, "one persist span per call");
            assert_eq!(trace_id(&spans.calls[0]), trace_id(&call_b));
            assert_eq!(trace_id(&spans.calls[1]), trace_id(&call_a));
            let batch = trace_id(&spans.batch);
            assert_ne!(batch, TraceId::INVALID);
            assert_ne!(batch, trace_id(&call_a));
            assert_ne!(batch, trace_id(&call_b));
            // No context: under the batch, not a trace of their own.
            assert_eq!(trace_id(&spans.calls[2]), batch);
            assert_eq!(trace_id(&spans.calls[3]), batch);
            assert_eq!(spans.calls[1].metadata().map(|m| m.name()), Some("persist"));
            assert_eq!(
                spans.batch.metadata().map(|m| m.name()),
                Some("persist.batch")
            );
        });
    }

    #[test]
    fn with_the_spans_filtered_out_nothing_is_built() {
        let quiet =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::WARN);
        tracing::subscriber::with_default(quiet, || {
            let headers = HeaderMap::new();
            let spans = for_batch([("CA_a", Some(&headers))].into_iter());
            assert!(spans.batch.is_disabled());
            assert!(spans.calls.is_empty());
        });
    }
}
