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
//! counting or logging leaves as [`super::observation::Observation`]s (the machine touches neither
//! metrics nor tracing); time comes in as arguments.
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
    CallEnded, CallOffer, CallOutcome, CallStarted, Role, ToolCall, ToolDispatched, ToolInvocation,
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

use super::amd::AmdWait;
use super::arbiter::{Arbiter, Floor, Purpose, Refusal};
use super::ending::{Ending, Goodbye, hangup_frame};
use super::lifecycle::{Lifecycle, Loss};
pub use super::lifecycle::{MAX_RECONNECTS, RECONNECT_WINDOW};
use super::observation::{Observation, ToolCallResult};
use super::session_check::SessionCheck;
use super::stream_clock::StreamClock;
use super::tool_rounds::ToolRounds;
use super::transcripts::Transcripts;
pub use super::transfer::Ringing;
use super::transfer::{
    Destination, Resolution, Transfer, event as transfer_event, returned_instructions,
};
use crate::agents::{Agent, END_CALL, HANDOFF, SEND_DTMF, SET_OUTCOME, TRANSFER_CALL};
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
/// Twilio sends caller media every 20 ms, silence included: when no frame at all has come from
/// the gateway for this long, the gateway holding the socket is gone, and this was the window
/// for a re-attach (a new stream from another gateway): the call ends `stream_lost`.
pub const REATTACH_WINDOW: Duration = Duration::from_secs(30);
/// While the assistant is busy, the idle timer looks again this often.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// The outcome a transfer that did not connect leaves (when the transfer set `transferred`).
pub const TRANSFER_FAILED_OUTCOME: &str = "transfer_failed";
/// The outcome a transfer records when the agent set none.
pub const TRANSFERRED_OUTCOME: &str = "transferred";

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

/// What a new owner knows of a call it takes over (see [`crate::takeover`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resumed {
    /// Usage of the previous owners (their `usage` events).
    pub usage: Usage,
    /// An outcome was recorded.
    pub outcome_set: bool,
    /// The caller waits for an answer: the conversation ends with the caller's words or a
    /// tool output.
    pub waiting: bool,
    /// Dispatched tool calls without a recorded result.
    pub pending_tools: Vec<ToolDispatched>,
    /// How long ago the call started.
    pub elapsed: Duration,
    /// Stream time up to which the transcript holds the caller's speech: replayed caller
    /// audio up to here is not sent to the new session again.
    pub heard_until_ms: u32,
    /// A transfer was ringing with no result recorded: the caller coming back on a new stream
    /// returns from a transfer that did not connect.
    pub transfer: Option<Ringing>,
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
    /// The media stream the call is on (a re-attach moves it to another).
    stream_sid: String,
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
    /// Whether the greeting waits for the answering-machine verdict (see [`super::amd`]).
    amd: AmdWait,
    speech_stopped_at: Option<Instant>,
    /// What was said, as the caller heard it.
    transcripts: Transcripts,

    /// The function calls of each response, answered together.
    tools_rounds: ToolRounds,
    outcome_set: bool,
    /// The outcome on record is the one a transfer set.
    transfer_outcome: bool,
    handoff: Option<PendingHandoff>,
    /// A call taken over: whether the caller was waiting for an answer, until its session is
    /// configured.
    resumed: Option<bool>,
    /// Tool calls the previous owner dispatched with no result recorded: sent again (same
    /// `call_id`) once the new session is configured.
    pending_tools: Vec<ToolDispatched>,
    /// Where the session's caller audio sits in stream time (for `audio_end_ms`).
    clock: StreamClock,
    /// Replayed caller audio stamped up to here is already in the transcript.
    skip_replayed_until: u32,
    /// Caller audio (stream time, payload) that came while a taken-over call's session was not
    /// configured yet: appended once the conversation is seeded, in order, so the question the
    /// caller asked during the takeover reaches the new session after the `session.update`
    /// that sets its audio format. Bounded by [`TAKEOVER_AUDIO_LIMIT`] (oldest dropped).
    takeover_audio: std::collections::VecDeque<(u32, Bytes)>,
    takeover_audio_bytes: usize,
    /// The output voice of the call: the first agent's. A GA session locks the voice once it
    /// has produced audio, and the caller should hear one voice for the whole call, so neither
    /// a handoff nor a replacement session changes it.
    voice: String,

    usage: Usage,
    /// What was used since the last `usage` event (published per response, so a crash of this
    /// worker loses none of it).
    unreported: Usage,
    /// The goodbye before a hang-up or transfer of ours.
    goodbye: Goodbye,
    /// A transfer whose result is not known yet (the call has no stream meanwhile).
    transfer: Option<Transfer>,
    start_deadline: Option<Instant>,
    max_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    idle_stage: u8,
    last_activity: Instant,
}

