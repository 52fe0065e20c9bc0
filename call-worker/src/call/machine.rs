//! The decisions of one call, without any I/O.
//!
//! [`CallMachine`] takes what happens (a Twilio frame from the gateway, a Realtime server event,
//! a finished tool, a timer) and answers with [`Effect`]s for the actor to carry out (a client
//! event to the model, a frame to the gateway, a call event, a tool to run). Keeping the
//! decisions free of sockets and clocks makes every rule of the call testable in plain unit
//! tests: barge-in truncation, one `response.create` per tool round, goodbyes before hangups.
//!
//! The machine delegates to parts that each own one concern: [`super::lifecycle`] (the
//! Realtime session: connecting, live, being replaced, ended), [`super::arbiter`] (the only
//! place that decides whether a response may be requested), [`super::transcripts`] (what was
//! said, as the caller heard it), [`super::tool_rounds`] (the function calls of a response,
//! answered together), [`super::ending`] (the goodbye before a hang-up or transfer) and
//! [`super::session_check`] (whether the session took the call's configuration). What is worth
//! counting leaves as [`super::observation::Observation`]s; time comes in as arguments.
//!
//! Rules worth knowing:
//! - Only one response may be active on a Realtime session. The machine tracks the active
//!   response and its own pending `response.create`; anything asked for meanwhile waits and is
//!   sent after `response.done`.
//! - Audio produced before Twilio's `start` is held (bounded) and sent on `start`, because the
//!   gateway subscribes to `.out` only when the stream starts.
//! - What the caller heard comes from mark echoes only (see [`crate::playback`]).
//! - An assistant transcript is recorded once its fate is known: its response is done and its
//!   audio either fully played or cut off by a barge-in.
//! - A lost Realtime session (socket closed, network error, `session_expired`) is replaced:
//!   playback is cut and what the caller heard recorded, then [`Effect::Reconnect`]; the actor
//!   opens a new session and calls [`CallMachine::resume_session`] with the replayed
//!   conversation, after which whatever the old session left unanswered (greeting, a pending
//!   request, a tool round still running) is asked of the new one. Caller audio is dropped while
//!   no session exists. At most [`MAX_RECONNECTS`] per [`RECONNECT_WINDOW`], then `model_error`.
//! - A `handoff` (built-in tool) makes another agent answer the rest of the call on the same
//!   session: [`Effect::Handoff`] asks the actor for the target (current agents table, tools
//!   resolved like at call start), then [`CallMachine::on_handoff`] sends one `session.update`
//!   (the target's instructions, tools and turn detection; the voice stays, see
//!   [`CallMachine::on_handoff`]), records a system transcript line, and answers the function
//!   call like any other tool round (output, then one `response.create`, so the new agent
//!   speaks). From then on [`CallMachine::agent`] is the target: its tools, `transfer_to`,
//!   `idle_timeout_seconds`, `max_call_seconds` (counted from the start of the call) and
//!   `filler_after_ms`, and a replacement session after a lost one is configured for it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use switchboard_proto::event::{EndReason, StopReason};
use switchboard_proto::{
    CallEnded, CallOffer, CallOutcome, CallStarted, Role, ToolCall, ToolFailure, ToolInvocation,
    TranscriptEntry, TurnLatency, Usage, call_event::Body, inbound_frame, outbound_frame,
    tool_invocation,
};
use switchboard_realtime::client::ResponseParams;
use switchboard_realtime::server::{ErrorDetail, Response};
use switchboard_realtime::session::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, NoiseReduction,
};
use switchboard_realtime::{ClientEvent, Item, ServerEvent, Session};
use tokio::time::{Duration, Instant};

use super::arbiter::{Arbiter, Floor, Purpose, Refusal};
use super::ending::{Ending, Goodbye, hangup_frame};
use super::lifecycle::{Lifecycle, Loss};
pub use super::lifecycle::{MAX_RECONNECTS, RECONNECT_WINDOW};
use super::observation::{Observation, ToolCallResult};
use super::session_check::SessionCheck;
use super::tool_rounds::ToolRounds;
use super::transcripts::Transcripts;
use crate::agents::{Agent, END_CALL, HANDOFF, SET_OUTCOME, TRANSFER_CALL};
use crate::playback::{BYTES_PER_MS, Playback};
use crate::realtime::RealtimeEvent;
use crate::tools::{SessionTools, ToolDone, ToolReply, is_builtin};

/// Twilio must open the media stream within this time after the offer was accepted.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Assistant audio held before Twilio's `start`: 30 s of mu-law.
pub const PRESTART_BUFFER_BYTES: usize = 30 * 1000 * BYTES_PER_MS as usize;
/// Outbound audio is sent in chunks of at most 100 ms, each followed by a mark, so a barge-in
/// truncates with 100 ms precision.
pub const OUT_CHUNK_BYTES: usize = 100 * BYTES_PER_MS as usize;
/// While the assistant is busy, the idle timer looks again this often.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

