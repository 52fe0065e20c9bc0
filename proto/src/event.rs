//! Helpers shared by everyone who publishes or consumes [`CallEvent`]s.

use crate::{CallEvent, call_event::Body};

/// Gateways number their events from here so they never collide with the worker's sequence.
pub const GATEWAY_SEQ_BASE: u64 = 1_000_000;

/// The `<kind>` token of an event body, as used in `voice.events.<call_sid>.<kind>`.
pub fn kind(body: &Body) -> &'static str {
    match body {
        Body::Started(_) => "started",
        Body::Transcript(_) => "transcript",
        Body::Tool(_) => "tool",
        Body::Outcome(_) => "outcome",
        Body::Turn(_) => "turn",
        Body::Ended(_) => "ended",
        Body::Rejected(_) => "rejected",
        Body::Status(_) => "status",
    }
}

impl CallEvent {
    /// The event's kind token (`unknown` when the body is missing, e.g. from a newer producer).
    pub fn kind(&self) -> &'static str {
        self.body.as_ref().map(kind).unwrap_or("unknown")
    }

    /// The deduplication id, `<call_sid>:<seq>`, sent as `Nats-Msg-Id`.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.call_sid, self.seq)
    }
}

impl crate::CallOffer {
    /// The verified number of the person on the call, whom tools act for: Twilio's `From` on an
    /// inbound call, the dialed `To` on an outbound one (where `From` is our own number).
    pub fn party(&self) -> &str {
        if self.direction() == crate::Direction::Outbound {
            &self.to
        } else {
            &self.from
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallEnded, Message};

    #[test]
    fn tools_act_for_the_person_on_the_call() {
        let mut offer = crate::CallOffer {
            from: "+15550001234".into(),
            to: "+15550001111".into(),
            ..Default::default()
        };
        offer.set_direction(crate::Direction::Inbound);
        assert_eq!(offer.party(), "+15550001234");
        offer.set_direction(crate::Direction::Outbound);
        assert_eq!(offer.party(), "+15550001111");
    }

    #[test]
    fn kind_and_msg_id() {
        let ev = CallEvent {
            call_sid: "CA1".into(),
            seq: 7,
            at_ms: 1,
            body: Some(Body::Ended(CallEnded::default())),
        };
        assert_eq!(ev.kind(), "ended");
        assert_eq!(ev.msg_id(), "CA1:7");
        let bytes = ev.encode_to_vec();
        assert_eq!(CallEvent::decode(bytes.as_slice()).unwrap(), ev);
    }
}
