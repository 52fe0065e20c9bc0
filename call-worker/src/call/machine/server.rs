//! What the Realtime session says: errors, responses, audio, caller speech, barge-in.

use super::*;

impl CallMachine {
    // ---------------------------------------------------------------- realtime events

    /// Something from the Realtime socket.
    pub fn on_realtime(&mut self, event: RealtimeEvent, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        match event {
            RealtimeEvent::Closed { code, reason } => {
                let why = format!("socket closed ({code:?}): {reason}");
                self.session_lost(&why, now);
            }
            RealtimeEvent::Server(ev) => self.on_server_event(*ev, now),
            RealtimeEvent::AudioDelta {
                response_id,
                item_id,
                audio,
            } => self.on_audio_delta(response_id, item_id, audio, now),
        }
    }

    pub(super) fn model_error(&mut self, now: Instant) {
        self.fail(EndReason::ModelError, now);
    }

    /// Hangs up on the caller because the model cannot serve the call.
    pub(super) fn fail(&mut self, reason: EndReason, now: Instant) {
        self.effects.push(Effect::Out(outbound_frame::Frame::Hangup(
            switchboard_proto::Hangup {
                reason: "error".into(),
            },
        )));
        self.finish(reason, now);
    }

    pub(super) fn on_server_event(&mut self, ev: ServerEvent, now: Instant) {
        match ev {
            ServerEvent::Error { error, .. } => self.on_error(error, now),
            ServerEvent::SessionCreated { session, .. } => {
                self.observe(Observation::SessionCreated { id: session.id });
            }
            ServerEvent::SessionUpdated { session, .. } => {
                if let Err(why) = self.session_check.on_updated(&session) {
                    self.observe(Observation::SessionConfigRejected {
                        why: why.to_string(),
                    });
                    self.fail(EndReason::ModelConfigRejected, now);
                } else {
                    self.observe(Observation::SessionConfirmed);
                }
            }
            ServerEvent::SpeechStarted { item_id, .. } => {
                let offset = self.offset_ms(now);
                self.transcripts.speech_started(item_id, offset);
                self.touch_caller(now);
                self.barge_in(now);
                self.presume_human(now, true);
            }
            ServerEvent::SpeechStopped {
                item_id,
                audio_end_ms,
                ..
            } => {
                self.clock.speech_stopped(&item_id, audio_end_ms);
                self.speech_stopped_at = Some(now);
                self.touch_caller(now);
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
                usage,
                ..
            } => {
                if let Some(u) = &usage {
                    crate::usage::add_transcription(&mut self.usage, u);
                    crate::usage::add_transcription(&mut self.unreported, u);
                }
                let offset = self
                    .transcripts
                    .speech_done(&item_id)
                    .unwrap_or_else(|| self.offset_ms(now));
                let audio_end_ms = self.clock.take_speech_end(&item_id);
                self.effects
                    .push(Effect::Event(Body::Transcript(TranscriptEntry {
                        redacted: Vec::new(),
                        role: Role::User as i32,
                        text: transcript,
                        item_id,
                        interrupted: false,
                        heard_ms: 0,
                        offset_ms: offset,
                        audio_end_ms,
                    })));
            }
            ServerEvent::InputTranscriptionFailed { item_id, error, .. } => {
                // The model heard the audio anyway; only the record lacks the words.
                self.transcripts.speech_done(&item_id);
                self.observe(Observation::TranscriptionFailed {
                    item_id,
                    code: error.code,
                    message: error.message,
                });
            }
            ServerEvent::ResponseCreated { response, .. } => {
                let purpose = self.responses.on_created(&response);
                self.cancel_if_talking_to_machine(purpose, &response.id);
                match purpose {
                    Some(Purpose::Greeting) if self.greeting == GreetingState::Requested => {
                        self.greeting = GreetingState::Response;
                        self.greeting_response = Some(response.id);
                    }
                    Some(Purpose::Goodbye) => self.goodbye.on_created(&response.id),
                    _ => {}
                }
            }
            ServerEvent::OutputAudioDelta {
                response_id,
                item_id,
                delta,
                ..
            } => match base64::engine::general_purpose::STANDARD.decode(&delta) {
                Ok(audio) => self.on_audio_delta(response_id, item_id, Bytes::from(audio), now),
                Err(e) => {
                    self.observe(Observation::BadAudio {
                        error: e.to_string(),
                    });
                }
            },
            ServerEvent::OutputAudioTranscriptDelta {
                response_id,
                item_id,
                delta,
                ..
            } if !self.transcripts.recorded(&item_id) => {
                let offset = self.offset_ms(now);
                self.transcripts
                    .delta(&item_id, &response_id, offset, &delta);
            }
            ServerEvent::OutputAudioTranscriptDone {
                response_id,
                item_id,
                transcript,
                ..
            } if !self.transcripts.recorded(&item_id) => {
                let offset = self.offset_ms(now);
                self.transcripts
                    .transcript(&item_id, &response_id, offset, transcript, false);
            }
            ServerEvent::FunctionCallArgumentsDone {
                response_id,
                call_id,
                name,
                arguments,
                ..
            } if !name.is_empty() => {
                self.start_tool_call(&response_id, &call_id, &name, &arguments, now);
            }
            ServerEvent::ResponseDone { response, .. } => self.on_response_done(response, now),
            _ => {}
        }
    }