const IDLE_PROMPT: &str = "Are you still there?";
/// Said (once per tool round) when a business tool is slow and the model is silent.
pub const FILLER_LINE: &str = "One moment while I check that.";
const IDLE_GOODBYE: &str =
    "I haven't heard anything for a while, so I'll end the call now. Goodbye!";
const MAX_DURATION_GOODBYE: &str = "We have reached the time limit for this call, so I need to end it now. Thank you for calling, goodbye!";

/// Something the actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a control event to the model (never dropped).
    Realtime(Box<ClientEvent>),
    /// Send caller audio (raw mu-law; the writer base64-encodes it into the append) to the
    /// model (dropped oldest-first if the socket stalls).
    Audio(Bytes),
    /// Publish a frame on `voice.call.<sid>.out`.
    Out(outbound_frame::Frame),
    /// Publish a call event.
    Event(Body),
    /// Run a business tool in its own task (the request as the tool service gets it, its
    /// `timeout_ms` the worker's deadline); its [`ToolDone`] comes back later.
    CallTool(ToolCall),
    /// Close the Realtime socket.
    CloseRealtime,
    /// Close the Realtime socket (if still open) and open a new session; then call
    /// [`CallMachine::resume_session`] with the conversation so far.
    Reconnect,
    /// Find agent `agent_id` in the current agents table and resolve its tools (registry reads,
    /// so off the actor), then call [`CallMachine::on_handoff`] with the same `call_id`.
    Handoff { call_id: String, agent_id: String },
}

/// How serious a Realtime `error` event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The session cannot go on (expired, refused, unauthenticated).
    Fatal,
    /// Logged and counted; the call continues.
    Recoverable,
}

/// Sorts a Realtime `error` event. Unknown codes are recoverable: most errors concern one client
/// event and leave the session usable. (`session_expired` ends the session, not the call: the
/// machine replaces the session before consulting this.)
pub fn classify_error(error: &ErrorDetail) -> ErrorClass {
    match error.code.as_deref() {
        Some(
            "session_expired"
            | "beta_api_shape_disabled"
            | "invalid_api_key"
            | "insufficient_quota"
            | "model_not_found",
        ) => ErrorClass::Fatal,
        _ if error.kind == "authentication_error" => ErrorClass::Fatal,
        _ => ErrorClass::Recoverable,
    }
}

/// What the call needs to know at start.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The offer the call was accepted from.
    pub offer: CallOffer,
    /// The agent answering.
    pub agent: Arc<Agent>,
    /// This worker.
    pub worker_id: String,
    /// The Realtime model id.
    pub model: String,
    /// Default business-tool deadline.
    pub tool_timeout: Duration,
    /// When the offer was accepted, in wall-clock milliseconds since the epoch: with
    /// `offer.offered_at_ms` it tells how long the call waited before this worker took it
    /// (the greeting's latency counts from the offer). The machine reads no clock itself.
    pub accepted_at_ms: i64,
}

/// A `handoff` call waiting for its target to be resolved.
#[derive(Debug)]
struct PendingHandoff {
    call_id: String,
    arguments: String,
    target: String,
    reason: String,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GreetingState {
    None,
    Requested,
    Response,
    Done,
}

/// The state of one call.
pub struct CallMachine {
    setup: CallSetup,
    accepted_at: Instant,
    effects: Vec<Effect>,
    /// What to count, for the actor (see [`super::observation`]).
    observations: Vec<Observation>,
    tools: SessionTools,
    /// The Realtime session's lifecycle, and whether the call is over.
    session: Lifecycle,

    stream_started: bool,
    /// Twilio's chunk counter of the last caller audio frame (0: none yet).
    last_chunk: u32,
    prestart: VecDeque<(String, String, Bytes)>,
    prestart_bytes: usize,
    playback: Playback,

    /// The running response and our requests (see [`super::arbiter`]).
    responses: Arbiter,
    /// The `session.update`s awaiting confirmation (see [`super::session_check`]).
    session_check: SessionCheck,
    responses_with_audio: HashSet<String>,

    greeting: GreetingState,
    greeting_response: Option<String>,
    speech_stopped_at: Option<Instant>,
    /// What was said, as the caller heard it.
    transcripts: Transcripts,

    /// The function calls of each response, answered together.
    tools_rounds: ToolRounds,
    outcome_set: bool,
    handoff: Option<PendingHandoff>,
    /// The output voice of the call: the first agent's. A GA session locks the voice once it
    /// has produced audio, and the caller should hear one voice for the whole call, so neither
    /// a handoff nor a replacement session changes it.
    voice: String,

