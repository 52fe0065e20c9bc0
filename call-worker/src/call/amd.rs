//! Waiting for Twilio's answering-machine verdict on an outbound call.
//!
//! The dialer creates its calls with asynchronous AMD (`MachineDetection=DetectMessageEnd`,
//! `AsyncAmd=true`): Twilio connects the media stream when the call is answered and posts the
//! verdict later, a moment after a person's first words, or after a machine's greeting has
//! ended (with its beep). The gateway forwards it to the call's owner as an `InboundFrame`.
//!
//! [`AmdWait`] holds the greeting until one of three things happens: the verdict, the agent's
//! `amd_timeout_seconds`, or the caller speaking (or pressing a key) first: a person who says
//! "Hello?" should not wait for Twilio. The last two only presume a person: the verdict stays
//! authoritative whenever it arrives, so a machine verdict after the agent has started talking
//! (a long voicemail greeting outlasts the timeout, and it is speech too) still cuts the agent
//! off and leaves the voicemail message after the beep, where the machine records.

use switchboard_proto::event::{AnsweredBy, EndReason};
use tokio::time::Instant;

/// Where the call stands with the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdWait {
    /// No detection was asked for (inbound calls, `POST /calls`, takeovers): greet at once.
    Off,
    /// The greeting waits for the verdict until `deadline`.
    Waiting { deadline: Instant },
    /// The timeout passed or the caller spoke: the agent greeted as if a person answered, and
    /// a machine verdict may still come.
    PresumedHuman,
    /// A machine answered and its greeting still plays (`machine_start`): the agent stays
    /// silent until the greeting's end, to leave its message then.
    MachineGreeting,
    /// The verdict came and was acted on.
    Settled(AnsweredBy),
}

/// What the call does about a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A person (or Twilio could not tell): greet, if not greeted yet.
    Greet,
    /// Stay silent until the machine's greeting ends.
    Hold,
    /// Speak the agent's voicemail message, then hang up when it has been heard.
    LeaveMessage,
    /// Hang up at once, for this reason.
    HangUp(EndReason),
    /// Nothing to do (a verdict after the call's own was acted on, or not asked for).
    Ignore,
}

impl AmdWait {
    /// The state of a call accepted at `now`.
    pub fn new(async_amd: bool, timeout: std::time::Duration, now: Instant) -> Self {
        if async_amd {
            Self::Waiting {
                deadline: now + timeout,
            }
        } else {
            Self::Off
        }
    }

    /// Whether the greeting must wait.
    pub fn holds_greeting(self) -> bool {
        matches!(self, Self::Waiting { .. } | Self::MachineGreeting)
    }

    /// When the wait ends without a verdict.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Self::Waiting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// The timeout passed (`now`) or the caller started speaking: returns true when this ends
    /// the wait, so the agent greets.
    pub fn presume_human(&mut self, now: Instant, caller_spoke: bool) -> bool {
        match *self {
            Self::Waiting { deadline } if caller_spoke || deadline <= now => {
                *self = Self::PresumedHuman;
                true
            }
            _ => false,
        }
    }

    /// The verdict arrived; `has_message` tells whether the agent has a voicemail message.
    pub fn on_verdict(&mut self, answered_by: AnsweredBy, has_message: bool) -> Verdict {
        if matches!(self, Self::Off | Self::Settled(_)) {
            return Verdict::Ignore;
        }
        let verdict = match answered_by {
            AnsweredBy::Human | AnsweredBy::Unknown => Verdict::Greet,
            AnsweredBy::Fax => Verdict::HangUp(EndReason::Fax),
            machine if !has_message => {
                debug_assert!(machine.is_machine());
                Verdict::HangUp(EndReason::AnsweringMachine)
            }
            AnsweredBy::MachineStart => Verdict::Hold,
            _ => Verdict::LeaveMessage,
        };
        *self = match verdict {
            Verdict::Hold => Self::MachineGreeting,
            _ => Self::Settled(answered_by),
        };
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn waiting(now: Instant) -> AmdWait {
        AmdWait::new(true, Duration::from_secs(5), now)
    }

    #[test]
    fn without_detection_nothing_waits() {
        let now = Instant::now();
        let mut off = AmdWait::new(false, Duration::from_secs(5), now);
        assert!(!off.holds_greeting());
        assert_eq!(off.deadline(), None);
        assert_eq!(
            off.on_verdict(AnsweredBy::MachineEndBeep, true),
            Verdict::Ignore
        );
    }

    #[test]
    fn verdicts_map_to_what_the_agent_does() {
        let now = Instant::now();
        let case = |by, message| waiting(now).on_verdict(by, message);
        assert_eq!(case(AnsweredBy::Human, true), Verdict::Greet);
        assert_eq!(case(AnsweredBy::Unknown, false), Verdict::Greet);
        assert_eq!(case(AnsweredBy::Fax, true), Verdict::HangUp(EndReason::Fax));
        for by in [
            AnsweredBy::MachineStart,
            AnsweredBy::MachineEndBeep,
            AnsweredBy::MachineEndSilence,
            AnsweredBy::MachineEndOther,
        ] {
            assert_eq!(
                case(by, false),
                Verdict::HangUp(EndReason::AnsweringMachine),
                "{by}"
            );
        }
        assert_eq!(
            case(AnsweredBy::MachineEndSilence, true),
            Verdict::LeaveMessage
        );
        assert_eq!(
            case(AnsweredBy::MachineEndOther, true),
            Verdict::LeaveMessage
        );
    }

    #[test]
    fn a_machine_greeting_holds_until_its_end() {
        let now = Instant::now();
        let mut amd = waiting(now);
        assert_eq!(
            amd.on_verdict(AnsweredBy::MachineStart, true),
            Verdict::Hold
        );
        assert!(amd.holds_greeting());
        assert_eq!(
            amd.deadline(),
            None,
            "the machine's end has no timeout of its own"
        );
        assert!(!amd.presume_human(now + Duration::from_secs(60), true));
        assert_eq!(
            amd.on_verdict(AnsweredBy::MachineEndBeep, true),
            Verdict::LeaveMessage
        );
        assert_eq!(amd.on_verdict(AnsweredBy::Human, true), Verdict::Ignore);
    }

    #[test]
    fn timeout_or_speech_presumes_a_person_until_the_verdict() {
        let now = Instant::now();
        let mut amd = waiting(now);
        assert_eq!(amd.deadline(), Some(now + Duration::from_secs(5)));
        assert!(!amd.presume_human(now + Duration::from_secs(4), false));
        assert!(amd.presume_human(now + Duration::from_secs(5), false));
        assert!(!amd.holds_greeting());
        assert!(
            !amd.presume_human(now + Duration::from_secs(6), true),
            "once"
        );
        // A machine's verdict after its long greeting still counts.
        assert_eq!(
            amd.on_verdict(AnsweredBy::MachineEndBeep, true),
            Verdict::LeaveMessage
        );

        let mut amd = waiting(now);
        assert!(amd.presume_human(now, true));
        assert_eq!(amd.on_verdict(AnsweredBy::Human, true), Verdict::Greet);
    }
}
