//! One Realtime session: an actor that owns a WebSocket connection and all of its state
//! (configuration, conversation, input buffer, active response, script cursors).
//!
//! The actor's handlers are synchronous: they only change state and queue server events;
//! the run loop then writes the queue to the socket. Everything timed (audio pacing, the
//! asynchronous transcription, session expiry) is a deadline the loop waits on with
//! `tokio::time`, next to the socket and the server's shutdown token.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_realtime::client::ResponseParams;
use switchboard_realtime::server::{
    ErrorDetail, TranscriptionError, TranscriptionTokenDetails, TranscriptionUsage,
};
use switchboard_realtime::session::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, TurnDetection,
};
use switchboard_realtime::{ClientEvent, ContentPart, Item, ServerEvent};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::audio::{Format, InputBuffer, VadEvent, VadParams};
use crate::conversation::{Conversation, Entry};
use crate::ids;
use crate::registry::Registry;
use crate::response::{Options, Pace, Plan, ResponseRun};
use crate::script::{self, FALLBACK_HEAR, FALLBACK_SAY, RaceOrder, Script, ScriptedError, Seeded};
use crate::validate;

/// Close code of the retired beta interface.
const CLOSE_BETA: u16 = 4000;
/// Close code "going away": session expiry and server shutdown.
const CLOSE_GOING_AWAY: u16 = 1001;

/// The client event types this server understands.
const CLIENT_EVENT_TYPES: &[&str] = &[
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
];

/// Beta-interface `response.create` fields.
const BETA_RESPONSE_FIELDS: &[&str] = &[
    "modalities",
    "voice",
    "output_audio_format",
    "temperature",
    "max_response_output_tokens",
];

/// Server-owned session fields a client cannot set.
const SERVER_SESSION_FIELDS: &[&str] = &["id", "object", "expires_at"];

/// What a session needs from its server.
pub(crate) struct SessionContext {
    /// Index of the connection (the key of its record).
    pub id: u64,
    pub script: Arc<Script>,
    pub registry: Registry,
    /// Cancelled when the server shuts down.
    pub cancel: CancellationToken,
    /// The `model` query parameter, if any.
    pub model: Option<String>,
    /// The upgrade carried an `OpenAI-Beta` header.
    pub beta: bool,
}

/// Runs a session on an upgraded connection until either side ends it.
pub(crate) async fn run(socket: WebSocket, ctx: SessionContext) {
    let (sink, mut stream) = socket.split();
    let id = ctx.id;
    let registry = ctx.registry.clone();
    let cancel = ctx.cancel.clone();
    let mut session = Session::new(ctx, sink);
    if session.ctx.beta {
        session.error(
            "beta_api_shape_disabled",
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
            None,
            None,
        );
        session.close = Some((CLOSE_BETA, "beta API shape disabled"));
    } else {
        let config = session.config.clone();
        session.out.push(ServerEvent::SessionCreated {
            event_id: ids::event(),
            session: config,
        });
    }
    loop {
        if session.flush().await.is_err() {
            break;
        }
        if session.dropped {
            tracing::debug!(session = id, "scripted drop: closing without a close frame");
            break;
        }
        if let Some((code, reason)) = session.close.take() {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if session.sink.send(Message::Close(Some(frame))).await.is_ok() {
                // Let the client answer the close handshake (bounded: it may never do so,
                // and a server shutting down does not wait for it).
                let drain = async { while let Some(Ok(_)) = stream.next().await {} };
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(2), drain) => {}
                    () = cancel.cancelled() => {}
                }
            }
            break;
        }
        let response_due = session.active.as_ref().map(|r| r.next_at);
        let transcript_due = session.transcripts.front().map(|t| t.due);
        tokio::select! {
            () = cancel.cancelled() => {
                session.close = Some((CLOSE_GOING_AWAY, "server shutting down"));
            }
            () = sleep_until(session.expires_at) => session.expire(),
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => session.on_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => session.error(
                    "invalid_event",
                    "Binary frames are not supported; send JSON text events.",
                    None,
                    None,
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            () = until(response_due) => session.tick_response(),
            () = until(transcript_due) => session.transcription_due(),
        }
    }
    tracing::debug!(session = id, "realtime session ended");
    registry.closed(id);
}

/// `secs` as a duration; a script built in code with a zero or negative speed gets one second
/// rather than a panic.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1))
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A transcription that completes later (`conversation.item.input_audio_transcription.completed`).
struct PendingTranscript {
    due: Instant,
    item_id: String,
    transcript: String,
    /// Milliseconds of caller audio transcribed (what the usage bills).
    audio_ms: u32,
    /// Whether this transcription fails instead.
    fails: bool,
}

/// The context a `gpt-realtime` session keeps before it truncates: "a 32k context model with
/// 4,096 max output tokens can only include 28,224 tokens in the context" (the SDK's
/// `truncation` docstring).
const CONTEXT_TOKENS: u64 = 28_224;

/// The socket was closed under us.
struct Gone;

