//! Per-call event sequencing.
//!
//! Every call event carries `seq` and is published with `Nats-Msg-Id: <call_sid>:<seq>`.
//! Consumers order by `seq` and dedupe on the pair, so each owner's numbering must be gapless
//! and owned by exactly one place: the call actor, through one [`Sequencer`]. Owners number
//! apart: the owner of epoch `e` numbers `e << 32 | n` ([`owner_seq`]), n from 1 (its `owner`
//! claim), so a takeover's events never collide with a zombie's still in flight. Publishing
//! itself is the shared, non-blocking [`switchboard_service::events::EventPublisher`], fenced by
//! the owner's claim.

use switchboard_proto::event::owner_seq;
use switchboard_proto::{CallEvent, call_event::Body, now_ms};
use switchboard_service::events::{EventPublisher, Fence};

/// Numbers the events of one owner of one call.
#[derive(Debug)]
pub struct Sequencer {
    call_sid: String,
    epoch: u32,
    last: u32,
    last_seq: u64,
}

impl Sequencer {
    /// A sequencer for the owner of `epoch` whose first event is its `n`th.
    pub fn new(call_sid: &str, epoch: u32, n: u32) -> Self {
        Self {
            call_sid: call_sid.to_owned(),
            epoch,
            last: n.saturating_sub(1),
            last_seq: 0,
        }
    }

    /// Wraps `body` into the owner's next event, stamped now.
    pub fn next(&mut self, body: Body) -> CallEvent {
        self.last += 1;
        self.last_seq = owner_seq(self.epoch, self.last);
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

/// The sequencer, the publisher and the fence of one owner of a call, and the conversation so
/// far (the events a replay needs, see [`crate::replay`]).
pub struct CallEvents {
    seq: Sequencer,
    publisher: EventPublisher,
    fence: Fence,
    history: Vec<CallEvent>,
}

impl CallEvents {
    /// Events of `call_sid` by the owner of `epoch` (whose `owner` claim was its first event),
    /// published through `publisher` under `fence`. `history` is the conversation before this
    /// owner (a takeover's, read back from the stream).
    pub fn new(
        call_sid: &str,
        epoch: u32,
        publisher: EventPublisher,
        fence: Fence,
        history: Vec<CallEvent>,
    ) -> Self {
        Self {
            seq: Sequencer::new(call_sid, epoch, 2),
            publisher,
            fence,
            history,
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
        self.publisher.publish_fenced(event, &self.fence);
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
    fn owners_number_apart() {
        let mut s = Sequencer::new("CA1", 1, 2);
        let a = s.next(Body::Started(CallStarted::default()));
        let b = s.next(Body::Ended(CallEnded::default()));
        assert_eq!((a.seq, b.seq), (owner_seq(1, 2), owner_seq(1, 3)));
        assert_eq!(b.msg_id(), format!("CA1:{}", (1u64 << 32) + 3));
    }

    #[test]
    fn seq_starts_at_one_and_grows_by_one() {
        let mut s = Sequencer::new("CA1", 0, 1);
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
