//! The event publisher against a real JetStream: events are stored once per (call_sid, seq) and
//! carry the trace context of the span they were published from.
#![forbid(unsafe_code)]

use async_nats::jetstream;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use switchboard_proto::call_event::Body;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, CallStarted};

use switchboard_service::events::{CloseReport, EventPublisher, PublisherConfig, ensure_stream};
use switchboard_testkit::NatsServer;
use tokio::time::Instant;
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

#[tokio::test]
async fn a_thousand_events_are_pipelined_and_all_stored() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let subjects = Subjects::default();
    let mut stream = ensure_stream(&js, &subjects).await?;
    let publisher = EventPublisher::spawn(js, subjects);
    for seq in 1..=1000 {
        publisher.publish(started(&format!("CA{}", seq % 10), seq));
    }
    publisher.flush().await;
    assert_eq!(publisher.backlog(), 0);
    assert_eq!(stream.info().await?.state.messages, 1000);
    let report = publisher.close(Duration::from_secs(5)).await;
    assert_eq!(
        report,
        CloseReport {
            published: 1000,
            spilled: 0
        }
    );
    Ok(())
}

/// With the broker gone, closing returns by its deadline and accounts for every event (spilled
/// to the log, counted), instead of retrying forever.
#[tokio::test]
async fn close_returns_by_its_deadline_with_the_broker_gone() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let subjects = Subjects::default();
    ensure_stream(&js, &subjects).await?;
    let publisher = EventPublisher::spawn(js, subjects);
    nats.stop().await;
    for seq in 1..=20 {
        publisher.publish(started("CA1", seq));
    }
    let began = Instant::now();
    let report = publisher.close(Duration::from_millis(800)).await;
    let took = began.elapsed();
    assert!(took < Duration::from_millis(1500), "close took {took:?}");
    assert_eq!(
        report,
        CloseReport {
            published: 0,
            spilled: 20
        }
    );
    assert_eq!(publisher.backlog(), 0, "every event accounted for");
    // After close, a publish spills at once rather than disappearing.
    publisher.publish(started("CA1", 21));
    assert_eq!(publisher.backlog(), 0);
    Ok(())
}

/// A full queue never makes `publish` wait: the overflow is spilled, and the publisher reports
/// congestion so intake can pause before that happens.
#[tokio::test]
async fn a_full_queue_spills_and_reports_congestion() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let subjects = Subjects::default();
    ensure_stream(&js, &subjects).await?;
    let config = PublisherConfig {
        capacity: 8,
        max_in_flight: 2,
    };
    let publisher = EventPublisher::spawn_with(js, subjects, config);
    assert!(!publisher.is_congested());
    nats.stop().await;
    let began = Instant::now();
    for seq in 1..=40 {
        publisher.publish(started("CA1", seq));
    }
    assert!(
        began.elapsed() < Duration::from_millis(100),
        "publish never waits"
    );
    assert!(publisher.is_congested());
    // At most the queue and the attempts in flight are held; the rest went to the log.
    assert!(
        publisher.backlog() <= 8 + 2,
        "backlog {}",
        publisher.backlog()
    );
    let report = publisher.close(Duration::from_millis(300)).await;
    assert_eq!(report.published, 0);
    assert_eq!(report.spilled, 40);
    Ok(())
}