/// Caller audio kept for a taken-over call until its session is configured: the most recent
/// 5 s (as much as the Realtime writer's audio queue takes at once, [`AUDIO_QUEUE_FRAMES`]
/// frames of 20 ms), which holds the question a caller asked while the owner was lost.
///
/// [`AUDIO_QUEUE_FRAMES`]: crate::realtime::AUDIO_QUEUE_FRAMES
pub const TAKEOVER_AUDIO_LIMIT: usize = crate::realtime::AUDIO_QUEUE_FRAMES * 160;

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
            stream_sid: String::new(),
            last_chunk: 0,
            prestart: VecDeque::new(),
            prestart_bytes: 0,
            playback: Playback::new(),
            responses: Arbiter::default(),
            session_check: SessionCheck::default(),
            responses_with_audio: HashSet::new(),
            greeting: GreetingState::None,
            greeting_response: None,
            amd: AmdWait::new(setup.offer.async_amd, setup.agent.amd_timeout, now),
            speech_stopped_at: None,
            transcripts: Transcripts::default(),
            tools_rounds: ToolRounds::default(),
            outcome_set: false,
            transfer_outcome: false,
            handoff: None,
            resumed: None,
            pending_tools: Vec::new(),
            clock: StreamClock::default(),
            skip_replayed_until: 0,
            takeover_audio: std::collections::VecDeque::new(),
            takeover_audio_bytes: 0,
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
            unreported: Usage::default(),
            goodbye: Goodbye::default(),
            transfer: None,
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
            vars: offer.vars.clone(),
        };
        m.effects.push(Effect::Event(Body::Started(started)));
        m
    }

    /// A call taken over from a previous owner at `now`: like [`Self::new`], but the call is
    /// already recorded as started, its usage so far is `resumed.usage` and its clock started
    /// `resumed.elapsed` ago. Configure its session with [`Self::take_over_session`].
    pub fn take_over(setup: CallSetup, resumed: Resumed, now: Instant) -> Self {
        let mut m = Self::new(setup, now);
        m.effects.clear();
        m.accepted_at = now.checked_sub(resumed.elapsed).unwrap_or(now);
        m.max_deadline = m.setup.agent.max_call.map(|d| m.accepted_at + d);
        m.outcome_set = resumed.outcome_set;
        let model = std::mem::take(&mut m.usage.model);
        let transcription_model = std::mem::take(&mut m.usage.transcription_model);
        m.usage = Usage {
            model,
            transcription_model,
            ..resumed.usage
        };
        m.greeting = GreetingState::Done;
        m.amd = AmdWait::Off;
        m.resumed = Some(resumed.waiting);
        m.skip_replayed_until = resumed.heard_until_ms;
        m.pending_tools = resumed.pending_tools;
        if let Some(ringing) = resumed.transfer {
            // Taken over because the caller came back on a new stream (no gateway watches the
            // owner while the number rings), or while it still rings: its start or the result
            // grace says which.
            m.transfer_outcome = ringing.sets_outcome;
            m.transfer = Some(Transfer::dialing(
                ringing.to,
                ringing.sets_outcome,
                Duration::ZERO,
                now,
            ));
        }
        m
    }

    /// Whether the call was taken over and its session is not configured yet.
    pub fn is_takeover(&self) -> bool {
        self.resumed.is_some()
    }

    /// Publishes what was used since the last report, if anything.
    fn report_usage(&mut self) {
        if self.unreported == Usage::default() {
            return;
        }
        let mut used = std::mem::take(&mut self.unreported);
        used.model = self.usage.model.clone();
        used.transcription_model = self.usage.transcription_model.clone();
        self.effects.push(Effect::Event(Body::Usage(used)));
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
            self.transfer.as_ref().map(Transfer::deadline),
            self.start_deadline,
            self.max_deadline,
            self.idle_deadline,
            self.session.reconnect_at(),
            self.tools_rounds.filler_deadline(),
            self.amd.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn offset_ms(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.accepted_at).as_millis())
            .unwrap_or(u32::MAX)
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
}

fn tool_call_result(reply: &ToolReply) -> ToolCallResult {
    match reply {
        ToolReply::Output(_) => ToolCallResult::Ok,
        ToolReply::Error(_) => ToolCallResult::Error,
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

mod amd;
mod endings;
mod media;
mod server;
mod session;
mod timers;
mod tool_calls;
pub use amd::{NOT_REACHED_OUTCOME, VOICEMAIL_OUTCOME};
pub use tool_calls::MAX_SUMMARY_CHARS;

#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod tests;
