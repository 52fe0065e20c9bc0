//! The names of the call-worker's metrics, typed once (dashboards and alerts in
//! docs/operations.md use them).

/// Counter: lost Realtime sessions replaced by a new one.
pub const REALTIME_RECONNECTS: &str = "worker_realtime_reconnects_total";
/// Counter: caller audio chunks lost before the worker (gaps in Twilio's chunk numbers).
pub const INBOUND_AUDIO_LOST: &str = "worker_inbound_audio_lost_total";
/// Counter: caller audio frames dropped while no Realtime session could hear them.
pub const AUDIO_DROPPED: &str = "worker_audio_dropped_total";
/// Counter: bytes of assistant audio dropped from the buffer held before Twilio's `start`.
pub const OUTBOUND_DROPPED: &str = "worker_outbound_dropped_total";
/// Counter: caller speech the model could not transcribe.
pub const TRANSCRIPTION_FAILURES: &str = "worker_transcription_failures_total";
/// Counter: assistant audio deltas that were not valid base64.
pub const REALTIME_BAD_AUDIO: &str = "realtime_bad_audio_total";
/// Counter (`code`): Realtime `error` events.
pub const REALTIME_ERRORS: &str = "realtime_errors_total";
/// Counter: assistant audio dropped before the session's formats were confirmed.
pub const UNCONFIRMED_AUDIO_DROPPED: &str = "worker_unconfirmed_audio_dropped_total";
/// Counter: responses that ended with status `failed`.
pub const REALTIME_FAILED_RESPONSES: &str = "realtime_failed_responses_total";
/// Counter: barge-ins (the caller spoke over the assistant).
pub const BARGE_INS: &str = "worker_barge_ins_total";
/// Counter (`tool`, `result`): tool calls.
pub const TOOL_CALLS: &str = "worker_tool_calls_total";
/// Histogram (`tool`): business tool latency as the call saw it (NATS, service, handler).
pub const TOOL_CALL_SECONDS: &str = "worker_tool_call_seconds";
/// Counter: handoffs to another agent.
pub const HANDOFFS: &str = "worker_handoffs_total";
/// Counter: filler lines said while a slow tool ran.
pub const FILLER_LINES: &str = "worker_filler_lines_total";
/// Counter (`reason`): calls ended, by end reason.
pub const CALLS_ENDED: &str = "worker_calls_ended_total";
