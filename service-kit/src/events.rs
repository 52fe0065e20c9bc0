//! The `VOICE_EVENTS` JetStream stream and a non-blocking publisher of call events.
//!
//! A call actor must never wait on the event store (the media path never waits), yet an accepted
//! event must never be lost silently. [`EventPublisher`] is a cloneable handle to a task that owns
//! the JetStream context: `publish` only enqueues; the task publishes with
//! `Nats-Msg-Id: <call_sid>:<seq>` and retries with backoff until the server acknowledges, so a
//! retry after a lost ack is stored once.
//!
//! Each event carries the trace context of the span it was published from (W3C `traceparent`
//! in its NATS headers), so the persister's spans join the trace of the call that produced it.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, EVENTS_STREAM, Message as _};
use tokio::sync::{mpsc, oneshot};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long JetStream remembers message ids for deduplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the events stream if it does not exist (and returns it either way).
pub async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec![subjects.all_events()],
        duplicate_window: DUPLICATE_WINDOW,
        // Consumers (the persister, CRMs) may be down for a while; keep a week.
        max_age: Duration::from_secs(7 * 24 * 3600),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
}

enum Command {
    /// The event and the trace context of the span that published it.
    Publish(CallEvent, opentelemetry::Context),
    Flush(oneshot::Sender<()>),
}

/// A cloneable handle that publishes call events in the background.
#[derive(Clone)]
pub struct EventPublisher {
    tx: mpsc::UnboundedSender<Command>,
}

impl EventPublisher {
    /// Spawns the publishing task. It ends when every handle is dropped and its queue is empty.
    pub fn spawn(js: jetstream::Context, subjects: Subjects) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(js, subjects, rx));
        Self { tx }
    }

    /// Queues `event` for publishing; never waits. The current span's trace context goes with it.
    pub fn publish(&self, event: CallEvent) {
        metrics::counter!("call_events_queued_total", "kind" => event.kind()).increment(1);
        let cx = tracing::Span::current().context();
        if self.tx.send(Command::Publish(event, cx)).is_err() {
            // Only possible if the task panicked; make it loud.
            tracing::error!("event publisher is gone; event not published");
            metrics::counter!("call_events_lost_total").increment(1);
        }
    }

    /// Waits until every event queued before this call is acknowledged by JetStream (used on
    /// shutdown and in tests).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(js: jetstream::Context, subjects: Subjects, mut rx: mpsc::UnboundedReceiver<Command>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Flush(done) => {
                let _ = done.send(());
            }
            Command::Publish(event, cx) => publish_until_acked(&js, &subjects, &event, &cx).await,
        }
    }
}

async fn publish_until_acked(
    js: &jetstream::Context,
    subjects: &Subjects,
    event: &CallEvent,
    cx: &opentelemetry::Context,
) {
    let subject = subjects.event(&event.call_sid, event.kind());
    let payload = bytes::Bytes::from(event.encode_to_vec());
    let msg_id = event.msg_id();
    let mut headers = async_nats::HeaderMap::new();
    crate::trace::inject_context(cx, &mut headers);
    let mut backoff = Duration::from_millis(50);
    loop {
        // Headers first: `message_id` adds to the map that `headers` would replace.
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .headers(headers.clone())
            .message_id(msg_id.as_str());
        let result = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                metrics::counter!("call_events_published_total", "kind" => event.kind())
                    .increment(1);
                return;
            }
            Err(error) => {
                metrics::counter!("call_events_publish_retries_total").increment(1);
                tracing::warn!(call_sid = %event.call_sid, seq = event.seq, %error,
                    "publishing call event failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
