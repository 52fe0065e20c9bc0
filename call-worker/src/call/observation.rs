//! What the call machine noticed, for the actor to record.
//!
//! The machine decides and the actor acts: counting is an action too, so the machine queues
//! [`Observation`]s (drained with [`super::machine::CallMachine::drain_observations`]) and the
//! actor turns each into its metric with [`Observation::record`]. Tests read them as plain
//! values.

use switchboard_proto::event::EndReason;

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

/// Something worth counting that happened on a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A lost Realtime session is being replaced.
    RealtimeReconnect,
    /// Caller audio chunks that never reached the worker (a gap in Twilio's numbering).
    InboundAudioLost(u64),
    /// A caller audio frame dropped because no session could hear it.
    AudioDropped,
    /// Bytes of assistant audio dropped from the pre-start buffer.
    OutboundDropped(u64),
    /// Caller speech the model could not transcribe.
    TranscriptionFailed,
    /// An assistant audio delta that was not valid base64.
    BadAudio,
    /// A Realtime `error` event, by code.
    RealtimeError { code: String },
    /// Assistant audio dropped because the session's formats were not confirmed yet.
    UnconfirmedAudioDropped,
    /// A response that ended with status `failed`.
    FailedResponse,
    /// The caller spoke over the assistant.
    BargeIn,
    /// A tool call ended.
    ToolCall {
        tool: String,
        result: ToolCallResult,
    },
    /// How long a business tool took, as the call saw it.
    ToolLatency { tool: String, latency_ms: u32 },
    /// The call was handed to another agent.
    Handoff,
    /// The filler line was said while a slow tool ran.
    FillerLine,
    /// The call ended.
    CallEnded(EndReason),
}

impl Observation {
    /// Records it in the process's metrics.
    pub fn record(self) {
        match self {
            Self::RealtimeReconnect => metrics::counter!(m::REALTIME_RECONNECTS).increment(1),
            Self::InboundAudioLost(n) => metrics::counter!(m::INBOUND_AUDIO_LOST).increment(n),
            Self::AudioDropped => metrics::counter!(m::AUDIO_DROPPED).increment(1),
            Self::OutboundDropped(n) => metrics::counter!(m::OUTBOUND_DROPPED).increment(n),
            Self::TranscriptionFailed => {
                metrics::counter!(m::TRANSCRIPTION_FAILURES).increment(1);
            }
            Self::BadAudio => metrics::counter!(m::REALTIME_BAD_AUDIO).increment(1),
            Self::RealtimeError { code } => {
                metrics::counter!(m::REALTIME_ERRORS, "code" => code).increment(1);
            }
            Self::UnconfirmedAudioDropped => {
                metrics::counter!(m::UNCONFIRMED_AUDIO_DROPPED).increment(1);
            }
            Self::FailedResponse => metrics::counter!(m::REALTIME_FAILED_RESPONSES).increment(1),
            Self::BargeIn => metrics::counter!(m::BARGE_INS).increment(1),
            Self::ToolCall { tool, result } => {
                metrics::counter!(m::TOOL_CALLS, "tool" => tool, "result" => result.as_str())
                    .increment(1);
            }
            Self::ToolLatency { tool, latency_ms } => {
                metrics::histogram!(m::TOOL_CALL_SECONDS, "tool" => tool)
                    .record(f64::from(latency_ms) / 1000.0);
            }
            Self::Handoff => metrics::counter!(m::HANDOFFS).increment(1),
            Self::FillerLine => metrics::counter!(m::FILLER_LINES).increment(1),
            Self::CallEnded(reason) => {
                metrics::counter!(m::CALLS_ENDED, "reason" => reason.as_str()).increment(1);
            }
        }
    }
}
