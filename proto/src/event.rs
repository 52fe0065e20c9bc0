//! Helpers shared by everyone who publishes or consumes [`CallEvent`]s.

use crate::{CallEvent, call_event::Body};

/// Gateways number their events from here so they never collide with the worker's sequence.
pub const GATEWAY_SEQ_BASE: u64 = 1_000_000;

/// The `seq` of the `recording` event of a call's stream `attach` (gateways' range, above the
/// status callbacks', below the gateway's own close of a lost call).
pub const fn recording_seq(attach: u32) -> u64 {
    GATEWAY_SEQ_BASE + 800_000 + attach as u64
}

/// Declares one of the contract's word lists: an enum whose variants each stand for one word,
/// with `ALL`, `as_str`, `parse` and `Display`, so a word is typed once.
macro_rules! contract_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every word, for documentation and exhaustive tests.
            pub const ALL: &'static [$name] = &[ $( Self::$variant, )+ ];

            /// The contract's word for it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $word, )+
                }
            }

            /// The value `word` stands for, if it is one.
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.as_str() == word)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

contract_words! {
    /// Why a call ended: `CallEnded.reason`, as the worker records it and dashboards filter on it.
    pub enum EndReason {
        /// Twilio's media stream stopped: the caller hung up.
        CallerHungUp => "caller_hung_up",
        /// The agent called `end_call`.
        EndCall => "end_call",
        /// The caller stayed silent through the idle prompt.
        Idle => "idle",
        /// The agent's `max_call_seconds` passed.
        MaxDuration => "max_duration",
        /// The agent called `transfer_call`.
        Transferred => "transferred",
        /// The model failed (a fatal error, or sessions lost too often).
        ModelError => "model_error",
        /// The model session refused or did not apply the call's configuration (formats, voice,
        /// tools), so the caller could not have been served.
        ModelConfigRejected => "model_config_rejected",
        /// The worker shut down before the call ended.
        WorkerShutdown => "worker_shutdown",
        /// The media stream never started, its subscription ended, or the caller's socket closed
        /// without Twilio's `stop` (gateway stop reason `closed`).
        StreamLost => "stream_lost",
        /// The gateway holding the caller's socket shut down before the call ended (stop reason
        /// `drain_deadline`).
        GatewayShutdown => "gateway_shutdown",
        /// The gateway heard nothing from the worker for `WORKER_SILENCE_MS` and closed the
        /// stream (stop reason `worker_silent`).
        WorkerSilent => "worker_silent",
        /// The gateway could not go on with the stream (stop reason `error`).
        StreamError => "stream_error",
        /// The owning worker was lost and no worker took the call over in time: the caller heard
        /// the apology and was transferred or hung up. Recorded by the gateway.
        WorkerLost => "worker_lost",
        /// An answering machine picked up and the agent left its `voicemail_message` after the
        /// beep.
        VoicemailLeft => "voicemail_left",
        /// An answering machine picked up and the agent (with no `voicemail_message`) hung up.
        AnsweringMachine => "answering_machine",
        /// A fax machine answered; the agent hung up.
        Fax => "fax",
    }
}

contract_words! {
    /// Twilio's answering-machine verdict: `AnsweringMachine.answered_by` (Twilio's
    /// `AnsweredBy`). `DetectMessageEnd` posts the machine verdicts once the greeting ended
    /// (`machine_end_*`); `machine_start` comes with `MachineDetection=Enable`.
    pub enum AnsweredBy {
        /// A person answered.
        Human => "human",
        /// A machine answered; its greeting is still playing.
        MachineStart => "machine_start",
        /// A machine's greeting ended with a beep: it records now.
        MachineEndBeep => "machine_end_beep",
        /// A machine's greeting ended with silence.
        MachineEndSilence => "machine_end_silence",
        /// A machine's greeting ended some other way.
        MachineEndOther => "machine_end_other",
        /// A fax machine answered.
        Fax => "fax",
        /// Twilio could not tell.
        Unknown => "unknown",
    }
}

impl AnsweredBy {
    /// Whether an answering machine picked up.
    pub fn is_machine(self) -> bool {
        matches!(
            self,
            Self::MachineStart
                | Self::MachineEndBeep
                | Self::MachineEndSilence
                | Self::MachineEndOther
        )
    }

    /// Whether the machine's greeting is over, so a message left now is recorded.
    pub fn greeting_over(self) -> bool {
        matches!(
            self,
            Self::MachineEndBeep | Self::MachineEndSilence | Self::MachineEndOther
        )
    }
}

/// Every `<kind>` token [`kind`] gives, in the order of the `oneof body` field numbers.
pub const KINDS: [&str; 14] = [
    "started",
    "transcript",
    "tool",
    "outcome",
    "turn",
    "ended",
    "rejected",
    "status",
    "owner",
    "dispatched",
    "usage",
    "recording",
    "amd",
    "transfer",
];