    usage: Usage,
    /// The goodbye before a hang-up or transfer of ours.
    goodbye: Goodbye,
    start_deadline: Option<Instant>,
    max_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    idle_stage: u8,
    last_activity: Instant,
}

impl CallMachine {
    /// A new call, accepted at `now`; queues the `started` event.
    pub fn new(setup: CallSetup, now: Instant) -> Self {
        let mut m = Self {
            accepted_at: now,
            effects: Vec::new(),
            observations: Vec::new(),
            tools: SessionTools::default(),
            session: Lifecycle::default(),
            stream_started: false,
            last_chunk: 0,
            prestart: VecDeque::new(),
            prestart_bytes: 0,
            playback: Playback::new(),
            responses: Arbiter::default(),
            session_check: SessionCheck::default(),
            responses_with_audio: HashSet::new(),
            greeting: GreetingState::None,
            greeting_response: None,
            speech_stopped_at: None,
            transcripts: Transcripts::default(),
            tools_rounds: ToolRounds::default(),
            outcome_set: false,
            handoff: None,
            voice: setup.agent.voice.clone(),
            usage: Usage {
                model: setup.model.clone(),
                transcription_model: setup
                    .agent
                    .transcription
                    .as_ref()
                    .map(|t| t.model.clone())
                    .unwrap_or_default(),
                ..Default::default()
            },
            goodbye: Goodbye::default(),
            start_deadline: Some(now + START_TIMEOUT),
            max_deadline: setup.agent.max_call.map(|d| now + d),
            idle_deadline: None,
            idle_stage: 0,
            last_activity: now,
            setup,
        };
        let offer = &m.setup.offer;
        let started = CallStarted {
            agent_id: m.setup.agent.id.clone(),
            from: offer.from.clone(),
            to: offer.to.clone(),
            direction: offer.direction,
            worker_id: m.setup.worker_id.clone(),
            model: m.setup.model.clone(),
        };
        m.effects.push(Effect::Event(Body::Started(started)));
        m
    }

    fn observe(&mut self, observation: Observation) {
        self.observations.push(observation);
    }

    /// Takes what the machine observed since the last call, for the actor to record.
    pub fn drain_observations(&mut self) -> std::vec::Drain<'_, Observation> {
        self.observations.drain(..)
    }

    fn send_event(&mut self, event: ClientEvent) {
        self.effects.push(Effect::Realtime(Box::new(event)));
    }

    /// Takes the effects queued so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Moves the effects queued so far to the end of `out`. Unlike [`Self::take_effects`] it
    /// keeps both buffers, so the actor allocates nothing per frame for them.
    pub fn drain_effects_into(&mut self, out: &mut VecDeque<Effect>) {
        out.extend(self.effects.drain(..));
    }

    /// The agent answering the call now (the target of the last handoff, if any).
    pub fn agent(&self) -> Arc<Agent> {
        Arc::clone(&self.setup.agent)
    }

    /// The offer the call came from.
    pub fn offer(&self) -> &CallOffer {
        &self.setup.offer
    }

    /// The end reason once the call is over; the actor stops then.
    pub fn ended(&self) -> Option<EndReason> {
        self.session.ended()
    }