struct Session {
    ctx: SessionContext,
    sink: SplitSink<WebSocket, Message>,
    /// Events waiting to be written.
    out: Vec<ServerEvent>,
    /// Close the connection with this code after the queued events.
    close: Option<(u16, &'static str)>,
    /// The effective configuration (what `session.updated` reports).
    config: switchboard_realtime::Session,
    conv: Conversation,
    conversation_id: String,
    input: InputBuffer,
    /// The user item of the speech VAD is hearing now.
    speech_item: Option<String>,
    active: Option<ResponseRun>,
    transcripts: VecDeque<PendingTranscript>,
    next_hear: usize,
    next_response: usize,
    /// The response whose speech was the last seeded item, if it also calls a function (the
    /// seeded call that follows is its own, not a later response's).
    seeded_say_with_call: Option<usize>,
    /// Input tokens of the previous response (served from cache next time).
    /// Input tokens (text, audio) of the previous response: the next one finds them cached.
    last_input: (u64, u64),
    /// The session has produced assistant audio: its voice is locked.
    spoke: bool,
    /// Client `response.create`s so far (for scripted VAD races).
    client_creates: u32,
    expires_at: Instant,
    /// A scripted `drop`: end the connection without a close frame.
    dropped: bool,
}

impl Session {
    fn new(ctx: SessionContext, sink: SplitSink<WebSocket, Message>) -> Session {
        let max_seconds = ctx.script.session.max_seconds;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let config = default_config(
            ctx.model.as_deref(),
            i64::try_from(unix_now.saturating_add(max_seconds)).unwrap_or(i64::MAX),
        );
        // Capped like a script's own bound, for scripts built in code.
        let expires_at = Instant::now() + Duration::from_secs(max_seconds.min(7 * 24 * 3600));
        Session {
            ctx,
            sink,
            out: Vec::new(),
            close: None,
            config,
            conv: Conversation::default(),
            conversation_id: ids::new("conv"),
            input: InputBuffer::default(),
            speech_item: None,
            active: None,
            transcripts: VecDeque::new(),
            next_hear: 0,
            next_response: 0,
            seeded_say_with_call: None,
            last_input: (0, 0),
            spoke: false,
            client_creates: 0,
            expires_at,
            dropped: false,
        }
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        for ev in std::mem::take(&mut self.out) {
            self.sink
                .send(Message::Text(ev.to_json().into()))
                .await
                .map_err(|_| Gone)?;
        }
        Ok(())
    }

    fn error(&mut self, code: &str, message: &str, param: Option<&str>, event_id: Option<&str>) {
        self.error_of_type("invalid_request_error", code, message, param, event_id);
    }

    fn error_of_type(
        &mut self,
        kind: &str,
        code: &str,
        message: &str,
        param: Option<&str>,
        event_id: Option<&str>,
    ) {
        self.out.push(ServerEvent::Error {
            event_id: ids::event(),
            error: ErrorDetail {
                kind: kind.into(),
                code: Some(code.into()),
                message: message.into(),
                param: param.map(str::to_string),
                event_id: event_id.map(str::to_string),
            },
        });
    }

    fn expire(&mut self) {
        let secs = self.ctx.script.session.max_seconds;
        let limit = match secs {
            1 => "1 second".to_string(),
            60 => "1 minute".to_string(),
            s if s % 60 == 0 => format!("{} minutes", s / 60),
            s => format!("{s} seconds"),
        };
        self.error(
            "session_expired",
            &format!("Your session hit the maximum duration of {limit}."),
            None,
            None,
        );
        self.close = Some((CLOSE_GOING_AWAY, "session expired"));
    }

