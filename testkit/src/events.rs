//! A call's events as JetStream stored them: what most end-to-end assertions read.

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt as _;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, EVENTS_STREAM, Message as _};

/// One stored event and its stream sequence.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its sequence in `VOICE_EVENTS`.
    pub stream_seq: u64,
    /// The event.
    pub event: CallEvent,
}

/// Every stored event of `call_sid` in stream order, read through an ordered consumer (so the
/// connection needs consumer rights on `VOICE_EVENTS`). Fails if one was stored under another
/// `Nats-Msg-Id` than its own (the dedupe key every publisher must use).
pub async fn call_events(
    js: &jetstream::Context,
    subjects: &Subjects,
    call_sid: &str,
) -> anyhow::Result<Vec<StoredEvent>> {
    let stream = js
        .get_stream(EVENTS_STREAM)
        .await
        .context("the events stream")?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subjects.call_events(call_sid),
            ..Default::default()
        })
        .await
        .context("an ordered consumer on the call's events")?;
    let pending = usize::try_from(consumer.cached_info().num_pending)?;
    let mut messages = consumer.messages().await?.take(pending);
    let mut events = Vec::with_capacity(pending);
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("reading a call event: {e}"))?;
        let stream_seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let event = CallEvent::decode(msg.payload.clone())?;
        let expected = event.msg_id();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned());
        if id.as_deref() != Some(expected.as_str()) {
            bail!("event stored with Nats-Msg-Id {id:?}, expected {expected}");
        }
        events.push(StoredEvent { stream_seq, event });
    }
    Ok(events)
}
