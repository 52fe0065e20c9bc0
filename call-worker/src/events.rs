//! Per-call event sequencing.
//!
//! Every call event carries `seq`, starting at 1 and growing by one, and is published with
//! `Nats-Msg-Id: <call_sid>:<seq>`. Consumers order by `seq` and dedupe on the pair, so the
//! numbering must be gapless and owned by exactly one place: the call actor, through one
//! [`Sequencer`]. Publishing itself is the shared, non-blocking
//! [`switchboard_service::events::EventPublisher`].

use switchboard_proto::{CallEvent, call_event::Body, now_ms};
use switchboard_service::events::EventPublisher;

/// Numbers the events of one call.
#[derive(Debug)]
pub struct Sequencer {
    call_sid: String,
    last_seq: u64,
}

impl Sequencer {
    /// A sequencer whose first event gets seq 1.
    pub fn new(call_sid: &str) -> Self {
        Self {
            call_sid: call_sid.to_owned(),
            last_seq: 0,
        }
    }

    /// Wraps `body` into the call's next event, stamped now.
    pub fn next(&mut self, body: Body) -> CallEvent {
        self.last_seq += 1;
        CallEvent {
            call_sid: self.call_sid.clone(),
            seq: self.last_seq,
            at_ms: now_ms(),
            body: Some(body),
        }
    }

    /// The seq of the last event made.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// The sequencer and the publisher of one call, and the conversation so far (the events a
/// replay needs, see [`crate::replay`]).
pub struct CallEvents {
    seq: Sequencer,
    publisher: EventPublisher,
    history: Vec<CallEvent>,
}

impl CallEvents {
    /// Events of `call_sid`, published through `publisher`.
    pub fn new(call_sid: &str, publisher: EventPublisher) -> Self {
        Self {
            seq: Sequencer::new(call_sid),
            publisher,
            history: Vec::new(),
        }
    }

    /// Numbers and queues `body`; never waits.
    pub fn publish(&mut self, body: Body) {
        let event = self.seq.next(body);
        tracing::debug!(call_sid = %event.call_sid, seq = event.seq, kind = event.kind(), "call event");
        if event
            .body
            .as_ref()
            .is_some_and(crate::replay::is_conversation)
        {
            self.history.push(event.clone());
        }
        self.publisher.publish(event);
    }

    /// The conversation events published so far (transcripts and tool invocations), in order.
    pub fn history(&self) -> &[CallEvent] {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::{CallEnded, CallStarted};

    #[test]
    fn seq_starts_at_one_and_grows_by_one() {
        let mut s = Sequencer::new("CA1");
        let a = s.next(Body::Started(CallStarted::default()));
        let b = s.next(Body::Ended(CallEnded::default()));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.call_sid, "CA1");
        assert_eq!(b.msg_id(), "CA1:2");
        assert_eq!(b.kind(), "ended");
        assert!(a.at_ms > 0);
        assert_eq!(s.last_seq(), 2);
    }
}
