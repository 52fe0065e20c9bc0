//! Starting, losing and resuming the Realtime session, and asking it for responses.

use super::*;

/// The tool round of the calls a previous owner left unanswered.
const TAKEOVER_ROUND: &str = "takeover";

impl CallMachine {
    // ---------------------------------------------------------------- session start

    /// Configures the model session (with the call's tools) and asks for the greeting at once,
    /// without waiting for the media stream (unless it waits for the answering-machine
    /// verdict).
    pub fn start_session(&mut self, tools: SessionTools) {
        self.tools = tools;
        self.send_session_update();
        self.session.configured();
        // Held while an outbound call waits for the answering-machine verdict.
        self.greet();
        self.pump();
    }

    /// Configures the session of a call taken over (with the call's tools), seeds it with the
    /// conversation so far (`replay`, from [`crate::replay::items`]), sends again the tool calls
    /// the previous owner left unanswered (same `call_id`: the tools' idempotency makes them
    /// run once), and asks for an answer if the caller was waiting for one.
    pub fn take_over_session(&mut self, tools: SessionTools, replay: Vec<Item>, now: Instant) {
        self.tools = tools;
        let waiting = self.resumed.take().unwrap_or(false);
        self.send_session_update();
        self.session.configured();
        for item in replay {
            self.send_event(ClientEvent::item_create(item));
        }
        let pending = std::mem::take(&mut self.pending_tools);
        let resending = !pending.is_empty();
        for tool in pending {
            self.start_tool_call(
                TAKEOVER_ROUND,
                &tool.call_id,
                &tool.name,
                &tool.arguments,
                now,
            );
        }
        // What the caller said during the takeover, after the conversation before it.
        while let Some((timestamp_ms, payload)) = self.takeover_audio.pop_front() {
            self.clock.appended(timestamp_ms, payload.len());
            self.effects.push(Effect::Audio(payload));
        }
        self.takeover_audio_bytes = 0;
        if resending {
            // The calls are not in the new session: recreated with their outputs.
            self.tools_rounds.session_lost();
        } else if waiting {
            self.request_response(Purpose::Plain, None);
        }
        // What was asked before the session was seeded (a caller back from a transfer).
        self.pump();
    }

    /// Keeps caller audio for a taken-over call's session, dropping the oldest beyond
    /// [`TAKEOVER_AUDIO_LIMIT`].
    pub(super) fn keep_takeover_audio(&mut self, timestamp_ms: u32, payload: Bytes) {
        self.takeover_audio_bytes += payload.len();
        self.takeover_audio.push_back((timestamp_ms, payload));
        while self.takeover_audio_bytes > TAKEOVER_AUDIO_LIMIT {
            let Some((_, old)) = self.takeover_audio.pop_front() else {
                break;
            };
            self.takeover_audio_bytes -= old.len();
            self.observe(Observation::AudioDropped);
        }
    }

    pub(super) fn greeting_params(&self) -> Option<ResponseParams> {
        let greeting = self.setup.agent.greeting.as_ref()?;
        Some(instructions(format!(
            "Greet the caller by saying exactly: \"{greeting}\""
        )))
    }

    /// The whole configuration of a new session, for the current agent.
    pub(super) fn send_session_update(&mut self) {
        let session = self.full_session();
        self.send_session(session);
    }

    /// The whole configuration of a session for the current agent: [`Self::agent_session`]
    /// plus the model, output modality, output format and the call's voice.
    pub(super) fn full_session(&self) -> Session {
        let mut session = self.agent_session();
        session.model = Some(self.setup.model.clone());
        session.output_modalities = Some(vec!["audio".into()]);
        if let Some(audio) = &mut session.audio {
            audio.output = Some(AudioOutput {
                format: Some(AudioFormat::pcmu()),
                voice: Some(self.voice.clone()),
                speed: None,
            });
        }
        session
    }

    /// Sends a `session.update` whose answer [`SessionCheck`] will verify.
    pub(super) fn send_session(&mut self, session: Session) {
        let event_id = self.session_check.sent(&session);
        self.send_event(ClientEvent::SessionUpdate {
            event_id: Some(event_id),
            session,
        });
    }

