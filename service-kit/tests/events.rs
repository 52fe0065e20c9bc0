//! The event publisher against a real JetStream: events are stored once per (call_sid, seq) and
//! carry the trace context of the span they were published from.
#![forbid(unsafe_code)]

use async_nats::jetstream;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use switchboard_proto::call_event::Body;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, CallStarted};
use switchboard_service::events::{EventPublisher, ensure_stream};
use switchboard_testkit::NatsServer;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn started(call_sid: &str, seq: u64) -> CallEvent {
    CallEvent {
        call_sid: call_sid.into(),
        seq,
        at_ms: 1,
        body: Some(Body::Started(CallStarted {
            agent_id: "front-desk".into(),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn events_are_stored_once_with_the_publishing_span_trace() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    let subjects = Subjects::default();
    let mut stream = ensure_stream(&js, &subjects).await?;
    let publisher = EventPublisher::spawn(js.clone(), subjects.clone());

    // A subscriber whose spans have OpenTelemetry contexts (no exporter needed).
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let call = tracing::info_span!("call", call_sid = "CA1");
    let trace_id = call.context().span().span_context().trace_id().to_string();
    async {
        publisher.publish(started("CA1", 1));
        // A redelivery of the same event (same call_sid and seq) is deduplicated by JetStream.
        publisher.publish(started("CA1", 1));
    }
    .instrument(call)
    .await;
    publisher.publish(started("CA2", 1));
    publisher.flush().await;

    assert_eq!(
        stream.info().await?.state.messages,
        2,
        "one copy per (call_sid, seq)"
    );
    let traced = stream
        .get_last_raw_message_by_subject(&subjects.event("CA1", "started"))
        .await?;
    assert_eq!(
        traced.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("CA1:1")
    );
    let traceparent = traced
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned());
    assert!(
        traceparent
            .as_deref()
            .is_some_and(|t| t.contains(&trace_id)),
        "traceparent {traceparent:?} should carry the call span's trace {trace_id}"
    );
    let untraced = stream
        .get_last_raw_message_by_subject(&subjects.event("CA2", "started"))
        .await?;
    assert!(
        untraced.headers.get("traceparent").is_none(),
        "published outside any span: no trace context"
    );
    Ok(())
}
