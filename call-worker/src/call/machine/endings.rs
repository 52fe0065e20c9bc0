//! How a call ends: the goodbye, the hang-up, a lost stream, the drain, and the end record.

use super::*;

impl CallMachine {
    pub(super) fn begin_goodbye(&mut self, ending: Ending, now: Instant) {
        let reason = ending.reason();
        if !self.goodbye.begin(ending, now) {
            return;
        }
        self.observe(Observation::GoodbyeStarted { reason });
        self.idle_deadline = None;
        self.max_deadline = None;
    }

    /// Says `text` word for word, then hangs up once it has been heard.
    pub(super) fn say_goodbye(&mut self, ending: Ending, text: &str, now: Instant) {
        if self.goodbye.in_progress() {
            return;
        }
        self.begin_goodbye(ending, now);
        self.request_response(Purpose::Goodbye, Some(say_exactly(text)));
    }

    pub(super) fn check_hangup(&mut self, now: Instant) {
        let Some(response_id) = self.goodbye.spoken() else {
            return;
        };
        if !self.playback.response_pending(response_id) && !self.held(|(_, r, _)| r == response_id)
        {
            self.hang_up_now(now);
        }
    }

    pub(super) fn hang_up_now(&mut self, now: Instant) {
        let Some(ending) = self.goodbye.take() else {
            return;
        };
        self.effects.push(Effect::Out(ending.frame()));
        self.finish(ending.reason(), now);
    }

    /// Whether the media stream has started (frames from the gateway are expected from then on).
    pub fn stream_started(&self) -> bool {
        self.stream_started
    }

    /// No frame came from the gateway for [`REATTACH_WINDOW`] and no new stream was attached:
    /// the caller's socket is gone with its gateway.
    pub fn on_stream_gone(&mut self, now: Instant) {
        if self.stream_started {
            self.observe(Observation::StreamGone);
            self.finish(EndReason::StreamLost, now);
        }
    }

    /// The worker is shutting down and the drain deadline passed: end the call now.
    pub fn shutdown(&mut self, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        self.effects
            .push(Effect::Out(hangup_frame(EndReason::WorkerShutdown)));
        self.finish(EndReason::WorkerShutdown, now);
    }

    /// Ends the call: records what is left, then `ended`, and closes the model session.
    pub(super) fn finish(&mut self, reason: EndReason, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        let entries = self.transcripts.finish(&mut self.playback);
        self.publish_transcripts(entries);
        self.report_usage();
        let duration_ms =
            u64::try_from(now.saturating_duration_since(self.accepted_at).as_millis())
                .unwrap_or(u64::MAX);
        self.effects.push(Effect::Event(Body::Ended(CallEnded {
            reason: reason.as_str().to_owned(),
            duration_ms,
            usage: Some(Box::new(self.usage.clone())),
        })));
        self.effects.push(Effect::CloseRealtime);
        self.session.end(reason);
        self.observe(Observation::CallEnded {
            reason,
            duration_ms,
        });
    }
}