    /// Handles one text frame: parse, validate, record, dispatch.
    fn on_text(&mut self, text: &str) {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("We could not parse the JSON body of your request: {e}.");
                return self.error("invalid_event", &msg, None, None);
            }
        };
        let event_id = value
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let eid = event_id.as_deref();
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            let msg = "Missing required parameter: 'type'.";
            return self.error("missing_required_parameter", msg, Some("type"), eid);
        };
        if !CLIENT_EVENT_TYPES.contains(&kind) {
            let msg = format!(
                "Invalid value: '{kind}'. Supported values are: {}.",
                CLIENT_EVENT_TYPES
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return self.error("invalid_event", &msg, Some("type"), eid);
        }
        if kind == "session.update" && value.pointer("/session/type").is_none() {
            let msg = "Missing required parameter: 'session.type'.";
            return self.error("missing_required_parameter", msg, Some("session.type"), eid);
        }
        // Field by field before the typed parse, so a refusal names the parameter.
        if kind == "session.update"
            && let Some(raw) = value.get("session").and_then(Value::as_object)
            && let Err(r) = validate::session(raw)
        {
            return self.error(r.code, &r.message, Some(&r.param), eid);
        }
        let event = match serde_json::from_value::<ClientEvent>(value.clone()) {
            Ok(ev) => ev,
            Err(e) => {
                let msg = format!("Invalid '{kind}' event: {e}.");
                return self.error("invalid_event", &msg, None, eid);
            }
        };
        self.ctx.registry.event(self.ctx.id, &event);
        match event {
            ClientEvent::SessionUpdate { session, .. } => {
                self.session_update(&value["session"], &session.kind, eid)
            }
            ClientEvent::InputAudioBufferAppend { audio, .. } => self.append(&audio, eid),
            ClientEvent::InputAudioBufferCommit { .. } => self.commit_manually(eid),
            ClientEvent::InputAudioBufferClear { .. } => {
                self.input.take();
                self.speech_item = None;
                self.out.push(ServerEvent::InputAudioBufferCleared {
                    event_id: ids::event(),
                });
            }
            ClientEvent::ConversationItemCreate {
                previous_item_id,
                item,
                ..
            } => self.item_create(item, previous_item_id.as_deref(), eid),
            ClientEvent::ConversationItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
                ..
            } => self.truncate(&item_id, content_index, audio_end_ms, eid),
            ClientEvent::ConversationItemDelete { item_id, .. } => {
                if self.conv.remove(&item_id) {
                    self.out.push(ServerEvent::ConversationItemDeleted {
                        event_id: ids::event(),
                        item_id,
                    });
                } else {
                    let msg = format!("Item with item_id not found: {item_id}");
                    self.error("item_delete_invalid_item_id", &msg, Some("item_id"), eid);
                }
            }
            ClientEvent::ResponseCreate { response, .. } => {
                if let Some(field) = value
                    .get("response")
                    .and_then(Value::as_object)
                    .and_then(|r| BETA_RESPONSE_FIELDS.iter().find(|f| r.contains_key(**f)))
                {
                    let msg = format!("Unknown parameter: 'response.{field}'.");
                    let param = format!("response.{field}");
                    return self.error("unknown_parameter", &msg, Some(&param), eid);
                }
                self.response_create(response.unwrap_or_default(), eid)
            }
            ClientEvent::ResponseCancel { response_id, .. } => {
                self.response_cancel(response_id.as_deref(), eid)
            }
        }
    }

    fn session_update(&mut self, raw: &Value, kind: &str, eid: Option<&str>) {
        let Some(raw) = raw.as_object() else {
            let msg = "Invalid type for 'session': expected an object.";
            return self.error("invalid_type", msg, Some("session"), eid);
        };
        if let Err(r) = validate::session(raw) {
            return self.error(r.code, &r.message, Some(&r.param), eid);
        }
        if let Some(model) = raw.get("model").and_then(Value::as_str)
            && self.config.model.as_deref() != Some(model)
        {
            let msg = format!(
                "Cannot update a session's model (it is {}, not '{model}').",
                self.config.model.as_deref().unwrap_or_default()
            );
            return self.error("invalid_value", &msg, Some("session.model"), eid);
        }
        let current_voice = self
            .config
            .audio
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.voice.clone());
        if let Some(voice) = raw
            .get("audio")
            .and_then(|a| a.pointer("/output/voice"))
            .and_then(Value::as_str)
            && self.spoke
            && current_voice.as_deref() != Some(voice)
        {
            let msg = "Cannot update a conversation's voice if assistant audio is present.";
            return self.error("cannot_update_voice", msg, None, eid);
        }
        if kind != "realtime" {
            let msg =
                format!("Invalid value: '{kind}'. This server supports only 'realtime' sessions.");
            return self.error("invalid_value", &msg, Some("session.type"), eid);
        }
        let mut merged = match serde_json::to_value(&self.config) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("The session could not be updated: {e}");
                return self.error_of_type("server_error", "server_error", &msg, None, eid);
            }
        };
        merge(&mut merged, raw, 0);
        let mut config: switchboard_realtime::Session = match serde_json::from_value(merged) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("Invalid 'session': {e}.");
                return self.error("invalid_value", &msg, Some("session"), eid);
            }
        };
        fill_defaults(&mut config);
        self.config = config.clone();
        self.out.push(ServerEvent::SessionUpdated {
            event_id: ids::event(),
            session: config,
        });
    }

    fn turn_detection(&self) -> Option<&TurnDetection> {
        self.config
            .audio
            .as_ref()?
            .input
            .as_ref()?
            .turn_detection
            .as_ref()
    }

    /// VAD parameters, and the `create_response` / `interrupt_response` flags.
    fn vad(&self) -> Option<(VadParams, bool, bool)> {
        match self.turn_detection()? {
            TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                create_response,
                interrupt_response,
                ..
            } => Some((
                VadParams {
                    threshold: threshold.unwrap_or(0.5),
                    prefix_padding_ms: prefix_padding_ms.unwrap_or(300),
                    silence_duration_ms: silence_duration_ms.unwrap_or(500),
                },
                create_response.unwrap_or(true),
                interrupt_response.unwrap_or(true),
            )),
            // Semantic VAD is played as energy VAD with the default settings.
            TurnDetection::SemanticVad {
                create_response,
                interrupt_response,
                ..
            } => Some((
                VadParams {
                    threshold: 0.5,
                    prefix_padding_ms: 300,
                    silence_duration_ms: 500,
                },
                create_response.unwrap_or(true),
                interrupt_response.unwrap_or(true),
            )),
        }
    }

    /// The transcription model, when transcription is on.
    fn transcription_model(&self) -> Option<String> {
        self.config
            .audio
            .as_ref()
            .and_then(|a| a.input.as_ref())
            .and_then(|i| i.transcription.as_ref())
            .map(|t| t.model.clone())
    }

    /// The session's input and output formats.
    fn formats(&self) -> (Format, Format) {
        let audio = self.config.audio.as_ref();
        let kind = |f: Option<&switchboard_realtime::session::AudioFormat>| {
            f.map_or(Format::Pcm, |f| Format::from_kind(&f.kind))
        };
        (
            kind(
                audio
                    .and_then(|a| a.input.as_ref())
                    .and_then(|i| i.format.as_ref()),
            ),
            kind(
                audio
                    .and_then(|a| a.output.as_ref())
                    .and_then(|o| o.format.as_ref()),
            ),
        )
    }

    fn append(&mut self, audio: &str, eid: Option<&str>) {
        let bytes = match B64.decode(audio) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("Invalid 'audio': expected base64-encoded audio ({e}).");
                return self.error("invalid_value", &msg, Some("audio"), eid);
            }
        };
        // The VAD hears the audio as the session's input format says it is.
        let bytes = self.formats().0.to_mulaw(&bytes);
        let vad = self.vad();
        let mut events = Vec::new();
        self.input
            .append(&bytes, vad.map(|(params, ..)| params), &mut events);
        let (create, interrupt) = vad.map_or((false, false), |(_, c, i)| (c, i));
        for ev in events {
            match ev {
                VadEvent::Started { audio_start_ms } => {
                    let item_id = ids::new("item");
                    self.speech_item = Some(item_id.clone());
                    self.out.push(ServerEvent::SpeechStarted {
                        event_id: ids::event(),
                        audio_start_ms,
                        item_id,
                    });
                    if interrupt {
                        self.cancel_active("turn_detected");
                    }
                }
                VadEvent::Stopped {
                    audio_end_ms,
                    duration_ms,
                } => {
                    let item_id = self.speech_item.take().unwrap_or_else(|| ids::new("item"));
                    self.out.push(ServerEvent::SpeechStopped {
                        event_id: ids::event(),
                        audio_end_ms,
                        item_id: item_id.clone(),
                    });
                    self.commit(item_id, duration_ms);
                    if create && self.active.is_none() {
                        self.start_response(ResponseParams::default(), None);
                    }
                }
            }
        }
    }

    fn commit_manually(&mut self, eid: Option<&str>) {
        let ms = self.input.buffered_ms();
        if ms < 100 {
            let msg = format!(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has {ms}.00ms of audio."
            );
            return self.error("input_audio_buffer_commit_empty", &msg, None, eid);
        }
        let item_id = self.speech_item.take().unwrap_or_else(|| ids::new("item"));
        self.input.take();
        self.commit(item_id, ms);
    }

    /// Turns `ms` of buffered caller audio into user item `item_id`; what the caller said is
    /// the next `hear` entry, reported later if transcription is on.
    fn commit(&mut self, item_id: String, ms: u32) {
        let previous_item_id = self.conv.last_id();
        self.out.push(ServerEvent::InputAudioBufferCommitted {
            event_id: ids::event(),
            item_id: item_id.clone(),
            previous_item_id: previous_item_id.clone(),
        });
        let item = |status: &str| Item::Message {
            id: Some(item_id.clone()),
            role: "user".into(),
            content: vec![ContentPart::InputAudio {
                audio: None,
                transcript: None,
            }],
            status: Some(status.into()),
        };
        self.out.push(ServerEvent::ConversationItemAdded {
            event_id: ids::event(),
            previous_item_id: previous_item_id.clone(),
            item: item("in_progress"),
        });
        self.out.push(ServerEvent::ConversationItemDone {
            event_id: ids::event(),
            previous_item_id,
            item: item("completed"),
        });
        self.conv.push(Entry {
            item: item("completed"),
            audio_ms: ms,
            assistant_audio: false,
        });
        let heard = self
            .ctx
            .script
            .hear
            .get(self.next_hear)
            .map_or(FALLBACK_HEAR, String::as_str)
            .to_string();
        self.next_hear += 1;
        // The model hears the words whether or not the client asked for a transcript.
        self.conv.set_user_transcript(&item_id, &heard);
        if self.transcription_model().is_some() {
            let settings = &self.ctx.script.session;
            let delay = match settings.transcription_delay_ms {
                Some(ms) => Duration::from_millis(u64::from(ms)),
                None => seconds(0.15 / settings.speed),
            };
            let turn = u32::try_from(self.next_hear).unwrap_or(u32::MAX);
            self.transcripts.push_back(PendingTranscript {
                due: Instant::now() + delay,
                item_id,
                transcript: heard,
                audio_ms: ms,
                fails: settings.transcription_fails.contains(&turn),
            });
        }
    }

    fn transcription_due(&mut self) {
        let now = Instant::now();
        while self.transcripts.front().is_some_and(|t| t.due <= now) {
            let Some(t) = self.transcripts.pop_front() else {
                break;
            };
            if t.fails {
                self.out.push(ServerEvent::InputTranscriptionFailed {
                    event_id: ids::event(),
                    item_id: t.item_id,
                    content_index: 0,
                    error: TranscriptionError {
                        kind: Some("server_error".into()),
                        code: None,
                        message: Some("Input transcription failed.".into()),
                        param: None,
                    },
                });
                continue;
            }
            let usage = self
                .transcription_model()
                .map(|model| transcription_usage(&model, t.audio_ms, &t.transcript));
            self.out.push(ServerEvent::InputTranscriptionCompleted {
                event_id: ids::event(),
                item_id: t.item_id,
                content_index: 0,
                transcript: t.transcript,
                usage,
            });
        }
    }

    fn item_create(&mut self, mut item: Item, previous_item_id: Option<&str>, eid: Option<&str>) {
        match &mut item {
            Item::Message {
                role,
                status,
                content,
                ..
            } => {
                if !matches!(role.as_str(), "user" | "assistant" | "system") {
                    let msg = format!(
                        "Invalid value: '{role}'. Supported values are: 'user', 'assistant', and 'system'."
                    );
                    return self.error("invalid_value", &msg, Some("item.role"), eid);
                }
                // The GA content types per role (openai-python's
                // RealtimeConversationItem{User,Assistant,System}Message): the beta `text` and
                // `audio` spellings and a part of another role are refused.
                let allowed: &[&str] = match role.as_str() {
                    "user" => &["input_text", "input_audio"],
                    "assistant" => &["output_text", "output_audio"],
                    _ => &["input_text"],
                };
                if let Some((i, kind)) = content
                    .iter()
                    .map(content_type)
                    .enumerate()
                    .find(|(_, kind)| !allowed.contains(kind))
                {
                    let msg = format!(
                        "Invalid value: '{kind}'. Supported values for a {role} message are: {}.",
                        allowed
                            .iter()
                            .map(|k| format!("'{k}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let param = format!("item.content[{i}].type");
                    return self.error("invalid_value", &msg, Some(&param), eid);
                }
                *status = Some("completed".into());
            }
            Item::FunctionCall { status, .. } => *status = Some("completed".into()),
            Item::FunctionCallOutput {
                call_id, output, ..
            } => {
                if !self.conv.has_call(call_id) {
                    let msg = format!("Tool call ID '{call_id}' not found in conversation.");
                    return self.error("invalid_value", &msg, Some("item.call_id"), eid);
                }
                // A non-JSON output substitutes every field as empty.
                self.conv.last_output = Some(serde_json::from_str(output).unwrap_or(Value::Null));
            }
            Item::Other => {
                let msg = "Unsupported item type; supported: 'message', 'function_call', 'function_call_output'.";
                return self.error("invalid_value", msg, Some("item.type"), eid);
            }
        }
        let id = match item.id() {
            Some(id) if self.conv.contains(id) => {
                let msg = format!("Item with id '{id}' already exists.");
                return self.error("invalid_value", &msg, Some("item.id"), eid);
            }
            Some(id) => id.to_string(),
            None => ids::new("item"),
        };
        set_id(&mut item, id);
        self.follow_seeded(&item);
        let previous_item_id = self.conv.insert(
            Entry {
                item: item.clone(),
                audio_ms: 0,
                assistant_audio: false,
            },
            previous_item_id,
        );
        self.out.push(ServerEvent::ConversationItemAdded {
            event_id: ids::event(),
            previous_item_id: previous_item_id.clone(),
            item: item.clone(),
        });
        self.out.push(ServerEvent::ConversationItemDone {
            event_id: ids::event(),
            previous_item_id,
            item,
        });
    }

    /// Moves the script's cursors past what a client-created item says was already heard or
    /// answered: a session seeded with a call's conversation goes on from there (the next
    /// caller turn, the next response), as a real model answers from the conversation it is
    /// given rather than from the start of its script. A `drop` right after an answer was the
    /// failure of the connection that played it: the session seeded after it does not repeat it.
    fn follow_seeded(&mut self, item: &Item) {
        use switchboard_realtime::item::ContentPart;
        let text = |content: &[ContentPart]| {
            content
                .iter()
                .filter_map(|part| match part {
                    ContentPart::InputText { text } | ContentPart::OutputText { text } => {
                        Some(text.as_str())
                    }
                    _ => None,
                })
                .collect::<String>()
        };
        let script = &self.ctx.script;
        let output = self.conv.last_output.as_ref();
        let said_with_call = self.seeded_say_with_call.take();
        match item {
            Item::Message { role, content, .. } if role == "user" => {
                if let Some(i) = script.heard_at(self.next_hear, Seeded::Heard(&text(content))) {
                    self.next_hear = i + 1;
                }
            }
            Item::Message { role, content, .. } if role == "assistant" => {
                let said = text(content);
                if let Some(i) = script.answered_at(self.next_response, Seeded::Said(&said), output)
                {
                    self.next_response = i + 1;
                    self.seeded_say_with_call = script.responses[i].call.is_some().then_some(i);
                    self.skip_drops();
                }
            }
            Item::FunctionCall { name, .. } => {
                // The call of a response whose speech was seeded just before is that response's.
                let spoken = said_with_call
                    .and_then(|i| script.responses[i].call.as_ref())
                    .is_some_and(|c| c.name == *name);
                if !spoken
                    && let Some(i) =
                        script.answered_at(self.next_response, Seeded::Called(name), output)
                {
                    self.next_response = i + 1;
                    self.skip_drops();
                }
            }
            _ => {}
        }
    }

    /// Moves the response cursor past `drop` entries (see [`Session::follow_seeded`]).
    fn skip_drops(&mut self) {
        let responses = &self.ctx.script.responses;
        while responses.get(self.next_response).is_some_and(|r| r.drop) {
            self.next_response += 1;
        }
    }

    fn truncate(
        &mut self,
        item_id: &str,
        content_index: u32,
        audio_end_ms: u32,
        eid: Option<&str>,
    ) {
        let Some(entry) = self.conv.get(item_id) else {
            let msg = format!("Item with item_id not found: {item_id}");
            return self.error("item_truncate_invalid_item_id", &msg, Some("item_id"), eid);
        };
        // Truncating to 0 ms is refused like truncating an item without audio.
        if !entry.assistant_audio || entry.audio_ms == 0 || audio_end_ms == 0 {
            let msg = "Only model output audio messages can be truncated";
            return self.error("unsupported_content_type", msg, Some("item_id"), eid);
        }
        if content_index != 0 {
            let msg =
                format!("Invalid content_index: {content_index}. The item has one content part.");
            return self.error("invalid_value", &msg, Some("content_index"), eid);
        }
        let have = entry.audio_ms;
        if audio_end_ms > have {
            let msg = format!("Audio content of {have}ms is already shorter than {audio_end_ms}ms");
            return self.error("invalid_value", &msg, Some("audio_end_ms"), eid);
        }
        // The transcript loses the words of the cut audio, in proportion.
        let text = entry.item.text();
        let words: Vec<&str> = text.split_whitespace().collect();
        let keep = (words.len() as u64 * u64::from(audio_end_ms)).div_ceil(u64::from(have));
        let kept = words[..(keep as usize).min(words.len())].join(" ");
        self.conv.set_transcript(item_id, &kept, None);
        if let Some(entry) = self.conv.get_mut(item_id) {
            entry.audio_ms = audio_end_ms;
        }
        self.out.push(ServerEvent::ConversationItemTruncated {
            event_id: ids::event(),
            item_id: item_id.to_string(),
            content_index,
            audio_end_ms,
        });
    }

    fn response_create(&mut self, params: ResponseParams, eid: Option<&str>) {
        if let Some(metadata) = &params.metadata
            && let Some(r) = check_metadata(metadata)
        {
            return self.error(r.code, &r.message, Some(&r.param), eid);
        }
        self.client_creates += 1;
        let settings = &self.ctx.script.session;
        if self.active.is_none() && settings.vad_race.contains(&self.client_creates) {
            // The caller's turn ended at the same moment: server VAD starts its own response
            // and this one is refused, in the scripted order.
            match settings.vad_race_order {
                RaceOrder::CreatedThenError => {
                    self.start_response(ResponseParams::default(), None);
                    self.refuse_active(eid);
                }
                RaceOrder::ErrorThenCreated => {
                    let at = self.out.len();
                    self.start_response(ResponseParams::default(), None);
                    let started: Vec<ServerEvent> = self.out.drain(at..).collect();
                    self.refuse_active(eid);
                    self.out.extend(started);
                }
            }
            return;
        }
        if self.active.is_some() {
            return self.refuse_active(eid);
        }
        self.start_response(params, eid);
    }

    fn refuse_active(&mut self, eid: Option<&str>) {
        let id = self.active.as_ref().map_or("", |r| r.id.as_str());
        let msg = format!(
            "Conversation already has an active response in progress: {id}. Wait until the response is finished before creating a new one."
        );
        self.error("conversation_already_has_active_response", &msg, None, eid);
    }

    /// Starts a response (from the client or VAD): a quoted instruction is spoken as-is,
    /// anything else plays the next scripted response.
    fn start_response(&mut self, params: ResponseParams, eid: Option<&str>) {
        let plan = match params.instructions.as_deref().and_then(script::quoted) {
            Some(text) => Plan {
                say: Some(text.to_string()),
                call: None,
            },
            None => match self.next_scripted() {
                Ok(plan) => plan,
                Err(e) => {
                    return self.error_of_type(&e.kind, &e.code, &e.message, None, eid);
                }
            },
        };
        if self.dropped {
            return;
        }
        let settings = &self.ctx.script.session;
        let output_speed = self
            .config
            .audio
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.speed)
            .map_or(1.0, |s| f64::from(s).clamp(0.25, 1.5));
        let pace = Pace {
            ms_per_word: f64::from(settings.ms_per_word) / output_speed,
            delta_interval: seconds(0.1 / settings.speed),
        };
        let in_conversation = params.conversation.as_deref() != Some("none");
        let instructions = params
            .instructions
            .or_else(|| self.config.instructions.clone())
            .unwrap_or_default();
        // Server-side truncation runs before the model reads the conversation; dropping items
        // changes the prefix, so nothing is served from the cache this time.
        let instruction_tokens = crate::conversation::word_tokens(&instructions);
        let truncated = match self.truncation(instruction_tokens) {
            Some((limit, retention)) => self.conv.truncate(limit, retention),
            None => false,
        };
        let (text, audio) = self.last_input;
        // The prompt cache works in 64-token blocks once a prompt reaches 1,024 tokens.
        let cached_tokens = if truncated || text + audio < 1024 {
            (0, 0)
        } else {
            let cached = (text + audio) / 64 * 64;
            let cached_audio = cached * audio / (text + audio);
            (cached - cached_audio, cached_audio)
        };
        let options = Options {
            in_conversation,
            conversation_id: in_conversation.then(|| self.conversation_id.clone()),
            metadata: params.metadata,
            cached_tokens,
            format: self.formats().1,
        };
        let run = ResponseRun::start(
            plan,
            pace,
            options,
            &self.conv,
            &instructions,
            Instant::now(),
            &mut self.out,
        );
        self.active = Some(run);
    }

    /// The next `[[response]]` (or the fallback), with `{{field}}` filled in.
    fn next_scripted(&mut self) -> Result<Plan, ScriptedError> {
        let entry = self.ctx.script.responses.get(self.next_response).cloned();
        self.next_response += 1;
        let Some(entry) = entry else {
            return Ok(Plan {
                say: Some(FALLBACK_SAY.into()),
                call: None,
            });
        };
        if entry.drop {
            self.dropped = true;
            return Ok(Plan {
                say: None,
                call: None,
            });
        }
        if let Some(error) = entry.error {
            return Err(error);
        }
        Ok(Plan {
            say: entry
                .say
                .map(|s| script::substitute(&s, self.conv.last_output.as_ref())),
            call: entry.call,
        })
    }

    fn tick_response(&mut self) {
        let Some(run) = &mut self.active else {
            return;
        };
        let done = run.tick(&mut self.conv, &mut self.out);
        self.spoke |= run.spoke();
        if done {
            self.last_input = run.input_tokens();
            self.active = None;
        }
    }

    fn cancel_active(&mut self, reason: &str) {
        if let Some(mut run) = self.active.take() {
            run.cancel(reason, &mut self.conv, &mut self.out);
            self.spoke |= run.spoke();
            self.last_input = run.input_tokens();
        }
    }

    /// The conversation token limit and retention ratio of the session's `truncation`
    /// (`auto`: what the context window leaves after the instructions, nothing retained beyond
    /// fitting; `disabled`: none).
    fn truncation(&self, instruction_tokens: u64) -> Option<(u64, f64)> {
        use switchboard_realtime::session::Truncation;
        match self.config.truncation.as_ref() {
            Some(Truncation::Mode(m)) if m == "disabled" => None,
            Some(Truncation::RetentionRatio(r)) => {
                let limit = r
                    .token_limits
                    .as_ref()
                    .and_then(|l| l.post_instructions)
                    .unwrap_or(CONTEXT_TOKENS);
                Some((limit, r.retention_ratio))
            }
            _ => Some((CONTEXT_TOKENS.saturating_sub(instruction_tokens), 1.0)),
        }
    }

    fn response_cancel(&mut self, response_id: Option<&str>, eid: Option<&str>) {
        let matches = match (&self.active, response_id) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(run), Some(id)) => run.id == id,
        };
        if !matches {
            let msg = "Cancellation failed: no active response found";
            return self.error("response_cancel_not_active", msg, None, eid);
        }
        self.cancel_active("client_cancelled");
    }
}

