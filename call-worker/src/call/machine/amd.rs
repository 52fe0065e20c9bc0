//! Acting on Twilio's answering-machine verdict (see [`crate::call::amd`]): the held greeting,
//! the voicemail message after the beep, the hang-up on a machine or a fax.

use switchboard_proto::AnsweringMachine;
use switchboard_proto::event::AnsweredBy;

use super::*;
use crate::call::amd::{AmdWait, Verdict};
use crate::call::ending::hangup_frame;

/// The outcome recorded when the agent left its voicemail message (unless the agent set one).
pub const VOICEMAIL_OUTCOME: &str = "voicemail";
/// The outcome recorded when a machine or a fax answered and the agent hung up.
pub const NOT_REACHED_OUTCOME: &str = "not_reached";

impl CallMachine {
    /// Whether the greeting waits for the verdict.
    pub(super) fn greeting_held(&self) -> bool {
        self.amd.holds_greeting()
    }

    /// Asks for the agent's greeting, unless it was asked for already or is still held. Before
    /// the session is configured the request waits in the queue (`start_session` sends it).
    pub(super) fn greet(&mut self) {
        if self.greeting != GreetingState::None || self.greeting_held() {
            return;
        }
        let Some(params) = self.greeting_params() else {
            return;
        };
        self.greeting = GreetingState::Requested;
        self.request_response(Purpose::Greeting, Some(params));
    }

    /// The verdict wait's timeout passed, or the caller started speaking: greet as if a person
    /// answered.
    pub(super) fn presume_human(&mut self, now: Instant, caller_spoke: bool) {
        if self.amd.presume_human(now, caller_spoke) {
            self.observe(Observation::AmdPresumedHuman { caller_spoke });
            self.greet();
        }
    }

    /// Twilio's verdict, forwarded by the gateway.
    pub(super) fn on_amd(&mut self, verdict: AnsweringMachine, now: Instant) {
        let Some(answered_by) = AnsweredBy::parse(&verdict.answered_by) else {
            self.observe(Observation::UnknownAnsweredBy {
                answered_by: verdict.answered_by,
            });
            return;
        };
        if self.goodbye.in_progress() || self.transfer.is_some() {
            // The call is ending already; the verdict is on the record through the `amd` event.
            return;
        }
        let has_message = self.setup.agent.voicemail_message.is_some();
        let action = self.amd.on_verdict(answered_by, has_message);
        self.observe(Observation::AmdVerdict {
            answered_by,
            detection_ms: verdict.detection_ms,
        });
        match action {
            Verdict::Ignore | Verdict::Hold => {}
            Verdict::Greet => self.greet(),
            Verdict::LeaveMessage => self.leave_voicemail(answered_by, now),
            Verdict::HangUp(reason) => {
                self.stop_for_machine(answered_by, NOT_REACHED_OUTCOME, now);
                self.effects.push(Effect::Out(hangup_frame(reason)));
                self.finish(reason, now);
            }
        }
    }

    /// The machine records now: cut whatever the agent was saying and speak the voicemail
    /// message word for word; the goodbye path hangs up once its last mark is echoed.
    fn leave_voicemail(&mut self, answered_by: AnsweredBy, now: Instant) {
        let Some(message) = self.setup.agent.voicemail_message.clone() else {
            return;
        };
        self.stop_for_machine(answered_by, VOICEMAIL_OUTCOME, now);
        self.say_goodbye(Ending::Voicemail, &message, now);
    }

    /// Stops the agent talking to a machine and puts on the record who answered and what the
    /// call came to (`outcome`, unless the agent set one).
    fn stop_for_machine(&mut self, answered_by: AnsweredBy, outcome: &str, now: Instant) {
        self.silence_agent(now);
        let what = if outcome == VOICEMAIL_OUTCOME {
            "leaving the voicemail message"
        } else {
            "hanging up without a message"
        };
        self.record_system(format!("Answered by {answered_by}: {what}."), now);
        if !self.outcome_set {
            self.set_outcome(outcome, answered_by.as_str());
        }
    }

    /// Stops the agent talking to a machine: the greeting is never to be said, queued requests
    /// are dropped, the running response is cancelled and what is queued at Twilio cleared.
    fn silence_agent(&mut self, now: Instant) {
        self.greeting = GreetingState::Done;
        self.responses.drop_deferred();
        if self.responses.active().is_some() {
            self.send_event(ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            });
        }
        self.barge_in(now);
    }

    /// A response started while the agent has stopped talking to a machine: anything but the
    /// voicemail message is cancelled (a request sent before the verdict, a VAD response to
    /// the machine's greeting).
    pub(super) fn cancel_if_talking_to_machine(&mut self, purpose: Option<Purpose>, id: &str) {
        let to_machine = match self.amd {
            AmdWait::Settled(by) => by.is_machine(),
            AmdWait::MachineGreeting => true,
            AmdWait::Off | AmdWait::Waiting { .. } | AmdWait::PresumedHuman => false,
        };
        if to_machine && purpose != Some(Purpose::Goodbye) {
            self.send_event(ClientEvent::ResponseCancel {
                event_id: None,
                response_id: Some(id.to_owned()),
            });
        }
    }
}
