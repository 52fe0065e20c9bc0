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
    /// The media stream never started, its subscription ended, or the caller's socket closed
    /// without Twilio's `stop` (gateway stop reason `closed`).
    StreamLost,
    /// The gateway holding the caller's socket shut down before the call ended (stop reason
    /// `drain_deadline`).
    GatewayShutdown,
    /// The gateway heard nothing from the worker for `WORKER_SILENCE_MS` and closed the stream
    /// (stop reason `worker_silent`).
    WorkerSilent,
    /// The gateway could not go on with the stream (stop reason `error`).
    StreamError,
}

impl EndReason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [EndReason; 12] = [
        Self::CallerHungUp,
        Self::EndCall,
        Self::Idle,
        Self::MaxDuration,
        Self::Transferred,
        Self::ModelError,
        Self::ModelConfigRejected,
        Self::WorkerShutdown,
        Self::StreamLost,
        Self::GatewayShutdown,
        Self::WorkerSilent,
        Self::StreamError,
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
            Self::GatewayShutdown => "gateway_shutdown",
            Self::WorkerSilent => "worker_silent",
            Self::StreamError => "stream_error",
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

/// Why a media stream ended: `StreamStop.reason`, the gateway's last frame to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Twilio sent `stop`: the caller hung up.
    Stop,
    /// The caller's socket closed without `stop`.
    Closed,
    /// The gateway could not go on with the stream (a socket or publishing error).
    Error,
    /// Nothing came from the worker for `WORKER_SILENCE_MS`.
    WorkerSilent,
    /// The gateway shut down and its drain deadline passed.
    DrainDeadline,
    /// The worker asked for a hang-up, and the audio before it has played.
    Hangup,
    /// The worker asked for a transfer, and Twilio left the stream for it.
    Transfer,
}

impl StopReason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [StopReason; 7] = [
        Self::Stop,
        Self::Closed,
        Self::Error,
        Self::WorkerSilent,
        Self::DrainDeadline,
        Self::Hangup,
        Self::Transfer,
    ];

    /// The contract's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Closed => "closed",
            Self::Error => "error",
            Self::WorkerSilent => "worker_silent",
            Self::DrainDeadline => "drain_deadline",
            Self::Hangup => "hangup",
            Self::Transfer => "transfer",
        }
    }

    /// The reason `word` stands for, if it is one.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }

    /// The end reason a call gets when its stream stops for this reason before the worker
    /// ended it. (After a `hangup` or `transfer` the worker has already recorded its own.)
    pub fn end_reason(self) -> EndReason {
        match self {
            Self::Stop => EndReason::CallerHungUp,
            Self::Closed => EndReason::StreamLost,
            Self::Error => EndReason::StreamError,
            Self::WorkerSilent => EndReason::WorkerSilent,
            Self::DrainDeadline => EndReason::GatewayShutdown,
            Self::Hangup => EndReason::EndCall,
            Self::Transfer => EndReason::Transferred,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a worker declined an offer: `OfferReply.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    /// The offer is malformed (an invalid CallSid).
    BadOffer,
    /// The worker is shutting down.
    Draining,
    /// The worker runs as many calls as it may.
    AtCapacity,
    /// No agent of the worker answers the dialed number.
    NoAgent,
    /// The worker could not set the call up.
    Error,
}

impl DeclineReason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [DeclineReason; 5] = [
        Self::BadOffer,
        Self::Draining,
        Self::AtCapacity,
        Self::NoAgent,
        Self::Error,
    ];

    /// The contract's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadOffer => "bad_offer",
            Self::Draining => "draining",
            Self::AtCapacity => "at_capacity",
            Self::NoAgent => "no_agent",
            Self::Error => "error",
        }
    }

    /// The reason `word` stands for, if it is one.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }

    /// Whether the reason concerns this worker only, so another worker may take the call.
    pub fn passing(self) -> bool {
        matches!(self, Self::Draining | Self::AtCapacity)
    }
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    fn stop_reasons_round_trip_and_map_to_distinct_end_reasons() {
        for r in StopReason::ALL {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(StopReason::parse("bogus"), None);
        let ends: std::collections::HashSet<EndReason> = StopReason::ALL
            .into_iter()
            .map(StopReason::end_reason)
            .collect();
        assert_eq!(ends.len(), StopReason::ALL.len());
        assert_eq!(StopReason::Stop.end_reason(), EndReason::CallerHungUp);
    }

    #[test]
    fn decline_reasons_round_trip() {
        for r in DeclineReason::ALL {
            assert_eq!(DeclineReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(DeclineReason::parse("no_workers"), None);
        let passing: Vec<_> = DeclineReason::ALL
            .into_iter()
            .filter(|r| r.passing())
            .collect();
        assert_eq!(
            passing,
            [DeclineReason::Draining, DeclineReason::AtCapacity]
        );
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
