//! Live calls: `GET /api/live`, every call event as it is published, as Server-Sent Events.
//!
//! One task holds a core NATS subscription to `voice.events.>` (not the durable consumer: live
//! viewers want what happens now, not a replay, and must never hold back the record) and fans
//! the events out through a bounded broadcast ring. Each client reads at its own pace from the
//! ring; a client that falls more than the ring's capacity behind is disconnected instead of
//! being waited for, so a slow browser can never slow the subscription, let alone the writer.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use switchboard_proto::call_event::Body;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, CallRecording, Message as _, Role, tool_invocation};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::pricing::Prices;

/// Events a client may fall behind before it is disconnected.
pub const DEFAULT_CLIENT_BUFFER: usize = 1024;

/// The fan-out of live events; cheap to clone.
#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<Arc<str>>,
    /// Ends every client's stream at shutdown, so the HTTP server can drain.
    closed: CancellationToken,
}

impl Live {
    /// A fan-out in which each client may be up to `client_buffer` events behind.
    pub fn new(client_buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        Self {
            tx,
            closed: CancellationToken::new(),
        }
    }

    /// Ends every live stream (shutdown); new ones end at once.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Sends one event (as its JSON) to every connected client; never waits.
    pub fn send(&self, json: Arc<str>) {
        // No receivers is the normal idle case.
        let _ = self.tx.send(json);
    }

    /// Clients currently connected.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The SSE response of one client: one `data:` JSON line per event, until the client falls
    /// behind by more than the buffer (then the stream ends and the browser may reconnect).
    pub fn sse(&self) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
        let rx = self.tx.subscribe();
        metrics::gauge!(crate::metrics::LIVE_CLIENTS).set(self.clients() as f64);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(json) => Some((Ok(Event::default().data(&*json)), rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!(crate::metrics::LIVE_CLIENTS_DROPPED).increment(1);
                    tracing::info!(missed, "a live client fell behind; disconnecting it");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Sse::new(stream.take_until(self.closed.clone().cancelled_owned()))
            .keep_alive(KeepAlive::default())
    }
}

/// Subscribes to every call event and feeds `live` until `stop`. A lost subscription is
/// re-established; the client reconnects on its own.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    live: Live,
    prices: Prices,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut sub = match client.subscribe(subjects.all_events()).await {
            Ok(sub) => sub,
            Err(error) => {
                tracing::warn!(%error, "subscribing to live events failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                m = sub.next() => m,
            };
            let Some(message) = message else { break };
            // Only decoding and a non-blocking send here: nothing can make this loop wait.
            match CallEvent::decode(message.payload.as_ref()) {
                Ok(event) if !event.call_sid.is_empty() => {
                    live.send(to_json(&event, &prices).to_string().into());
                }
                _ => metrics::counter!(crate::metrics::LIVE_UNDECODABLE).increment(1),
            }
        }
    }
}

