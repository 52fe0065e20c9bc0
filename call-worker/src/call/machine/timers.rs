//! The call's deadlines: the stream's start, a ringing transfer, the goodbye, a reconnect, the
//! filler line, idle prompts and the call's maximum length.

use super::*;

impl CallMachine {
    /// Handles every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        if self.start_deadline.is_some_and(|d| d <= now) {
            self.observe(Observation::StreamNeverStarted);
            self.start_deadline = None;
            self.finish(EndReason::StreamLost, now);
            return;
        }
        if let Some(transfer) = self.transfer.take_if(|t| t.deadline() <= now) {
            let reason = match transfer {
                Transfer::Dialing { .. } => EndReason::Transferred,
                Transfer::Returning { .. } => EndReason::StreamLost,
            };
            self.observe(Observation::TransferResultOverdue { reason });
            self.finish(reason, now);
            return;
        }
        if self.goodbye.deadline().is_some_and(|d| d <= now) {
            self.observe(Observation::GoodbyeUnconfirmed);
            self.hang_up_now(now);
            return;
        }
        if self.session.reconnect_due(now) {
            self.effects.push(Effect::Reconnect);
        }
        self.maybe_filler(now);
        if self.amd.deadline().is_some_and(|d| d <= now) {
            self.presume_human(now, false);
        }
        if self.max_deadline.is_some_and(|d| d <= now) {
            self.max_deadline = None;
            self.say_goodbye(Ending::MaxDuration, MAX_DURATION_GOODBYE, now);
        }
        if let Some(d) = self.idle_deadline
            && d <= now
        {
            self.on_idle(now);
        }
    }

    /// What besides the responses keeps the assistant from starting a line of its own.
    pub(super) fn floor(&self) -> Floor {
        Floor {
            session_ready: self.session.can_send(),
            playing: self.playback.has_pending(),
            ending: self.goodbye.in_progress(),
        }
    }

    /// Says the filler line for a tool round whose business tools are slow, at most once per
    /// round, and only while the model is silent. The round's own `response.create` then waits
    /// for the filler's `response.done` like any other request.
    pub(super) fn maybe_filler(&mut self, now: Instant) {
        if self.tools_rounds.filler_deadline().is_none_or(|d| d > now) {
            return;
        }
        let silent = self.responses.silent(self.floor());
        let say = self.tools_rounds.filler_due(now, silent);
        if say {
            self.observe(Observation::FillerLine);
            self.send_response_create(Purpose::Filler, Some(say_exactly(FILLER_LINE)));
        }
    }

    pub(super) fn on_idle(&mut self, now: Instant) {
        let Some(idle) = self.setup.agent.idle_timeout else {
            self.idle_deadline = None;
            return;
        };
        // A lost session waiting for its replacement counts as busy too: the caller may have
        // spoken to it.
        if !self.responses.silent(self.floor()) || self.greeting_held() {
            self.idle_deadline = Some(now + IDLE_RECHECK);
            return;
        }
        let quiet_until = self.last_activity + idle;
        if quiet_until > now {
            self.idle_deadline = Some(quiet_until);
            return;
        }
        if self.idle_stage == 0 {
            self.idle_stage = 1;
            self.last_activity = now;
            self.idle_deadline = Some(now + idle);
            self.request_response(Purpose::Prompt, Some(say_exactly(IDLE_PROMPT)));
        } else {
            self.idle_deadline = None;
            self.say_goodbye(Ending::Idle, IDLE_GOODBYE, now);
        }
    }
}
