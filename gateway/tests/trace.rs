//! One call is one trace: the `webhook` span, the `offer` request's NATS headers, the TwiML's
//! `traceparent` parameter and the `stream` span all carry the same trace id.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use switchboard_proto::{InboundFrame, Message as _, OfferReply, inbound_frame};
use switchboard_twilio::media::{StopInfo, TwilioMessage};
use switchboard_twilio::twiml::{Instructions, Verb};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

const CALL: &str = "CA0123456789abcdef0123456789abcdee";
const STREAM: &str = "MZ0123456789abcdef0123456789abcdee";

/// Hands every finished span to the test.
#[derive(Debug)]
struct Recorder(mpsc::UnboundedSender<SpanData>);

impl SpanProcessor for Recorder {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        let _ = self.0.send(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// `traceparent` = `00-<trace id>-<span id>-<flags>`.
fn parse_traceparent(value: &str) -> anyhow::Result<(TraceId, SpanId)> {
    let parts: Vec<&str> = value.split('-').collect();
    let [_, trace, span, _] = parts.as_slice() else {
        anyhow::bail!("malformed traceparent {value:?}");
    };
    Ok((TraceId::from_hex(trace)?, SpanId::from_hex(span)?))
}

/// Finished spans, in the order they ended.
struct Spans {
    rx: mpsc::UnboundedReceiver<SpanData>,
    seen: Vec<SpanData>,
}

impl Spans {
    /// The first finished span called `name` (waiting for it if need be).
    async fn named(&mut self, name: &str) -> SpanData {
        loop {
            if let Some(i) = self.seen.iter().position(|s| s.name == name) {
                return self.seen.remove(i);
            }
            let span = tokio::time::timeout(PATIENCE, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{name}` span in time"))
                .expect("recorder alive");
            self.seen.push(span);
        }
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| kv.value.to_string())
}

// A current-thread runtime: the thread-local subscriber sees every task of the gateway.
#[tokio::test(flavor = "current_thread")]
async fn a_call_is_one_trace_from_webhook_to_stream() -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut spans = Spans {
        rx,
        seen: Vec::new(),
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Recorder(tx))
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway-test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let gw = TestGateway::start(&[]).await?;
    // A worker that keeps the offer's headers.
    let mut offers = gw
        .nats
        .queue_subscribe(
            gw.subjects.offer(),
            switchboard_proto::WORKERS_QUEUE_GROUP.to_owned(),
        )
        .await?;
    barrier(&gw.nats).await?;
    let worker_nats = gw.nats.clone();
    let worker = tokio::spawn(async move {
        let msg = offers.next().await?;
        let accept = OfferReply {
            epoch: 0,
            accepted: true,
            worker_id: "worker-1".into(),
            agent_id: "front-desk".into(),
            reason: String::new(),
        };
        worker_nats
            .publish(msg.reply.clone()?, accept.encode_to_vec().into())
            .await
            .ok()?;
        Some(msg)
    });

    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    let offer = worker.await?.expect("the offer reached the worker");

    // The offer request carries the `offer` span's context.
    let offer_traceparent = offer
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_owned())
        .expect("offer request without a traceparent header");
    let (offer_trace, offer_span_id) = parse_traceparent(&offer_traceparent)?;

    // The TwiML carries the webhook span's context next to the token.
    let [Verb::ConnectStream { parameters, .. }] = verbs.as_slice() else {
        panic!("expected <Connect><Stream>, got {verbs:?}");
    };
    let param = |name: &str| {
        parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let token = param("token").expect("token parameter");
    let twiml_traceparent = param("traceparent").expect("traceparent parameter");
    let (twiml_trace, webhook_span_id) = parse_traceparent(&twiml_traceparent)?;
    assert_eq!(
        twiml_trace, offer_trace,
        "one trace for the webhook and the offer"
    );
    assert_ne!(webhook_span_id, offer_span_id);

    let webhook = spans.named("webhook").await;
    let offer_span = spans.named("offer").await;
    assert_eq!(webhook.span_context.trace_id(), twiml_trace);
    assert_eq!(webhook.span_context.span_id(), webhook_span_id);
    assert_eq!(
        webhook.parent_span_id,
        SpanId::INVALID,
        "the webhook is the root"
    );
    assert_eq!(attribute(&webhook, "call_sid").as_deref(), Some(CALL));
    assert_eq!(attribute(&webhook, "direction").as_deref(), Some("inbound"));
    assert_eq!(offer_span.span_context.span_id(), offer_span_id);
    assert_eq!(offer_span.parent_span_id, webhook_span_id);

    // Twilio passes every parameter back on `start`: the token still admits the stream, and
    // the stream span continues the trace.
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;
    let mut ws = gw.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(
        &mut ws,
        &start_message(
            CALL,
            STREAM,
            &[("token", &token), ("traceparent", &twiml_traceparent)],
        ),
    )
    .await?;
    let start = next_inbound(&mut inbound).await?;
    let Some(inbound_frame::Frame::Start(start)) = start.frame else {
        panic!("expected start, got {start:?}");
    };
    assert!(
        start.custom_parameters.is_empty(),
        "token and traceparent are the gateway's: {:?}",
        start.custom_parameters
    );
    send_json(
        &mut ws,
        &TwilioMessage::media(2, STREAM, 1, 20, &[0xff; 160]),
    )
    .await?;
    send_json(
        &mut ws,
        &TwilioMessage::Stop {
            sequence_number: "3".into(),
            stream_sid: STREAM.into(),
            stop: StopInfo::default(),
        },
    )
    .await?;
    let mut kinds = Vec::new();
    while kinds.last() != Some(&"stop") {
        let InboundFrame { frame, .. } = next_inbound(&mut inbound).await?;
        kinds.push(match frame {
            Some(inbound_frame::Frame::Audio(_)) => "media",
            Some(inbound_frame::Frame::Stop(_)) => "stop",
            other => panic!("unexpected frame {other:?}"),
        });
    }
    assert_eq!(kinds, ["media", "stop"]);
    drop(ws);

    let stream = spans.named("stream").await;
    assert_eq!(stream.span_context.trace_id(), twiml_trace);
    assert_eq!(stream.parent_span_id, webhook_span_id);
    assert_eq!(attribute(&stream, "call_sid").as_deref(), Some(CALL));
    Ok(())
}