    pub(super) fn on_error(&mut self, error: ErrorDetail, now: Instant) {
        let code = error.code.clone().unwrap_or_else(|| "unknown".into());
        self.observe(Observation::RealtimeError {
            code: code.clone(),
            kind: error.kind.clone(),
            message: error.message.clone(),
        });
        if code == "session_expired" {
            // The close (1001) follows; a new session replaces this one at once.
            self.session_lost("session expired", now);
            return;
        }
        if classify_error(&error) == ErrorClass::Fatal {
            self.observe(Observation::FatalRealtimeError {
                code,
                message: error.message,
            });
            self.model_error(now);
            return;
        }
        if let Some(why) = self.session_check.on_error(&error) {
            self.observe(Observation::SessionConfigRejected {
                why: why.to_string(),
            });
            self.fail(EndReason::ModelConfigRejected, now);
            return;
        }
        match self.responses.on_error(&error) {
            Refusal::NotOurs => {}
            // Another response (server VAD's) runs: ours is asked again after its
            // `response.done`, whether the refusal came before or after its `response.created`.
            Refusal::Busy(purpose) => {
                self.observe(Observation::ResponseBusy { purpose });
            }
            Refusal::Failed(purpose) => {
                match purpose {
                    Purpose::Goodbye => self.hang_up_now(now),
                    Purpose::Greeting => self.greeting = GreetingState::Done,
                    Purpose::Plain | Purpose::Prompt | Purpose::Filler => {}
                }
                self.pump();
            }
        }
    }

    /// Assistant audio (decoded) of `item_id`.
    pub(super) fn on_audio_delta(
        &mut self,
        response_id: String,
        item_id: String,
        bytes: Bytes,
        now: Instant,
    ) {
        if self.transcripts.silenced(&item_id) {
            // Still arriving after a barge-in: the caller must not hear it.
            return;
        }
        if bytes.is_empty() {
            return;
        }
        if !self.session_check.confirmed() {
            // The session's formats are not confirmed yet: this might not be mu-law, and the
            // caller must not hear noise (a refused configuration ends the call).
            self.observe(Observation::UnconfirmedAudioDropped);
            return;
        }
        let offset = self.offset_ms(now);
        self.transcripts.track(&item_id, &response_id, offset);
        if !self.responses_with_audio.contains(&response_id) {
            self.responses_with_audio.insert(response_id.clone());
            self.first_audio_of_response(&response_id, now);
        }
        if self.stream_started {
            self.send_audio(&item_id, &response_id, &bytes);
        } else {
            self.hold_audio(&item_id, &response_id, bytes);
        }
    }

