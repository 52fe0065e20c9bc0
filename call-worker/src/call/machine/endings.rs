//! How a call ends: the goodbye, the hang-up, a transfer and its result, a lost stream, the
//! drain, and the end record.

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
        if let Ending::Transfer {
            to,
            timeout,
            whisper,
            ..
        } = ending
        {
            // The call stays ours until the human answers: no answer brings the caller back.
            let line = if whisper.is_empty() {
                format!("Transferring the caller to {}.", to.label())
            } else {
                format!(
                    "Transferring the caller to {}, who hears first: \"{whisper}\"",
                    to.label()
                )
            };
            self.record_system(line, now);
            // Written ahead: an owner taking the call over learns from it that the caller
            // coming back on a new stream returns from this transfer.
            let ringing = transfer_event(&to, self.transfer_outcome, None);
            self.effects.push(Effect::Event(Body::Transfer(ringing)));
            self.transfer = Some(Transfer::dialing(to, self.transfer_outcome, timeout, now));
            return;
        }
        self.finish(ending.reason(), now);
    }

    /// Whether the media stream has started (frames from the gateway are expected from then on).
    pub fn stream_started(&self) -> bool {
        self.stream_started
    }

    /// Whether frames from the gateway are expected now: the stream started and no transfer
    /// is ringing (a transfer has its own deadline).
    pub fn watches_stream(&self) -> bool {
        self.stream_started && self.transfer.is_none()
    }

    /// A system line in the record (not said to the model).
    pub(super) fn record_system(&mut self, text: String, now: Instant) {
        self.effects
            .push(Effect::Event(Body::Transcript(TranscriptEntry {
                redacted: Vec::new(),
                role: Role::System as i32,
                text,
                item_id: String::new(),
                interrupted: false,
                heard_ms: 0,
                offset_ms: self.offset_ms(now),
                audio_end_ms: 0,
            })));
    }

    /// The gateway reported how the transfer went.
    pub(super) fn on_transfer_result(&mut self, status: &str, now: Instant) {
        let Some(status) = switchboard_proto::event::DialStatus::parse(status) else {
            self.observe(Observation::UnknownTransferResult {
                status: status.to_owned(),
            });
            return;
        };
        if self.transfer.is_none() {
            self.observe(Observation::TransferResultWithoutTransfer { status });
            return;
        }
        self.observe(Observation::TransferResult { status });
        let Some(transfer) = &mut self.transfer else {
            return;
        };
        match transfer.on_result(status, now) {
            Resolution::Connected => {
                let to = transfer.destination().clone();
                let sets_outcome = transfer.own_outcome();
                let answered = transfer_event(&to, sets_outcome, Some(status));
                self.effects.push(Effect::Event(Body::Transfer(answered)));
                let label = to.label();
                self.record_system(format!("The transfer to {label} was answered."), now);
                self.transfer = None;
                self.finish(EndReason::Transferred, now);
            }
            Resolution::Returning | Resolution::Ignored => {}
        }
    }

    /// A new stream came while a transfer rang: the caller is back with the agent, who says so.
    pub(super) fn on_transfer_returned(&mut self, transfer: Transfer, now: Instant) {
        let status = transfer.returned_status();
        let to = transfer.destination().clone();
        self.observe(Observation::TransferReturned { status });
        let result = transfer_event(&to, transfer.own_outcome(), Some(status));
        self.effects.push(Effect::Event(Body::Transfer(result)));
        self.record_system(
            format!(
                "The transfer to {} did not connect ({status}); the caller is back with the agent.",
                to.label()
            ),
            now,
        );
        if transfer.own_outcome() {
            self.set_outcome(TRANSFER_FAILED_OUTCOME, status.as_str());
        }
        self.max_deadline = self.setup.agent.max_call.map(|d| self.accepted_at + d);
        self.touch_caller(now);
        let tell = Some(instructions(returned_instructions(&to, status)));
        if self.is_takeover() {
            // The session is not configured yet: asked once it is seeded.
            self.responses.defer(Purpose::Plain, tell);
        } else {
            self.request_response(Purpose::Plain, tell);
        }
    }

    /// No frame came from the gateway for [`REATTACH_WINDOW`] and no new stream was attached:
    /// the caller's socket is gone with its gateway.
    pub fn on_stream_gone(&mut self, now: Instant) {
        if self.watches_stream() {
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
            // Added by the actor once the stream's recording is reported (`call::recording`).
            recording: None,
        })));
        self.effects.push(Effect::CloseRealtime);
        self.session.end(reason);
        self.observe(Observation::CallEnded {
            reason,
            duration_ms,
        });
    }
}