/// The configuration a new session starts with.
fn default_config(model: Option<&str>, expires_at: i64) -> switchboard_realtime::Session {
    switchboard_realtime::Session {
        kind: "realtime".into(),
        model: Some(
            model
                .unwrap_or(switchboard_realtime::DEFAULT_MODEL)
                .to_string(),
        ),
        output_modalities: Some(vec!["audio".into()]),
        instructions: Some(String::new()),
        audio: Some(AudioConfig {
            input: Some(AudioInput {
                format: Some(AudioFormat::pcm()),
                transcription: None,
                noise_reduction: None,
                turn_detection: Some(TurnDetection::ServerVad {
                    threshold: Some(0.5),
                    prefix_padding_ms: Some(300),
                    silence_duration_ms: Some(500),
                    idle_timeout_ms: None,
                    create_response: Some(true),
                    interrupt_response: Some(true),
                }),
            }),
            output: Some(AudioOutput {
                format: Some(AudioFormat::pcm()),
                voice: Some("alloy".into()),
                speed: Some(1.0),
            }),
        }),
        tools: Some(Vec::new()),
        tool_choice: Some("auto".into()),
        max_output_tokens: Some(Value::String("inf".into())),
        truncation: Some(switchboard_realtime::session::Truncation::Mode(
            "auto".into(),
        )),
        id: Some(ids::new("sess")),
        object: Some("realtime.session".into()),
        expires_at: Some(expires_at),
    }
}