contract_words! {
    /// Why a media stream ended: `StreamStop.reason`, the gateway's last frame to the worker.
    pub enum StopReason {
        /// Twilio sent `stop`: the caller hung up.
        Stop => "stop",
        /// The caller's socket closed without `stop`.
        Closed => "closed",
        /// The gateway could not go on with the stream (a socket or publishing error).
        Error => "error",
        /// Nothing came from the worker for `WORKER_SILENCE_MS`.
        WorkerSilent => "worker_silent",
        /// The gateway shut down and its drain deadline passed.
        DrainDeadline => "drain_deadline",
        /// The worker asked for a hang-up, and the audio before it has played.
        Hangup => "hangup",
        /// The worker asked for a transfer, and Twilio left the stream for it.
        Transfer => "transfer",
        /// The worker sent keys (`<Play digits>`): Twilio left the stream to play them, and
        /// the call comes back on a new stream.
        Digits => "digits",
    }
}

contract_words! {
    /// How a transfer went: `TransferResult.status`. `answered` comes from the dialed number's
    /// status callback; the others are Twilio's `DialCallStatus` words.
    pub enum DialStatus {
        /// The human picked up.
        Answered => "answered",
        /// The bridged call ended (the human had answered).
        Completed => "completed",
        /// The number was busy.
        Busy => "busy",
        /// Nobody answered within the timeout.
        NoAnswer => "no-answer",
        /// The number could not be dialed.
        Failed => "failed",
        /// The dial was canceled (the caller hung up, or the call was updated meanwhile).
        Canceled => "canceled",
    }
}

impl DialStatus {
    /// Whether the human took the call (otherwise the caller comes back to the agent).
    pub fn connected(self) -> bool {
        matches!(self, Self::Answered | Self::Completed)
    }
}

impl StopReason {
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
            // Not an end: the worker waits for the call's next stream.
            Self::Digits => EndReason::StreamLost,
        }
    }
}

contract_words! {
    /// Why a worker declined an offer: `OfferReply.reason`.
    pub enum DeclineReason {
        /// The offer is malformed (an invalid CallSid).
        BadOffer => "bad_offer",
        /// The worker is shutting down.
        Draining => "draining",
        /// The worker runs as many calls as it may.
        AtCapacity => "at_capacity",
        /// No agent of the worker answers the dialed number.
        NoAgent => "no_agent",
        /// The worker could not set the call up.
        Error => "error",
        /// Another worker's claim of the offered epoch won (see `CallOwner`).
        ClaimLost => "claim_lost",
    }
}

impl DeclineReason {
    /// Whether the reason concerns this worker only, so another worker may take the call.
    pub fn passing(self) -> bool {
        matches!(self, Self::Draining | Self::AtCapacity)
    }
}

contract_words! {
    /// Why a worker owns a call: `CallOwner.reason`, and `CallOffer.takeover` (where a new call
    /// is the empty string, not `offer`).
    pub enum OwnerReason {
        /// The worker accepted the new call (epoch 0).
        Offer => "offer",
        /// The previous owner went silent and did not answer a probe: it died or was cut off.
        WorkerLost => "worker_lost",
        /// The previous owner was draining and asked for the call to be handed over.
        HandOver => "hand_over",
    }
}

contract_words! {
    /// The contract's `ToolError.code` values (`ToolFailure.code` in the record): what the model
    /// is told when a tool call fails, so it can recover. A tool may send codes of its own too.
    pub enum ToolErrorCode {
        /// The request was not a `ToolCall`.
        InvalidRequest => "invalid_request",
        /// The arguments were not JSON or did not match the tool's schema.
        InvalidArguments => "invalid_arguments",
        /// The thing the tool looked for does not exist.
        NotFound => "not_found",
        /// The tool ran and failed (or answered something that is not a `ToolResult`).
        Failed => "failed",
        /// The tool did not finish within its timeout.
        Timeout => "timeout",
        /// Nobody serves the tool, or something it depends on (a database, an API) is down.
        Unavailable => "unavailable",
        /// The handler panicked; the tool server caught it and kept serving.
        Panicked => "panicked",
        /// The model called a tool the call does not offer (set by the call-worker).
        UnknownTool => "unknown_tool",
        /// A `handoff` named an agent the current agent may not hand over to (set by the
        /// call-worker).
        UnknownAgent => "unknown_agent",
        /// A `handoff` came while another was still in progress (set by the call-worker).
        Busy => "busy",
    }
}