    pub(super) fn first_audio_of_response(&mut self, response_id: &str, now: Instant) {
        if self.greeting == GreetingState::Response
            && self.greeting_response.as_deref() == Some(response_id)
        {
            self.greeting = GreetingState::Done;
            let offered = self.setup.offer.offered_at_ms;
            let latency = if offered > 0 {
                // The offer's trip to this worker (wall clocks of two hosts), then the time
                // since accepting it (this host's monotonic clock).
                let trip = u64::try_from(self.setup.accepted_at_ms - offered).unwrap_or(0);
                u32::try_from(trip + u64::from(self.offset_ms(now))).unwrap_or(u32::MAX)
            } else {
                self.offset_ms(now)
            };
            self.effects.push(Effect::Event(Body::Turn(TurnLatency {
                kind: "greeting".into(),
                latency_ms: latency,
                response_id: response_id.to_owned(),
            })));
        } else if let Some(stopped) = self.speech_stopped_at.take() {
            let latency = u32::try_from(now.saturating_duration_since(stopped).as_millis())
                .unwrap_or(u32::MAX);
            self.effects.push(Effect::Event(Body::Turn(TurnLatency {
                kind: "response".into(),
                latency_ms: latency,
                response_id: response_id.to_owned(),
            })));
        }
    }

    pub(super) fn on_response_done(&mut self, response: Response, now: Instant) {
        // Only one response runs at a time, so whichever finished, none is active now.
        self.responses.on_done(&response);
        if let Some(u) = &response.usage {
            crate::usage::add_response(&mut self.usage, u);
            crate::usage::add_response(&mut self.unreported, u);
        }
        self.report_usage();
        match response.status.as_str() {
            "failed" => {
                let err = response
                    .status_details
                    .as_ref()
                    .and_then(|d| d.error.clone())
                    .unwrap_or_default();
                self.observe(Observation::FailedResponse {
                    response_id: response.id.clone(),
                    code: err.code,
                    message: err.message,
                });
            }
            "incomplete" => {
                self.observe(Observation::IncompleteResponse {
                    response_id: response.id.clone(),
                    reason: response
                        .status_details
                        .as_ref()
                        .and_then(|d| d.reason.clone()),
                });
            }
            _ => {}
        }
        let cancelled = response.status == "cancelled";
        for item in &response.output {
            match item {
                Item::Message {
                    id: Some(id), role, ..
                } if role == "assistant" => {
                    let text = item.text();
                    if !text.is_empty()
                        && (self.transcripts.pending(id) || !self.transcripts.recorded(id))
                    {
                        let offset = self.offset_ms(now);
                        self.transcripts
                            .transcript(id, &response.id, offset, text, true);
                    }
                }
                Item::FunctionCall {
                    call_id,
                    name,
                    arguments,
                    ..
                } => {
                    self.start_tool_call(&response.id, call_id, name, arguments, now);
                }
                _ => {}
            }
        }
        let playback = &self.playback;
        self.transcripts
            .response_done(&response.id, cancelled, |item| playback.heard_ms(item));
        self.tools_rounds.response_done(&response.id);
        self.last_activity = now;
        self.settle_transcripts();

        if self.goodbye.response_id() == Some(response.id.as_str()) {
            let audio_ms: u64 = self
                .transcripts
                .items_of(&response.id)
                .filter_map(|item| self.playback.item(item))
                .map(|a| u64::from(a.sent_ms()))
                .sum();
            self.goodbye
                .on_response_done(&response.id, Duration::from_millis(audio_ms), now);
        }
        self.check_hangup(now);
        self.pump();
    }

    // ---------------------------------------------------------------- barge-in

    pub(super) fn barge_in(&mut self, now: Instant) {
        let Some(cut) = self.playback.interrupt() else {
            return;
        };
        // The model's context keeps what the caller heard and nothing more: the item playing
        // is cut where the caller stopped hearing it, and items nobody heard at all (the one
        // playing when 0 ms of it was heard, which the server refuses to truncate, and those
        // queued behind it) are removed.
        if let Some((item_id, audio_end_ms)) = cut.truncate {
            self.observe(Observation::Truncated {
                item_id: item_id.clone(),
                audio_end_ms,
            });
            self.send_event(ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id,
                content_index: 0,
                audio_end_ms,
            });
        }
        for item_id in cut.unheard {
            self.observe(Observation::UnheardDeleted {
                item_id: item_id.clone(),
            });
            self.send_event(ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id,
            });
        }
        self.effects.push(Effect::Out(outbound_frame::Frame::Clear(
            switchboard_proto::Clear {},
        )));
        self.observe(Observation::BargeIn);
        self.transcripts.cut(cut.items);
        self.settle_transcripts();
        self.check_hangup(now);
    }
}