/// Merges a `session.update` into the current configuration: the containers `audio`,
/// `audio.input` and `audio.output` merge field by field; every other field (including
/// `turn_detection` and `transcription`, and `null` to clear) replaces the old value.
fn merge(current: &mut Value, update: &serde_json::Map<String, Value>, depth: usize) {
    let Some(target) = current.as_object_mut() else {
        return;
    };
    for (key, value) in update {
        if depth == 0 && SERVER_SESSION_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let container = match depth {
            0 => key == "audio",
            1 => key == "input" || key == "output",
            _ => false,
        };
        match (container, value.as_object()) {
            (true, Some(inner)) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Default::default()));
                if !slot.is_object() {
                    *slot = Value::Object(Default::default());
                }
                merge(slot, inner, depth + 1);
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Fills the documented defaults into a turn detection that left them out.
fn fill_defaults(config: &mut switchboard_realtime::Session) {
    let Some(td) = config
        .audio
        .as_mut()
        .and_then(|a| a.input.as_mut())
        .and_then(|i| i.turn_detection.as_mut())
    else {
        return;
    };
    match td {
        TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            create_response,
            interrupt_response,
            ..
        } => {
            threshold.get_or_insert(0.5);
            prefix_padding_ms.get_or_insert(300);
            silence_duration_ms.get_or_insert(500);
            create_response.get_or_insert(true);
            interrupt_response.get_or_insert(true);
        }
        TurnDetection::SemanticVad {
            eagerness,
            create_response,
            interrupt_response,
        } => {
            eagerness.get_or_insert_with(|| "auto".into());
            create_response.get_or_insert(true);
            interrupt_response.get_or_insert(true);
        }
    }
}

