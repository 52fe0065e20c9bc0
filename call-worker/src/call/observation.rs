//! What the call machine noticed, for the actor to record.
//!
//! The machine decides and the actor acts: counting and logging are actions too, so the machine
//! queues [`Observation`]s (drained with [`super::machine::CallMachine::drain_observations`]) and
//! the actor turns each into its metric and its log line with [`Observation::record`], inside the
//! call's span. The machine itself touches neither the metrics registry nor the tracing
//! subscriber, and tests read what it noticed as plain values.

use switchboard_proto::event::{AnsweredBy, DialStatus, EndReason};

use super::arbiter::Purpose;
use crate::metrics as m;

/// How a tool call ended, as counted (`result` label of [`m::TOOL_CALLS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallResult {
    /// The tool answered.
    Ok,
    /// The tool (or the worker for it) answered with an error.
    Error,
    /// A built-in tool ran inside the worker.
    Builtin,
    /// The model called a tool the call does not declare.
    UnknownTool,
}

impl ToolCallResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Builtin => "builtin",
            Self::UnknownTool => "unknown_tool",
        }
    }
}

/// Something worth counting or logging that happened on a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    // ------------------------------------------------------------ the media stream
    /// The gateway's stream started.
    StreamStarted { stream_sid: String, gateway: String },
    /// The call moved onto a new stream of another gateway (re-attach).
    ReAttached {
        from: String,
        to: String,
        gateway: String,
    },
    /// The stream stopped; `stop` is the gateway's word, `reason` the end it means.
    StreamStopped { stop: String, reason: EndReason },
    /// A stop reason this worker does not know (a newer gateway): ended as a lost stream.
    UnknownStopReason { stop: String },
    /// The stream stopped so Twilio could play keys; the call comes back on a new stream.
    LeftForKeys,
    /// The stream never started within its deadline.
    StreamNeverStarted,
    /// No frame from the gateway and no re-attach within the window.
    StreamGone,
    /// Caller audio chunks that never reached the worker (a gap in Twilio's numbering).
    InboundAudioLost(u64),
    /// A caller audio frame dropped because no session could hear it.
    AudioDropped,
    /// Bytes of assistant audio dropped from the pre-start buffer.
    OutboundDropped(u64),
    /// A keypress that is not a DTMF digit, ignored.
    InvalidDtmf { digit: String },

    // ------------------------------------------------------------ the model session
    /// The Realtime session exists (not yet configured).
    SessionCreated { id: Option<String> },
    /// The session took the call's configuration.
    SessionConfirmed,
    /// The session did not take the call's configuration: the call ends.
    SessionConfigRejected { why: String },
    /// A lost Realtime session is being replaced.
    RealtimeReconnect { why: String, attempt: usize },
    /// Sessions were lost too often lately: the call ends.
    SessionLostTooOften { why: String },
    /// A Realtime `error` event.
    RealtimeError {
        code: String,
        kind: String,
        message: String,
    },
    /// A Realtime error after which the call cannot go on.
    FatalRealtimeError { code: String, message: String },
    /// Our response request was refused while another response runs; it is asked again.
    ResponseBusy { purpose: Purpose },
    /// A response that ended with status `failed`.
    FailedResponse {
        response_id: String,
        code: Option<String>,
        message: String,
    },
    /// A response that ended with status `incomplete`.
    IncompleteResponse {
        response_id: String,
        reason: Option<String>,
    },
    /// Caller speech the model could not transcribe.
    TranscriptionFailed {
        item_id: String,
        code: Option<String>,
        message: Option<String>,
    },
    /// An assistant audio delta that was not valid base64.
    BadAudio { error: String },
    /// Assistant audio dropped because the session's formats were not confirmed yet.
    UnconfirmedAudioDropped,

    // ------------------------------------------------------------ the conversation
    /// The caller spoke over the assistant.
    BargeIn,
    /// At a barge-in, the playing item is cut where the caller stopped hearing it.
    Truncated { item_id: String, audio_end_ms: u32 },
    /// At a barge-in, an item the caller heard none of is deleted.
    UnheardDeleted { item_id: String },
    /// The model called a function.
    FunctionCall { call_id: String, tool: String },
    /// A tool call ended.
    ToolCall {
        tool: String,
        result: ToolCallResult,
    },
    /// A built-in tool ran inside the worker (it finishes at once; its span records that it ran).
    BuiltinTool {
        tool: String,
        call_id: String,
        result: String,
    },
    /// How long a business tool took, as the call saw it.
    ToolLatency { tool: String, latency_ms: u32 },
    /// The call was handed to another agent.
    Handoff {
        from: String,
        to: String,
        reason: String,
    },
    /// A handoff the worker could not make (unknown agent, ...).
    HandoffRefused { target: String, reply: String },
    /// The filler line was said while a slow tool ran.
    FillerLine,

    // ------------------------------------------------------------ transfers
    /// The gateway reported a transfer's result.
    TransferResult { status: DialStatus },
    /// A transfer result with a status this worker does not know, ignored.
    UnknownTransferResult { status: String },
    /// A transfer result that came when no transfer rang, ignored.
    TransferResultWithoutTransfer { status: DialStatus },
    /// The transfer did not connect and the caller is back with the agent.
    TransferReturned { status: DialStatus },
    /// No transfer result came in time: the call ends with `reason`.
    TransferResultOverdue { reason: EndReason },

    // ------------------------------------------------------------ the ending
    /// A goodbye is being said before the call ends.
    GoodbyeStarted { reason: EndReason },
    /// The goodbye's playback was not confirmed in time: hanging up anyway.
    GoodbyeUnconfirmed,
    /// The call ended.
    CallEnded { reason: EndReason, duration_ms: u64 },

    // ------------------------------------------------------------ answering-machine detection
    /// Twilio's verdict on who answered came.
    AmdVerdict {
        answered_by: AnsweredBy,
        detection_ms: u32,
    },
    /// A verdict with an `AnsweredBy` Switchboard does not know, ignored.
    UnknownAnsweredBy { answered_by: String },
    /// The greeting stopped waiting for the verdict: the caller spoke, or the timeout passed.
    AmdPresumedHuman { caller_spoke: bool },
}

