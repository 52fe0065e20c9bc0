//! One call is one trace: the worker continues the trace of the offer (its NATS headers) and
//! passes it on to tools and call events. Spans get real OpenTelemetry contexts from a layer
//! without exporter; what crosses the process boundary is checked on the wire (NATS headers).
//! One test in this binary: it installs the process-wide subscriber.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer;
use common::*;
use futures::StreamExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use switchboard_proto::{
    CallOffer, EVENTS_STREAM, Message as _, ToolResult, call_event::Body, tool_result,
};
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OFFER_SPAN: &str = "00f067aa0ba902b7";

/// `(trace id, parent span id)` of a W3C `traceparent` header.
fn traceparent(headers: Option<&async_nats::HeaderMap>) -> Option<(String, String)> {
    let value = headers?.get("traceparent")?.as_str().to_owned();
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        ["00", trace, span, _flags] => Some(((*trace).to_owned(), (*span).to_owned())),
        _ => None,
    }
}

#[tokio::test]
async fn the_call_continues_the_offers_trace_into_tool_requests_and_events() -> anyhow::Result<()> {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber)?;

    let script = r#"
[session]
speed = 20.0
[[response]]
call = { name = "lookup_customer", arguments = '{"phone":"+15550001234"}' }
[[response]]
say = "Found you, {{name}}."
"#;
    let h = Harness::start(script, &agents_toml(None, &["lookup_customer"]), |_| {}).await?;
    h.register_tool("lookup_customer", 0).await?;
    let mut requests = h
        .client
        .subscribe(h.subjects.tool("lookup_customer"))
        .await?;
    h.client.flush().await?;

    let mut gw = h.gateway("CAtrace").await?;
    let offer = CallOffer {
        call_sid: "CAtrace".into(),
        from: "+15550001234".into(),
        to: "+15550001111".into(),
        offered_at_ms: switchboard_proto::now_ms(),
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{TRACE_ID}-{OFFER_SPAN}-01").as_str(),
    );
    let reply = tokio::time::timeout(
        WAIT,
        h.client
            .request_with_headers(h.subjects.offer(), headers, offer.encode_to_vec().into()),
    )
    .await??;
    assert!(switchboard_proto::OfferReply::decode(reply.payload)?.accepted);
    gw.start().await?;
    gw.speak(600).await?;
    gw.silence(700).await?;

    // The tool request carries the call's trace, from a span of its own (the `tool` span).
    let msg = tokio::time::timeout(WAIT, requests.next())
        .await?
        .expect("tool request");
    let (trace, parent) =
        traceparent(msg.headers.as_ref()).expect("the tool request carries a traceparent");
    assert_eq!(trace, TRACE_ID);
    assert_ne!(parent, OFFER_SPAN, "a span of the worker, not the offer's");
    let result = ToolResult {
        result: Some(tool_result::Result::Output(r#"{"name":"Maria"}"#.into())),
        outcome: String::new(),
    };
    h.client
        .publish(
            msg.reply.expect("reply subject"),
            result.encode_to_vec().into(),
        )
        .await?;
    gw.until("the answer", |f| {
        matches!(f, switchboard_proto::outbound_frame::Frame::Audio(_))
    })
    .await?;
    gw.stop().await?;
    h.ended_events("CAtrace").await?;

    // Every event of the call was published inside the call's trace.
    let stream = h.js.get_stream(EVENTS_STREAM).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: h.subjects.call_events("CAtrace"),
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.fetch().max_messages(1000).messages().await?;
    let mut kinds = Vec::new();
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        let event = switchboard_proto::CallEvent::decode(msg.payload.clone())?;
        let (trace, _) = traceparent(msg.headers.as_ref())
            .unwrap_or_else(|| panic!("event {} without traceparent", event.seq));
        assert_eq!(trace, TRACE_ID, "event {}", event.seq);
        kinds.push(event.kind());
    }
    assert!(
        kinds.contains(&"started") && kinds.contains(&"tool") && kinds.contains(&"ended"),
        "{kinds:?}"
    );
    assert!(
        h.stored_events("CAtrace")
            .await?
            .iter()
            .any(|e| matches!(e.body, Some(Body::Turn(_)))),
        "a turn event (published inside its `turn` span)"
    );
    Ok(())
}