    /// The earliest timer, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.session.is_ended() {
            return None;
        }
        [
            self.goodbye.deadline(),
            self.start_deadline,
            self.max_deadline,
            self.idle_deadline,
            self.session.reconnect_at(),
            self.tools_rounds.filler_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn offset_ms(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.accepted_at).as_millis())
            .unwrap_or(u32::MAX)
    }

    // ---------------------------------------------------------------- session start

    /// Configures the model session (with the call's tools) and asks for the greeting at once,
    /// without waiting for the media stream.
    pub fn start_session(&mut self, tools: SessionTools) {
        self.tools = tools;
        self.send_session_update();
        self.session.configured();
        if self.setup.agent.greeting.is_some() {
            self.greeting = GreetingState::Requested;
            let params = self.greeting_params();
            self.request_response(Purpose::Greeting, params);
        }
    }

    fn greeting_params(&self) -> Option<ResponseParams> {
        let greeting = self.setup.agent.greeting.as_ref()?;
        Some(instructions(format!(
            "Greet the caller by saying exactly: \"{greeting}\""
        )))
    }

    /// The whole configuration of a new session, for the current agent.
    fn send_session_update(&mut self) {
        let session = self.full_session();
        self.send_session(session);
    }

    /// The whole configuration of a session for the current agent: [`Self::agent_session`]
    /// plus the model, output modality, output format and the call's voice.
    fn full_session(&self) -> Session {
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
    fn send_session(&mut self, session: Session) {
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
    fn agent_session(&self) -> Session {
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
    fn session_lost(&mut self, why: &str, now: Instant) {
        let call_sid = self.setup.offer.call_sid.clone();
        let loss = self.session.lost(now);
        let attempt = match loss {
            Loss::Ignored => return,
            Loss::TooOften => {
                tracing::error!(%call_sid, %why, "realtime session lost too often; ending the call");
                self.model_error(now);
                return;
            }
            Loss::ReplaceNow { attempt } | Loss::ReplaceAt { attempt, .. } => attempt,
        };
        tracing::warn!(%call_sid, %why, attempt, "realtime session lost; opening a new one");
        self.observe(Observation::RealtimeReconnect);

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
    fn request_response(&mut self, purpose: Purpose, params: Option<ResponseParams>) {
        if self.responses.may_request(self.session.can_send()) {
            self.send_response_create(purpose, params);
        } else {
            self.responses.defer(purpose, params);
        }
    }

    fn send_response_create(&mut self, purpose: Purpose, params: Option<ResponseParams>) {
        let event = self.responses.create(purpose, params);
        self.send_event(event);
    }

    /// After a response ended (or a request failed): tool outputs first, then waiting requests.
    fn pump(&mut self) {
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
                if !self.session.can_send() {
                    // No session to hear it: stale speech is worth less than a short gap.
                    self.observe(Observation::AudioDropped);
                } else if !audio.payload.is_empty() {
                    self.effects.push(Effect::Audio(audio.payload));
                }
            }
            inbound_frame::Frame::Start(start) => {
                if self.stream_started {
                    return;
                }
                tracing::info!(call_sid = %self.setup.offer.call_sid, stream_sid = %start.stream_sid,
                    gateway = %start.gateway_id, "media stream started");
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
                    tracing::warn!(call_sid = %self.setup.offer.call_sid, digit = ?dtmf.digit,
                        "invalid DTMF digit ignored");
                    return;
                }
                let text = format!("The caller pressed {} on the keypad.", dtmf.digit);
                self.touch_caller(now);
                self.effects
                    .push(Effect::Event(Body::Transcript(TranscriptEntry {
                        role: Role::System as i32,
                        text: text.clone(),
                        item_id: String::new(),
                        interrupted: false,
                        heard_ms: 0,
                        offset_ms: self.offset_ms(now),
                    })));
                self.send_event(ClientEvent::item_create(Item::user_text(&text)));
                self.request_response(Purpose::Plain, None);
            }
            inbound_frame::Frame::Stop(stop) => {
                let reason = StopReason::parse(&stop.reason).map_or_else(
                    || {
                        tracing::warn!(call_sid = %self.setup.offer.call_sid, reason = %stop.reason,
                            "media stream stopped for an unknown reason");
                        EndReason::StreamLost
                    },
                    StopReason::end_reason,
                );
                tracing::info!(call_sid = %self.setup.offer.call_sid, stop = %stop.reason, %reason, "media stream stopped");
                self.finish(reason, now);
            }
        }
    }

    /// The subscription to `.in` ended (the NATS connection is going away).
    pub fn on_inbound_closed(&mut self, now: Instant) {
        self.finish(EndReason::StreamLost, now);
    }

    fn touch_caller(&mut self, now: Instant) {
        self.last_activity = now;
        self.idle_stage = 0;
        if let (Some(idle), true) = (self.setup.agent.idle_timeout, self.stream_started) {
            self.idle_deadline = Some(now + idle);
        }
    }

    // ---------------------------------------------------------------- outbound audio

    fn send_audio(&mut self, item_id: &str, response_id: &str, bytes: &Bytes) {
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

    fn hold_audio(&mut self, item_id: &str, response_id: &str, bytes: Bytes) {
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

    fn held(&self, pred: impl Fn(&(String, String, Bytes)) -> bool) -> bool {
        self.prestart.iter().any(pred)
    }

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

    fn model_error(&mut self, now: Instant) {
        self.fail(EndReason::ModelError, now);
    }

    /// Hangs up on the caller because the model cannot serve the call.
    fn fail(&mut self, reason: EndReason, now: Instant) {
        self.effects.push(Effect::Out(outbound_frame::Frame::Hangup(
            switchboard_proto::Hangup {
                reason: "error".into(),
            },
        )));
        self.finish(reason, now);
    }

    fn on_server_event(&mut self, ev: ServerEvent, now: Instant) {
        match ev {
            ServerEvent::Error { error, .. } => self.on_error(error, now),
            ServerEvent::SessionCreated { session, .. } => {
                tracing::debug!(call_sid = %self.setup.offer.call_sid, id = ?session.id, "realtime session created");
            }
            ServerEvent::SessionUpdated { session, .. } => {
                if let Err(why) = self.session_check.on_updated(&session) {
                    tracing::error!(call_sid = %self.setup.offer.call_sid, %why,
                        "the model session did not take the call's configuration; ending the call");
                    self.fail(EndReason::ModelConfigRejected, now);
                } else {
                    tracing::debug!(call_sid = %self.setup.offer.call_sid, "realtime session confirmed");
                }
            }
            ServerEvent::SpeechStarted { item_id, .. } => {
                let offset = self.offset_ms(now);
                self.transcripts.speech_started(item_id, offset);
                self.touch_caller(now);
                self.barge_in(now);
            }
            ServerEvent::SpeechStopped { .. } => {
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
                }
                let offset = self
                    .transcripts
                    .speech_done(&item_id)
                    .unwrap_or_else(|| self.offset_ms(now));
                self.effects
                    .push(Effect::Event(Body::Transcript(TranscriptEntry {
                        role: Role::User as i32,
                        text: transcript,
                        item_id,
                        interrupted: false,
                        heard_ms: 0,
                        offset_ms: offset,
                    })));
            }
            ServerEvent::InputTranscriptionFailed { item_id, error, .. } => {
                // The model heard the audio anyway; only the record lacks the words.
                self.transcripts.speech_done(&item_id);
                self.observe(Observation::TranscriptionFailed);
                tracing::warn!(call_sid = %self.setup.offer.call_sid, %item_id, code = ?error.code,
                    message = ?error.message, "caller speech could not be transcribed");
            }
            ServerEvent::ResponseCreated { response, .. } => {
                match self.responses.on_created(&response) {
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
                    self.observe(Observation::BadAudio);
                    tracing::warn!(call_sid = %self.setup.offer.call_sid, error = %e, "undecodable audio delta dropped");
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

    fn on_error(&mut self, error: ErrorDetail, now: Instant) {
        let call_sid = self.setup.offer.call_sid.clone();
        let code = error.code.clone().unwrap_or_else(|| "unknown".into());
        self.observe(Observation::RealtimeError { code: code.clone() });
        if code == "session_expired" {
            // The close (1001) follows; a new session replaces this one at once.
            self.session_lost("session expired", now);
            return;
        }
        if classify_error(&error) == ErrorClass::Fatal {
            tracing::error!(%call_sid, %code, message = %error.message, "fatal realtime error; ending the call");
            self.model_error(now);
            return;
        }
        if let Some(why) = self.session_check.on_error(&error) {
            tracing::error!(%call_sid, %why, "the model refused the call's configuration; ending the call");
            self.fail(EndReason::ModelConfigRejected, now);
            return;
        }
        tracing::warn!(%call_sid, %code, kind = %error.kind, message = %error.message,
            "realtime error; the call continues");
        match self.responses.on_error(&error) {
            Refusal::NotOurs => {}
            // Another response (server VAD's) runs: ours is asked again after its
            // `response.done`, whether the refusal came before or after its `response.created`.
            Refusal::Busy(purpose) => {
                tracing::debug!(%call_sid, ?purpose, "response request refused while another runs; retried after it");
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
    fn on_audio_delta(&mut self, response_id: String, item_id: String, bytes: Bytes, now: Instant) {
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

    fn first_audio_of_response(&mut self, response_id: &str, now: Instant) {
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

    fn on_response_done(&mut self, response: Response, now: Instant) {
        let call_sid = self.setup.offer.call_sid.clone();
        // Only one response runs at a time, so whichever finished, none is active now.
        self.responses.on_done(&response);
        if let Some(u) = &response.usage {
            crate::usage::add_response(&mut self.usage, u);
        }
        match response.status.as_str() {
            "failed" => {
                let err = response
                    .status_details
                    .as_ref()
                    .and_then(|d| d.error.clone())
                    .unwrap_or_default();
                self.observe(Observation::FailedResponse);
                tracing::error!(%call_sid, response_id = %response.id, code = ?err.code,
                    message = %err.message, "realtime response failed");
            }
            "incomplete" => {
                tracing::warn!(%call_sid, response_id = %response.id,
                    reason = ?response.status_details.as_ref().and_then(|d| d.reason.clone()),
                    "realtime response incomplete");
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

    fn barge_in(&mut self, now: Instant) {
        let Some(cut) = self.playback.interrupt() else {
            return;
        };
        let call_sid = self.setup.offer.call_sid.clone();
        // The model's context keeps what the caller heard and nothing more: the item playing
        // is cut where the caller stopped hearing it, and items nobody heard at all (the one
        // playing when 0 ms of it was heard, which the server refuses to truncate, and those
        // queued behind it) are removed.
        if let Some((item_id, audio_end_ms)) = cut.truncate {
            tracing::debug!(%call_sid, %item_id, audio_end_ms, "barge-in: truncating");
            self.send_event(ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id,
                content_index: 0,
                audio_end_ms,
            });
        }
        for item_id in cut.unheard {
            tracing::debug!(%call_sid, %item_id, "barge-in: deleting an unheard item");
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

    // ---------------------------------------------------------------- transcripts

    /// Records assistant items whose fate is known.
    fn settle_transcripts(&mut self) {
        let prestart = &self.prestart;
        let entries = self.transcripts.settle(&mut self.playback, |item_id| {
            prestart.iter().any(|(item, _, _)| item == item_id)
        });
        self.publish_transcripts(entries);
    }

    fn publish_transcripts(&mut self, entries: Vec<TranscriptEntry>) {
        self.effects.extend(
            entries
                .into_iter()
                .map(|entry| Effect::Event(Body::Transcript(entry))),
        );
    }

    // ---------------------------------------------------------------- tools

    fn start_tool_call(
        &mut self,
        response_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        now: Instant,
    ) {
        if !self
            .tools_rounds
            .start(response_id, call_id, name, arguments)
        {
            return;
        }
        let call_sid = self.setup.offer.call_sid.clone();
        tracing::info!(%call_sid, %call_id, tool = %name, "function call");
        if !self.tools.declared(name) {
            self.observe(Observation::ToolCall {
                tool: "unknown".into(),
                result: ToolCallResult::UnknownTool,
            });
            let reply = ToolReply::error(
                "unknown_tool",
                format!("There is no tool named `{name}` on this call."),
            );
            self.complete_tool(ToolDone::at_once(call_id, name, arguments, reply));
            return;
        }
        if name == HANDOFF {
            self.start_handoff(call_id, arguments, now);
            return;
        }
        if is_builtin(name) {
            let reply = self.run_builtin(name, arguments, now);
            // Built-ins finish at once: their `tool` span only records that they ran.
            let result = match &reply {
                ToolReply::Output(_) => "ok",
                ToolReply::Error { code, .. } => code.as_str(),
            };
            let _span = tracing::info_span!("tool", name, call_id, result).entered();
            self.observe(Observation::ToolCall {
                tool: name.to_owned(),
                result: ToolCallResult::Builtin,
            });
            self.complete_tool(ToolDone::at_once(call_id, name, arguments, reply));
            return;
        }
        let timeout = self.tools.timeout(name, self.setup.tool_timeout);
        if let Some(after) = self.setup.agent.filler_after {
            self.tools_rounds.arm_filler(response_id, now + after);
        }
        self.effects.push(Effect::CallTool(ToolCall {
            call_sid: self.setup.offer.call_sid.clone(),
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
            agent_id: self.setup.agent.id.clone(),
            caller: self.setup.offer.party().to_owned(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        }));
    }

    fn run_builtin(&mut self, name: &str, arguments: &str, now: Instant) -> ToolReply {
        match name {
            END_CALL => {
                self.begin_goodbye(Ending::EndCall, now);
                ToolReply::Output(
                    r#"{"ok":true,"note":"The call ends after your next reply. Say a short goodbye now."}"#
                        .into(),
                )
            }
            TRANSFER_CALL => {
                let Some(to) = self.setup.agent.transfer_to.clone() else {
                    return ToolReply::error(
                        "unavailable",
                        "Transfers are not set up for this line.",
                    );
                };
                if !self.outcome_set {
                    self.set_outcome("transferred", "");
                }
                self.begin_goodbye(Ending::Transfer(to), now);
                ToolReply::Output(
                    r#"{"ok":true,"note":"The caller is transferred after your next reply. Tell them briefly that you are connecting them."}"#
                        .into(),
                )
            }
            SET_OUTCOME => {
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
                let outcome = args["outcome"].as_str().unwrap_or_default().trim();
                if outcome.is_empty() {
                    return ToolReply::error(
                        "invalid_arguments",
                        "`outcome` must be a non-empty string.",
                    );
                }
                let detail = args["detail"].as_str().unwrap_or_default();
                self.set_outcome(outcome, detail);
                ToolReply::Output(r#"{"ok":true}"#.into())
            }
            _ => ToolReply::error("unknown_tool", format!("There is no tool named `{name}`.")),
        }
    }

    /// Checks a `handoff` call and asks the actor for its target; a call that cannot be
    /// honoured is answered with a structured error at once (the model then tells the caller).
    fn start_handoff(&mut self, call_id: &str, arguments: &str, now: Instant) {
        let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let target = args["agent"].as_str().unwrap_or_default().trim().to_owned();
        let reason = args["reason"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let allowed = &self.setup.agent.handoff_to;
        let refused = if self.handoff.is_some() {
            Some(ToolReply::error(
                "busy",
                "Another handoff is already in progress.",
            ))
        } else if self.goodbye.in_progress() {
            Some(ToolReply::error("unavailable", "The call is ending."))
        } else if !allowed.contains(&target) {
            let choices = allowed.join(", ");
            Some(ToolReply::error(
                if target.is_empty() {
                    "invalid_arguments"
                } else {
                    "unknown_agent"
                },
                format!(
                    "`agent` must be one of: {}.",
                    if choices.is_empty() {
                        "(none)"
                    } else {
                        &choices
                    }
                ),
            ))
        } else {
            None
        };
        if let Some(reply) = refused {
            self.observe(Observation::ToolCall {
                tool: HANDOFF.into(),
                result: ToolCallResult::Error,
            });
            self.complete_tool(ToolDone::at_once(call_id, HANDOFF, arguments, reply));
            return;
        }
        self.effects.push(Effect::Handoff {
            call_id: call_id.to_owned(),
            agent_id: target.clone(),
        });
        self.handoff = Some(PendingHandoff {
            call_id: call_id.to_owned(),
            arguments: arguments.to_owned(),
            target,
            reason,
            started: now,
        });
    }

    /// The target of a `handoff` call is resolved: the agent from the current agents table with
    /// its session tools, or the error to give the model (the agent is gone from a reloaded
    /// file, say).
    ///
    /// On success the call switches agents: one `session.update` carries the target's
    /// instructions, tools and turn detection (sent at once, so the response that follows the
    /// function output already runs as the new agent; skipped while a lost session awaits its
    /// replacement, which is configured for the new agent anyway). The voice is left alone: a
    /// GA session cannot change it after it produced audio, so the whole call keeps the first
    /// agent's voice. The target's greeting is not spoken: the conversation goes on. Timers
    /// follow the target: `max_call_seconds` counts from the start of the call,
    /// `idle_timeout_seconds` from now.
    pub fn on_handoff(
        &mut self,
        call_id: &str,
        target: Result<(Arc<Agent>, SessionTools), ToolReply>,
        now: Instant,
    ) {
        if self.session.is_ended() {
            return;
        }
        let Some(pending) = self.handoff.take_if(|h| h.call_id == call_id) else {
            return;
        };
        let call_sid = self.setup.offer.call_sid.clone();
        let mut record = None;
        let reply = match target {
            Err(reply) => {
                tracing::warn!(%call_sid, target = %pending.target, ?reply, "handoff refused");
                reply
            }
            Ok((agent, tools)) => {
                tracing::info!(%call_sid, from = %self.setup.agent.id, to = %agent.id,
                    reason = %pending.reason, "call handed off");
                self.observe(Observation::Handoff);
                self.setup.agent = Arc::clone(&agent);
                self.tools = tools;
                if !self.goodbye.in_progress() {
                    self.max_deadline = agent.max_call.map(|d| self.accepted_at + d);
                    self.idle_stage = 0;
                    self.idle_deadline = match (agent.idle_timeout, self.stream_started) {
                        (Some(idle), true) => Some(now + idle),
                        _ => None,
                    };
                }
                if !self.session.reconnecting() {
                    let session = self.agent_session();
                    self.send_session(session);
                }
                record = Some(if pending.reason.is_empty() {
                    format!("Handed off to {}.", agent.id)
                } else {
                    format!("Handed off to {} ({}).", agent.id, pending.reason)
                });
                ToolReply::Output(serde_json::json!({"ok": true, "agent": agent.id}).to_string())
            }
        };
        self.observe(Observation::ToolCall {
            tool: HANDOFF.into(),
            result: tool_call_result(&reply),
        });
        let latency_ms = u32::try_from(now.saturating_duration_since(pending.started).as_millis())
            .unwrap_or(u32::MAX);
        self.complete_tool(ToolDone {
            call_id: pending.call_id,
            name: HANDOFF.to_owned(),
            arguments: pending.arguments,
            reply,
            outcome: None,
            latency_ms,
        });
        // After the tool event, so the record (and a replay) reads: the call, then the handoff.
        if let Some(text) = record {
            self.effects
                .push(Effect::Event(Body::Transcript(TranscriptEntry {
                    role: Role::System as i32,
                    text,
                    item_id: String::new(),
                    interrupted: false,
                    heard_ms: 0,
                    offset_ms: self.offset_ms(now),
                })));
        }
        self.pump();
    }

    fn set_outcome(&mut self, outcome: &str, detail: &str) {
        self.outcome_set = true;
        self.effects.push(Effect::Event(Body::Outcome(CallOutcome {
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        })));
    }

    /// A business tool finished (from its task).
    pub fn on_tool_done(&mut self, done: ToolDone, _now: Instant) {
        if self.session.is_ended() {
            return;
        }
        self.observe(Observation::ToolCall {
            tool: done.name.clone(),
            result: tool_call_result(&done.reply),
        });
        // As the call saw it: NATS, the tool service and the handler together.
        self.observe(Observation::ToolLatency {
            tool: done.name.clone(),
            latency_ms: done.latency_ms,
        });
        if let Some(outcome) = done.outcome.clone() {
            self.set_outcome(&outcome, "");
        }
        self.complete_tool(done);
        self.pump();
    }

    fn complete_tool(&mut self, done: ToolDone) {
        let result = match &done.reply {
            ToolReply::Output(text) => tool_invocation::Result::Output(text.clone()),
            ToolReply::Error { code, message } => tool_invocation::Result::Error(ToolFailure {
                code: code.clone(),
                message: message.clone(),
            }),
        };
        self.effects.push(Effect::Event(Body::Tool(ToolInvocation {
            call_id: done.call_id.clone(),
            name: done.name.clone(),
            arguments: done.arguments.clone(),
            result: Some(result),
            latency_ms: done.latency_ms,
        })));
        self.tools_rounds
            .finished(&done.call_id, done.reply.model_output());
    }

    /// Sends the outputs of every finished tool round, then exactly one `response.create`.
    /// Returns whether it sent anything.
    fn flush_tool_outputs(&mut self) -> bool {
        let Some(items) = self.tools_rounds.take_complete() else {
            return false;
        };
        for item in items {
            self.send_event(ClientEvent::item_create(item));
        }
        let purpose = if self.goodbye.awaits_response() {
            Purpose::Goodbye
        } else {
            Purpose::Plain
        };
        self.send_response_create(purpose, None);
        true
    }

    // ---------------------------------------------------------------- endings

    fn begin_goodbye(&mut self, ending: Ending, now: Instant) {
        let reason = ending.reason();
        if !self.goodbye.begin(ending, now) {
            return;
        }
        tracing::info!(call_sid = %self.setup.offer.call_sid, %reason, "ending the call after a goodbye");
        self.idle_deadline = None;
        self.max_deadline = None;
    }

    /// Says `text` word for word, then hangs up once it has been heard.
    fn say_goodbye(&mut self, ending: Ending, text: &str, now: Instant) {
        if self.goodbye.in_progress() {
            return;
        }
        self.begin_goodbye(ending, now);
        self.request_response(Purpose::Goodbye, Some(say_exactly(text)));
    }

    fn check_hangup(&mut self, now: Instant) {
        let Some(response_id) = self.goodbye.spoken() else {
            return;
        };
        if !self.playback.response_pending(response_id) && !self.held(|(_, r, _)| r == response_id)
        {
            self.hang_up_now(now);
        }
    }

    fn hang_up_now(&mut self, now: Instant) {
        let Some(ending) = self.goodbye.take() else {
            return;
        };
        self.effects.push(Effect::Out(ending.frame()));
        self.finish(ending.reason(), now);
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
    fn finish(&mut self, reason: EndReason, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        let entries = self.transcripts.finish(&mut self.playback);
        self.publish_transcripts(entries);
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
        self.observe(Observation::CallEnded(reason));
        tracing::info!(call_sid = %self.setup.offer.call_sid, %reason, duration_ms, "call ended");
    }

    // ---------------------------------------------------------------- timers

    /// Handles every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        if self.session.is_ended() {
            return;
        }
        if self.start_deadline.is_some_and(|d| d <= now) {
            tracing::warn!(call_sid = %self.setup.offer.call_sid, "media stream never started");
            self.start_deadline = None;
            self.finish(EndReason::StreamLost, now);
            return;
        }
        if self.goodbye.deadline().is_some_and(|d| d <= now) {
            tracing::info!(call_sid = %self.setup.offer.call_sid, "goodbye not confirmed in time; hanging up");
            self.hang_up_now(now);
            return;
        }
        if self.session.reconnect_due(now) {
            self.effects.push(Effect::Reconnect);
        }
        self.maybe_filler(now);
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
    fn floor(&self) -> Floor {
        Floor {
            session_ready: self.session.can_send(),
            playing: self.playback.has_pending(),
            ending: self.goodbye.in_progress(),
        }
    }

    /// Says the filler line for a tool round whose business tools are slow, at most once per
    /// round, and only while the model is silent. The round's own `response.create` then waits
    /// for the filler's `response.done` like any other request.
    fn maybe_filler(&mut self, now: Instant) {
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

    fn on_idle(&mut self, now: Instant) {
        let Some(idle) = self.setup.agent.idle_timeout else {
            self.idle_deadline = None;
            return;
        };
        // A lost session waiting for its replacement counts as busy too: the caller may have
        // spoken to it.
        if !self.responses.silent(self.floor()) {
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

fn tool_call_result(reply: &ToolReply) -> ToolCallResult {
    match reply {
        ToolReply::Output(_) => ToolCallResult::Ok,
        ToolReply::Error { .. } => ToolCallResult::Error,
    }
}

fn instructions(text: String) -> ResponseParams {
    ResponseParams {
        instructions: Some(text),
        ..Default::default()
    }
}

/// A response that speaks `text` word for word.
fn say_exactly(text: &str) -> ResponseParams {
    instructions(format!("Say exactly: \"{text}\""))
}

#[cfg(test)]
mod tests;