/// What a transcription of `audio_ms` of speech saying `transcript` bills: `whisper-1` by the
/// second, the `gpt-*-transcribe` models by tokens (about 10 audio tokens per second in, the
/// transcript's tokens out).
fn transcription_usage(model: &str, audio_ms: u32, transcript: &str) -> TranscriptionUsage {
    if model == "whisper-1" {
        return TranscriptionUsage::Duration {
            seconds: f64::from(audio_ms) / 1000.0,
        };
    }
    let audio_tokens = u64::from(audio_ms) / 100;
    let output_tokens = crate::conversation::word_tokens(transcript);
    TranscriptionUsage::Tokens {
        input_tokens: audio_tokens,
        output_tokens,
        total_tokens: audio_tokens + output_tokens,
        input_token_details: Some(TranscriptionTokenDetails {
            audio_tokens,
            text_tokens: 0,
        }),
    }
}

/// `response.metadata`: at most 16 pairs, keys up to 64 characters, values up to 512.
fn check_metadata(
    metadata: &switchboard_realtime::server::Metadata,
) -> Option<validate::Rejection> {
    if metadata.len() > 16 {
        return Some(validate::Rejection {
            code: "object_above_max_properties",
            message: format!(
                "Invalid 'response.metadata': too many properties. Expected an object with at most 16 properties, but got an object with {} properties instead.",
                metadata.len()
            ),
            param: "response.metadata".into(),
        });
    }
    for (key, value) in metadata {
        if key.chars().count() > 64 {
            return Some(validate::Rejection {
                code: "string_above_max_length",
                message: format!(
                    "Invalid 'response.metadata': string too long. Expected a string with maximum length 64, but got a string with length {} instead.",
                    key.chars().count()
                ),
                param: "response.metadata".into(),
            });
        }
        if value.chars().count() > 512 {
            let param = format!("response.metadata.{key}");
            return Some(validate::Rejection {
                code: "string_above_max_length",
                message: format!(
                    "Invalid '{param}': string too long. Expected a string with maximum length 512, but got a string with length {} instead.",
                    value.chars().count()
                ),
                param,
            });
        }
    }
    None
}

