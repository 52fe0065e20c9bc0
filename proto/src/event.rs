//! Helpers shared by everyone who publishes or consumes [`CallEvent`]s.

use crate::{CallEvent, call_event::Body};

/// Gateways number their events from here so they never collide with the worker's sequence.
pub const GATEWAY_SEQ_BASE: u64 = 1_000_000;

/// Why a call ended: `CallEnded.reason`, as the worker records it and dashboards filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Twilio's media stream stopped: the caller hung up.
    CallerHungUp,
    /// The agent called `end_call`.
    EndCall,
    /// The caller stayed silent through the idle prompt.
    Idle,
    /// The agent's `max_call_seconds` passed.
    MaxDuration,
    /// The agent called `transfer_call`.
    Transferred,
    /// The model failed (a fatal error, or sessions lost too often).
    ModelError,
    /// The model session refused or did not apply the call's configuration (formats, voice,
    /// tools), so the caller could not have been served.
    ModelConfigRejected,
    /// The worker shut down before the call ended.
    WorkerShutdown,
    /// The media stream never started, or its subscription ended.
    StreamLost,
}

impl EndReason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [EndReason; 9] = [
        Self::CallerHungUp,
        Self::EndCall,
        Self::Idle,
        Self::MaxDuration,
        Self::Transferred,
        Self::ModelError,
        Self::ModelConfigRejected,
        Self::WorkerShutdown,
        Self::StreamLost,
    ];

    /// The contract's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallerHungUp => "caller_hung_up",
            Self::EndCall => "end_call",
            Self::Idle => "idle",
            Self::MaxDuration => "max_duration",
            Self::Transferred => "transferred",
            Self::ModelError => "model_error",
            Self::ModelConfigRejected => "model_config_rejected",
            Self::WorkerShutdown => "worker_shutdown",
            Self::StreamLost => "stream_lost",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every `<kind>` token [`kind`] gives, in the order of the `oneof body` field numbers.
pub const KINDS: [&str; 8] = [
    "started",
    "transcript",
    "tool",
    "outcome",
    "turn",
    "ended",
    "rejected",
    "status",
];

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

impl crate::Direction {
    /// The direction as the call record and the console name it (`inbound`, `outbound`, `web`;
    /// none when unspecified).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::Inbound => Some("inbound"),
            Self::Outbound => Some("outbound"),
            Self::Web => Some("web"),
            Self::Unspecified => None,
        }
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
    fn directions_have_their_record_labels() {
        use crate::Direction;
        assert_eq!(Direction::Inbound.label(), Some("inbound"));
        assert_eq!(Direction::Outbound.label(), Some("outbound"));
        assert_eq!(Direction::Web.label(), Some("web"));
        assert_eq!(Direction::Unspecified.label(), None);
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