contract_words! {
    /// A kind of personal data an agent's `redact` list removes from the call's record
    /// (`TranscriptEntry.redacted`, `ToolInvocation.redacted`, ...).
    pub enum PiiKind {
        /// A telephone number.
        Phone => "phone",
        /// An email address.
        Email => "email",
        /// A payment card number (Luhn-valid).
        Card => "card",
        /// A US social security number.
        Ssn => "ssn",
    }
}

impl PiiKind {
    /// What replaces a redacted value in text: `[phone]`, `[email]`, `[card]`, `[ssn]`.
    pub const fn marker(self) -> &'static str {
        match self {
            Self::Phone => "[phone]",
            Self::Email => "[email]",
            Self::Card => "[card]",
            Self::Ssn => "[ssn]",
        }
    }
}

/// Bits of an event's `seq` below the owner's epoch: a worker numbers its events
/// `epoch << 32 | n`.
pub const EPOCH_SHIFT: u32 = 32;

/// The `seq` of the `n`th event (from 1) the owner of `epoch` publishes.
pub fn owner_seq(epoch: u32, n: u32) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT) | u64::from(n)
}

/// The owner epoch a worker's event `seq` belongs to (gateway events, below 2^32, give 0).
pub fn epoch_of(seq: u64) -> u32 {
    (seq >> EPOCH_SHIFT) as u32
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
        Body::Owner(_) => "owner",
        Body::Dispatched(_) => "dispatched",
        Body::Usage(_) => "usage",
        Body::Recording(_) => "recording",
        Body::Amd(_) => "amd",
        Body::Transfer(_) => "transfer",
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
        for &r in StopReason::ALL {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(StopReason::parse("bogus"), None);
        // `digits` is no end: the call comes back on a new stream (a worker that does not know
        // the word ends the call as it would for a vanished stream).
        let ends: std::collections::HashSet<EndReason> = StopReason::ALL
            .iter()
            .filter(|r| **r != StopReason::Digits)
            .map(|r| r.end_reason())
            .collect();
        assert_eq!(ends.len(), StopReason::ALL.len() - 1);
        assert_eq!(StopReason::Digits.end_reason(), EndReason::StreamLost);
        assert_eq!(StopReason::Stop.end_reason(), EndReason::CallerHungUp);
    }

    #[test]
    fn answered_by_words_round_trip_and_sort_machines() {
        for &a in AnsweredBy::ALL {
            assert_eq!(AnsweredBy::parse(a.as_str()), Some(a));
            assert!(!a.greeting_over() || a.is_machine(), "{a}");
        }
        let machines = AnsweredBy::ALL.iter().filter(|a| a.is_machine()).count();
        assert_eq!(machines, 4);
        assert!(!AnsweredBy::Fax.is_machine() && !AnsweredBy::Unknown.is_machine());
        assert!(!AnsweredBy::MachineStart.greeting_over());
        assert_eq!(AnsweredBy::parse("machine"), None);
    }

    #[test]
    fn decline_reasons_round_trip() {
        for &r in DeclineReason::ALL {
            assert_eq!(DeclineReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(DeclineReason::parse("no_workers"), None);
        let passing: Vec<_> = DeclineReason::ALL
            .iter()
            .copied()
            .filter(|r| r.passing())
            .collect();
        assert_eq!(
            passing,
            [DeclineReason::Draining, DeclineReason::AtCapacity]
        );
    }

    #[test]
    fn end_and_owner_reasons_round_trip() {
        for &r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
        }
        for &r in OwnerReason::ALL {
            assert_eq!(OwnerReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(OwnerReason::parse(""), None);
        for &c in ToolErrorCode::ALL {
            assert_eq!(ToolErrorCode::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn owners_number_their_events_apart() {
        assert_eq!(owner_seq(0, 1), 1);
        assert_eq!(owner_seq(1, 1), (1 << 32) + 1);
        assert_eq!(epoch_of(owner_seq(7, 3)), 7);
        assert_eq!(epoch_of(GATEWAY_SEQ_BASE + 5), 0);
        assert!(owner_seq(1, 1) > owner_seq(0, u32::MAX));
    }

    #[test]
    fn every_body_has_its_kind() {
        let bodies = [
            Body::Started(Default::default()),
            Body::Transcript(Default::default()),
            Body::Tool(Default::default()),
            Body::Outcome(Default::default()),
            Body::Turn(Default::default()),
            Body::Ended(Default::default()),
            Body::Rejected(Default::default()),
            Body::Status(Default::default()),
            Body::Owner(Default::default()),
            Body::Dispatched(Default::default()),
            Body::Usage(Default::default()),
            Body::Recording(Default::default()),
            Body::Amd(Default::default()),
            Body::Transfer(Default::default()),
        ];
        let kinds: Vec<&str> = bodies.iter().map(kind).collect();
        assert_eq!(kinds, KINDS);
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