fn set_id(item: &mut Item, new_id: String) {
    match item {
        Item::Message { id, .. }
        | Item::FunctionCall { id, .. }
        | Item::FunctionCallOutput { id, .. } => {
            *id = Some(new_id);
        }
        Item::Other => {}
    }
}

/// The wire name of a content part's type.
fn content_type(part: &switchboard_realtime::item::ContentPart) -> &'static str {
    use switchboard_realtime::item::ContentPart;
    match part {
        ContentPart::InputText { .. } => "input_text",
        ContentPart::InputAudio { .. } => "input_audio",
        ContentPart::OutputText { .. } => "output_text",
        ContentPart::OutputAudio { .. } => "output_audio",
        ContentPart::Text { .. } => "text",
        ContentPart::Audio { .. } => "audio",
        ContentPart::Other => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_merges_containers_and_replaces_leaves() {
        let mut config = default_config(None, 0);
        let before_id = config.id.clone();
        let mut current = serde_json::to_value(&config).unwrap();
        let update = serde_json::json!({
            "type": "realtime",
            "id": "sess_mine",
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.7}
                },
                "output": {"voice": "cedar"}
            }
        });
        merge(&mut current, update.as_object().unwrap(), 0);
        config = serde_json::from_value(current).unwrap();
        fill_defaults(&mut config);
        assert_eq!(config.id, before_id, "the server owns the id");
        assert_eq!(config.instructions.as_deref(), Some("Be brief."));
        let audio = config.audio.unwrap();
        let input = audio.input.unwrap();
        assert_eq!(input.format, Some(AudioFormat::pcm()), "kept");
        assert!(input.transcription.is_some());
        assert_eq!(
            input.turn_detection,
            Some(TurnDetection::ServerVad {
                threshold: Some(0.7),
                prefix_padding_ms: Some(300),
                silence_duration_ms: Some(500),
                idle_timeout_ms: None,
                create_response: Some(true),
                interrupt_response: Some(true),
            })
        );
        let output = audio.output.unwrap();
        assert_eq!(output.voice.as_deref(), Some("cedar"));
        assert_eq!(output.format, Some(AudioFormat::pcm()), "kept");
    }

    #[test]
    fn null_turn_detection_means_manual_turns() {
        let config = default_config(None, 0);
        let mut current = serde_json::to_value(&config).unwrap();
        let update =
            serde_json::json!({"type": "realtime", "audio": {"input": {"turn_detection": null}}});
        merge(&mut current, update.as_object().unwrap(), 0);
        let config: switchboard_realtime::Session = serde_json::from_value(current).unwrap();
        let input = config.audio.unwrap().input.unwrap();
        assert_eq!(input.turn_detection, None);
        assert_eq!(input.format, Some(AudioFormat::pcm()));
    }
}