impl Observation {
    /// Records it in the process's metrics and logs, for the call `call_sid`.
    #[allow(clippy::too_many_lines)] // one arm per observation, each a line or two
    pub fn record(self, call_sid: &str) {
        match self {
            Self::StreamStarted {
                stream_sid,
                gateway,
            } => tracing::info!(%call_sid, %stream_sid, %gateway, "media stream started"),
            Self::ReAttached { from, to, gateway } => {
                tracing::info!(%call_sid, %from, %to, %gateway, "call re-attached to a new stream");
            }
            Self::StreamStopped { stop, reason } => {
                tracing::info!(%call_sid, %stop, %reason, "media stream stopped");
            }
            Self::UnknownStopReason { stop } => {
                tracing::warn!(%call_sid, reason = %stop, "media stream stopped for an unknown reason");
            }
            Self::LeftForKeys => {
                tracing::info!(%call_sid, "stream left for keys; awaiting the next");
            }
            Self::StreamNeverStarted => tracing::warn!(%call_sid, "media stream never started"),
            Self::StreamGone => {
                tracing::warn!(%call_sid, "no frame from the gateway and no re-attach in time");
            }
            Self::InboundAudioLost(n) => metrics::counter!(m::INBOUND_AUDIO_LOST).increment(n),
            Self::AudioDropped => metrics::counter!(m::AUDIO_DROPPED).increment(1),
            Self::OutboundDropped(n) => metrics::counter!(m::OUTBOUND_DROPPED).increment(n),
            Self::InvalidDtmf { digit } => {
                tracing::warn!(%call_sid, ?digit, "invalid DTMF digit ignored");
            }
            Self::SessionCreated { id } => {
                tracing::debug!(%call_sid, ?id, "realtime session created");
            }
            Self::SessionConfirmed => tracing::debug!(%call_sid, "realtime session confirmed"),
            Self::SessionConfigRejected { why } => tracing::error!(%call_sid, %why,
                "the model session did not take the call's configuration; ending the call"),
            Self::RealtimeReconnect { why, attempt } => {
                metrics::counter!(m::REALTIME_RECONNECTS).increment(1);
                tracing::warn!(%call_sid, %why, attempt, "realtime session lost; opening a new one");
            }
            Self::SessionLostTooOften { why } => tracing::error!(%call_sid, %why,
                "realtime session lost too often; ending the call"),
            Self::RealtimeError {
                code,
                kind,
                message,
            } => {
                tracing::warn!(%call_sid, %code, %kind, %message, "realtime error");
                metrics::counter!(m::REALTIME_ERRORS, "code" => code).increment(1);
            }
            Self::FatalRealtimeError { code, message } => {
                tracing::error!(%call_sid, %code, %message, "fatal realtime error; ending the call");
            }
            Self::ResponseBusy { purpose } => tracing::debug!(%call_sid, ?purpose,
                "response request refused while another runs; retried after it"),
            Self::FailedResponse {
                response_id,
                code,
                message,
            } => {
                metrics::counter!(m::REALTIME_FAILED_RESPONSES).increment(1);
                tracing::error!(%call_sid, %response_id, ?code, %message, "realtime response failed");
            }
            Self::IncompleteResponse {
                response_id,
                reason,
            } => tracing::warn!(%call_sid, %response_id, ?reason, "realtime response incomplete"),
            Self::TranscriptionFailed {
                item_id,
                code,
                message,
            } => {
                metrics::counter!(m::TRANSCRIPTION_FAILURES).increment(1);
                tracing::warn!(%call_sid, %item_id, ?code, ?message,
                    "caller speech could not be transcribed");
            }
            Self::BadAudio { error } => {
                metrics::counter!(m::REALTIME_BAD_AUDIO).increment(1);
                tracing::warn!(%call_sid, %error, "undecodable audio delta dropped");
            }
            Self::UnconfirmedAudioDropped => {
                metrics::counter!(m::UNCONFIRMED_AUDIO_DROPPED).increment(1);
            }
            Self::BargeIn => metrics::counter!(m::BARGE_INS).increment(1),
            Self::Truncated {
                item_id,
                audio_end_ms,
            } => tracing::debug!(%call_sid, %item_id, audio_end_ms, "barge-in: truncating"),
            Self::UnheardDeleted { item_id } => {
                tracing::debug!(%call_sid, %item_id, "barge-in: deleting an unheard item");
            }
            Self::FunctionCall { call_id, tool } => {
                tracing::info!(%call_sid, %call_id, %tool, "function call");
            }
            Self::ToolCall { tool, result } => {
                metrics::counter!(m::TOOL_CALLS, "tool" => tool, "result" => result.as_str())
                    .increment(1);
            }
            Self::BuiltinTool {
                tool,
                call_id,
                result,
            } => {
                let _span = tracing::info_span!("tool", name = %tool, %call_id, %result).entered();
                metrics::counter!(m::TOOL_CALLS, "tool" => tool,
                    "result" => ToolCallResult::Builtin.as_str())
                .increment(1);
            }
            Self::ToolLatency { tool, latency_ms } => {
                metrics::histogram!(m::TOOL_CALL_SECONDS, "tool" => tool)
                    .record(f64::from(latency_ms) / 1000.0);
            }
            Self::Handoff { from, to, reason } => {
                metrics::counter!(m::HANDOFFS).increment(1);
                tracing::info!(%call_sid, %from, %to, %reason, "call handed off");
            }
            Self::HandoffRefused { target, reply } => {
                tracing::warn!(%call_sid, %target, %reply, "handoff refused");
            }
            Self::FillerLine => metrics::counter!(m::FILLER_LINES).increment(1),
            Self::TransferResult { status } => {
                tracing::info!(%call_sid, %status, "transfer result");
            }
            Self::UnknownTransferResult { status } => {
                tracing::warn!(%call_sid, %status, "unknown transfer result ignored");
            }
            Self::TransferResultWithoutTransfer { status } => {
                tracing::debug!(%call_sid, %status, "transfer result without a transfer ignored");
            }
            Self::TransferReturned { status } => {
                tracing::info!(%call_sid, %status, "transfer not answered; the caller is back");
            }
            Self::TransferResultOverdue { reason } => {
                tracing::info!(%call_sid, %reason, "no transfer result in time");
            }
            Self::GoodbyeStarted { reason } => {
                tracing::info!(%call_sid, %reason, "ending the call after a goodbye");
            }
            Self::GoodbyeUnconfirmed => {
                tracing::info!(%call_sid, "goodbye not confirmed in time; hanging up");
            }
            Self::CallEnded {
                reason,
                duration_ms,
            } => {
                metrics::counter!(m::CALLS_ENDED, "reason" => reason.as_str()).increment(1);
                tracing::info!(%call_sid, %reason, duration_ms, "call ended");
            }
            Self::AmdVerdict {
                answered_by,
                detection_ms,
            } => {
                tracing::info!(%call_sid, %answered_by, detection_ms, "answering-machine verdict");
            }
            Self::UnknownAnsweredBy { answered_by } => {
                tracing::warn!(%call_sid, ?answered_by, "unknown answering-machine verdict ignored");
            }
            Self::AmdPresumedHuman { caller_spoke } => {
                tracing::info!(%call_sid, caller_spoke, "greeting without the answering-machine verdict");
            }
        }
    }
}
