//! Frames from the gateway, and assistant audio to it.

use super::*;

impl CallMachine {
    // ---------------------------------------------------------------- inbound frames

    /// A frame from the gateway.
    pub fn on_inbound(&mut self, frame: inbound_frame::Frame, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        match frame {
            inbound_frame::Frame::Audio(audio) => {
                // Twilio numbers its chunks from 1; a gap is audio lost on the way here (a
                // slow-consumer drop of `.in` under overload, or the gateway's own drops).
                if audio.chunk > self.last_chunk.saturating_add(1) && self.last_chunk > 0 {
                    let lost = u64::from(audio.chunk - self.last_chunk - 1);
                    self.observe(Observation::InboundAudioLost(lost));
                }
                self.last_chunk = audio.chunk;
                if audio.replayed && audio.timestamp_ms <= self.skip_replayed_until {
                    // Said to the previous owner and already in the transcript.
                    return;
                }
                if self.is_takeover() {
                    // The new session is not configured yet (audio now would precede the
                    // `session.update` that sets its format): keep it for the seeded session.
                    if !audio.payload.is_empty() {
                        self.keep_takeover_audio(audio.timestamp_ms, audio.payload);
                    }
                } else if !self.session.can_send() {
                    // No session to hear it: stale speech is worth less than a short gap.
                    self.observe(Observation::AudioDropped);
                } else if !audio.payload.is_empty() {
                    self.clock.appended(audio.timestamp_ms, audio.payload.len());
                    self.effects.push(Effect::Audio(audio.payload));
                }
            }
            inbound_frame::Frame::Start(start) => {
                if self.stream_started {
                    if start.stream_sid != self.stream_sid && !start.stream_sid.is_empty() {
                        // A re-attach: another gateway holds a new stream of the call, whose
                        // playback buffer is empty. What was queued on the old one and not yet
                        // confirmed played was not heard: cut like a barge-in.
                        self.observe(Observation::ReAttached {
                            from: self.stream_sid.clone(),
                            to: start.stream_sid.clone(),
                            gateway: start.gateway_id.clone(),
                        });
                        self.stream_sid = start.stream_sid;
                        self.barge_in(now);
                        if let Some(transfer) = self.transfer.take() {
                            self.on_transfer_returned(transfer, now);
                        }
                    }
                    return;
                }
                self.stream_sid.clone_from(&start.stream_sid);
                self.observe(Observation::StreamStarted {
                    stream_sid: start.stream_sid.clone(),
                    gateway: start.gateway_id.clone(),
                });
                self.stream_started = true;
                self.start_deadline = None;
                self.last_activity = now;
                if let Some(idle) = self.setup.agent.idle_timeout {
                    self.idle_deadline = Some(now + idle);
                }
                while let Some((item, response, bytes)) = self.prestart.pop_front() {
                    self.send_audio(&item, &response, &bytes);
                }
                self.prestart_bytes = 0;
                if let Some(transfer) = self.transfer.take() {
                    // Taken over while a transfer rang: this stream is the caller coming back.
                    self.on_transfer_returned(transfer, now);
                }
            }
            inbound_frame::Frame::Mark(mark) => {
                if self.playback.echoed(&mark.name) {
                    self.last_activity = now;
                    self.settle_transcripts();
                    self.check_hangup(now);
                }
            }
            inbound_frame::Frame::Dtmf(dtmf) => {
                let valid = dtmf.digit.len() == 1
                    && dtmf
                        .digit
                        .bytes()
                        .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'A'..=b'D'));
                if !valid {
                    self.observe(Observation::InvalidDtmf {
                        digit: dtmf.digit.clone(),
                    });
                    return;
                }
                let text = format!("The caller pressed {} on the keypad.", dtmf.digit);
                // A key pressed before the answering-machine verdict is a person's.
                self.presume_human(now, true);
                self.touch_caller(now);
                self.record_system(text.clone(), now);
                self.send_event(ClientEvent::item_create(Item::user_text(&text)));
                self.request_response(Purpose::Plain, None);
            }
            // The actor keeps it for `ended` (see `call::recording`).
            inbound_frame::Frame::Recorded(_) => {}
            inbound_frame::Frame::TransferResult(result) => {
                self.on_transfer_result(&result.status, now);
            }
            inbound_frame::Frame::Amd(verdict) => self.on_amd(verdict, now),
            inbound_frame::Frame::Stop(stop) => {
                match StopReason::parse(&stop.reason) {
                    // Twilio left the stream for the transfer, whose result is still to come.
                    Some(StopReason::Transfer) if self.transfer.is_some() => return,
                    // Keys are played; the call comes back on a new stream (or the stream
                    // watchdog ends it).
                    Some(StopReason::Digits) => {
                        self.observe(Observation::LeftForKeys);
                        return;
                    }
                    _ => {}
                }
                let reason = match StopReason::parse(&stop.reason) {
                    Some(known) => known.end_reason(),
                    None => {
                        self.observe(Observation::UnknownStopReason {
                            stop: stop.reason.clone(),
                        });
                        EndReason::StreamLost
                    }
                };
                self.observe(Observation::StreamStopped {
                    stop: stop.reason,
                    reason,
                });
                self.finish(reason, now);
            }
        }
    }

    /// The subscription to `.in` ended (the NATS connection is going away).
    pub fn on_inbound_closed(&mut self, now: Instant) {
        self.finish(EndReason::StreamLost, now);
    }

    pub(super) fn touch_caller(&mut self, now: Instant) {
        self.last_activity = now;
        self.idle_stage = 0;
        if let (Some(idle), true) = (self.setup.agent.idle_timeout, self.stream_started) {
            self.idle_deadline = Some(now + idle);
        }
    }

    // ---------------------------------------------------------------- outbound audio

    pub(super) fn send_audio(&mut self, item_id: &str, response_id: &str, bytes: &Bytes) {
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + OUT_CHUNK_BYTES).min(bytes.len());
            let chunk = bytes.slice(offset..end);
            offset = end;
            let name = self.playback.sent(item_id, response_id, chunk.len());
            self.effects.push(Effect::Out(outbound_frame::Frame::Audio(
                switchboard_proto::OutboundAudio { payload: chunk },
            )));
            self.effects.push(Effect::Out(outbound_frame::Frame::Mark(
                switchboard_proto::Mark { name },
            )));
        }
    }

    pub(super) fn hold_audio(&mut self, item_id: &str, response_id: &str, bytes: Bytes) {
        self.prestart_bytes += bytes.len();
        self.prestart
            .push_back((item_id.to_owned(), response_id.to_owned(), bytes));
        while self.prestart_bytes > PRESTART_BUFFER_BYTES {
            let Some((_, _, old)) = self.prestart.pop_front() else {
                break;
            };
            self.prestart_bytes -= old.len();
            self.observe(Observation::OutboundDropped(old.len() as u64));
        }
    }

    pub(super) fn held(&self, pred: impl Fn(&(String, String, Bytes)) -> bool) -> bool {
        self.prestart.iter().any(pred)
    }
}