    /// What depends on the agent: instructions, tools, turn detection, noise reduction,
    /// transcription (with the input format they sit next to) and truncation. A
    /// `session.update` changes only the fields present, so a handoff sends just this, leaving
    /// model and voice as they are. An agent without transcription, noise reduction or
    /// truncation settings leaves them out, so after a handoff to such an agent the session
    /// keeps what the first agent set.
    pub(super) fn agent_session(&self) -> Session {
        let agent = &self.setup.agent;
        Session {
            kind: "realtime".into(),
            instructions: Some(agent.instructions.clone()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(AudioFormat::pcmu()),
                    transcription: agent.transcription.clone(),
                    noise_reduction: agent
                        .noise_reduction
                        .as_ref()
                        .map(|kind| NoiseReduction { kind: kind.clone() }),
                    turn_detection: Some(agent.turn_detection.to_session()),
                }),
                output: None,
            }),
            tools: Some(self.tools.functions.clone()),
            tool_choice: Some("auto".into()),
            truncation: agent.truncation.clone(),
            ..Default::default()
        }
    }

    // ---------------------------------------------------------------- session loss

    /// The Realtime session is gone (socket closed, network error, `session_expired`): replace
    /// it, unless sessions have been lost too often lately.
    pub(super) fn session_lost(&mut self, why: &str, now: Instant) {
        let loss = self.session.lost(now);
        let attempt = match loss {
            Loss::Ignored => return,
            Loss::TooOften => {
                self.observe(Observation::SessionLostTooOften {
                    why: why.to_owned(),
                });
                self.model_error(now);
                return;
            }
            Loss::ReplaceNow { attempt } | Loss::ReplaceAt { attempt, .. } => attempt,
        };
        self.observe(Observation::RealtimeReconnect {
            why: why.to_owned(),
            attempt,
        });

        // The caller must not keep hearing a response that can no longer finish, and what
        // they heard of it is recorded before the conversation is replayed.
        if let Some(cut) = self.playback.interrupt() {
            self.effects.push(Effect::Out(outbound_frame::Frame::Clear(
                switchboard_proto::Clear {},
            )));
            self.transcripts.cut(cut.items);
        }
        self.transcripts.session_lost();
        self.settle_transcripts();

        // Whatever was asked of the old session is asked again of the new one.
        let (was_active, requested) = self.responses.reset();
        self.session_check.reset();
        self.responses_with_audio.clear();
        self.speech_stopped_at = None;
        if self.greeting == GreetingState::Response {
            self.greeting = GreetingState::Requested;
            self.greeting_response = None;
            let params = self.greeting_params();
            self.responses.defer_first(Purpose::Greeting, params);
        }
        if self.goodbye.speaking() {
            // The goodbye was being spoken: end here rather than start it over.
            self.hang_up_now(now);
            return;
        }
        match requested {
            // A filler line is only worth saying on time.
            Some((Purpose::Filler, _)) => {}
            Some((purpose, params)) => self.responses.defer_first(purpose, params),
            None if was_active && self.greeting != GreetingState::Requested => {
                self.responses.defer(Purpose::Plain, None);
            }
            None => {}
        }
        self.tools_rounds.session_lost();
        if loss == (Loss::ReplaceNow { attempt }) {
            self.effects.push(Effect::Reconnect);
        }
    }

    /// Whether a lost session is waiting to be replaced.
    pub fn reconnecting(&self) -> bool {
        self.session.reconnecting()
    }

    /// A new Realtime session is open (or opening): configure it like the first, replay the
    /// conversation so far (`replay`, from [`crate::replay::items`]), then ask again for whatever
    /// the lost session had not answered.
    pub fn resume_session(&mut self, replay: Vec<Item>) {
        if self.session.is_ended() {
            return;
        }
        // The new session's input buffer starts at 0.
        self.clock.new_session();
        self.send_session_update();
        self.session.configured();
        // Outputs that finished before now were published, so they are in `replay`.
        self.tools_rounds.session_resumed();
        for item in replay {
            self.send_event(ClientEvent::item_create(item));
        }
        self.pump();
    }

    // ---------------------------------------------------------------- responses

    /// Asks for a response now, or after the active one.
    pub(super) fn request_response(&mut self, purpose: Purpose, params: Option<ResponseParams>) {
        if self.responses.may_request(self.session.can_send()) {
            self.send_response_create(purpose, params);
        } else {
            self.responses.defer(purpose, params);
        }
    }

    pub(super) fn send_response_create(
        &mut self,
        purpose: Purpose,
        params: Option<ResponseParams>,
    ) {
        let event = self.responses.create(purpose, params);
        self.send_event(event);
    }

    /// After a response ended (or a request failed): tool outputs first, then waiting requests.
    pub(super) fn pump(&mut self) {
        if self.session.is_ended() || !self.responses.may_request(self.session.can_send()) {
            return;
        }
        if self.flush_tool_outputs() {
            return;
        }
        if let Some((purpose, params)) = self.responses.next_deferred() {
            self.send_response_create(purpose, params);
        }
    }
}