/// An event as the live stream shows it: `call_sid`, `seq`, `kind`, `at_ms` and the body's
/// fields next to them (a turn's own kind is `turn_kind`).
pub fn to_json(event: &CallEvent, prices: &Prices) -> Value {
    let mut o = Map::new();
    o.insert("call_sid".into(), json!(event.call_sid));
    o.insert("seq".into(), json!(event.seq));
    o.insert("kind".into(), json!(event.kind()));
    o.insert("at_ms".into(), json!(event.at_ms));
    let body = match &event.body {
        Some(Body::Started(b)) => json!({"agent_id": b.agent_id, "from": b.from, "to": b.to,
            "direction": b.direction().label().unwrap_or_default(),
            "worker_id": b.worker_id, "model": b.model}),
        Some(Body::Transcript(b)) => json!({"role": match b.role() {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::System | Role::Unspecified => "system",
            },
            "text": b.text, "item_id": b.item_id, "interrupted": b.interrupted,
            "heard_ms": b.heard_ms, "offset_ms": b.offset_ms}),
        Some(Body::Tool(b)) => {
            let (output, error) = match &b.result {
                Some(tool_invocation::Result::Output(o)) => (json_or_text(o), Value::Null),
                Some(tool_invocation::Result::Error(e)) => {
                    (Value::Null, json!({"code": e.code, "message": e.message}))
                }
                None => (Value::Null, Value::Null),
            };
            json!({"call_id": b.call_id, "name": b.name, "arguments": json_or_text(&b.arguments),
                "output": output, "error": error, "latency_ms": b.latency_ms})
        }
        Some(Body::Outcome(b)) => json!({"outcome": b.outcome, "detail": b.detail}),
        Some(Body::Turn(b)) => {
            json!({"turn_kind": b.kind, "latency_ms": b.latency_ms, "response_id": b.response_id})
        }
        Some(Body::Ended(b)) => json!({"reason": b.reason, "duration_ms": b.duration_ms,
            "usage": b.usage.as_ref().map(|u| json!({"input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens, "input_audio_tokens": u.input_audio_tokens,
                "output_audio_tokens": u.output_audio_tokens,
                "input_text_tokens": u.input_text_tokens,
                "output_text_tokens": u.output_text_tokens, "cached_tokens": u.cached_tokens})),
            "cost_usd": b.usage.as_ref().and_then(|u| prices.cost(u)),
            "cost": b.usage.as_ref().map(|u| prices.breakdown(u)),
            "recording": b.recording.as_deref().map(recording_json)}),
        Some(Body::Rejected(b)) => json!({"reason": b.reason, "from": b.from, "to": b.to}),
        Some(Body::Status(b)) => json!({"status": b.status, "sequence_number": b.sequence_number,
            "duration_seconds": b.duration_seconds, "sip_response_code": b.sip_response_code}),
        Some(Body::Owner(b)) => json!({"epoch": b.epoch, "worker_id": b.worker_id,
            "reason": b.reason, "previous_worker_id": b.previous_worker_id, "gap_ms": b.gap_ms,
            "agent_id": b.agent_id}),
        Some(Body::Dispatched(b)) => json!({"call_id": b.call_id, "name": b.name,
            "arguments": json_or_text(&b.arguments)}),
        Some(Body::Usage(u)) => json!({"input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens}),
        Some(Body::Recording(b)) => recording_json(b),
        Some(Body::Amd(b)) => json!({"answered_by": b.answered_by, "detection_ms": b.detection_ms}),
        Some(Body::Transfer(b)) => json!({"department": b.department, "status": b.status}),
        None => json!({}),
    };
    if let Value::Object(fields) = body {
        o.extend(fields);
    }
    Value::Object(o)
}

/// A recording's fields, as the `recording` event and `ended`'s `recording` show them.
fn recording_json(b: &CallRecording) -> Value {
    json!({"location": b.location, "duration_ms": b.duration_ms, "channels": b.channels,
        "bytes": b.bytes, "stream": b.stream})
}

fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::{CallOutcome, TurnLatency};

    #[test]
    fn body_fields_sit_next_to_the_envelope() {
        let ev = CallEvent {
            call_sid: "CA1".into(),
            seq: 4,
            at_ms: 10,
            body: Some(Body::Turn(TurnLatency {
                kind: "greeting".into(),
                latency_ms: 800,
                response_id: "resp_1".into(),
            })),
        };
        assert_eq!(
            to_json(&ev, &Prices::default()),
            json!({"call_sid": "CA1", "seq": 4, "kind": "turn", "at_ms": 10,
                "turn_kind": "greeting", "latency_ms": 800, "response_id": "resp_1"})
        );
        let ev = CallEvent {
            body: Some(Body::Outcome(CallOutcome {
                redacted: Vec::new(),
                outcome: "booked".into(),
                detail: String::new(),
            })),
            ..ev
        };
        assert_eq!(to_json(&ev, &Prices::default())["outcome"], "booked");
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_dropped_not_waited_for() {
        let live = Live::new(4);
        let mut rx = live.tx.subscribe();
        for i in 0..10 {
            live.send(format!("{i}").into());
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
    }
}
