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
/// Gauge: calls this worker runs right now.
pub const ACTIVE_CALLS: &str = "worker_active_calls";
/// Gauge: the most calls this worker takes (`MAX_CALLS`); capacity alerts divide by it.
pub const MAX_CALLS: &str = "worker_max_calls";
/// Counter (`result`, `reason`): offers answered, accepted or declined (with the decline reason).
pub const OFFERS: &str = "worker_offers_total";
/// Counter (`tool`): tools an agent lists that could not be offered to the model.
pub const TOOLS_MISSING: &str = "worker_tools_missing_total";
/// Counter: inbound frames or owner probes that could not be decoded (ignored).
pub const BAD_FRAMES: &str = "worker_bad_frames_total";
/// Counter: calls this worker stopped running because another owner took them over.
pub const CALLS_LOST: &str = "worker_calls_lost_total";
/// Histogram (`kind`), seconds: turn latencies as the call's `turn` events record them.
pub const TURN_LATENCY: &str = "worker_turn_latency_seconds";
/// Counter: outbound frames to the gateway whose publish failed.
pub const OUTBOUND_PUBLISH_ERRORS: &str = "worker_outbound_publish_errors_total";
/// Counter (`result`): reloads of the agents file, `ok` or `error`.
pub const AGENTS_RELOADS: &str = "worker_agents_reloads_total";
/// Histogram, seconds: opening a Realtime session's socket.
pub const REALTIME_CONNECT: &str = "realtime_connect_seconds";
/// Counter: Realtime server events that could not be parsed (ignored).
pub const REALTIME_UNPARSED_EVENTS: &str = "realtime_unparsed_events_total";
/// Counter (`reason`: `failed`, `late`): calls whose `ended` event went out without the
/// recording of their last stream (storing it failed, or it was not stored within
/// [`crate::call::recording::RECORDING_WAIT`]).
pub const ENDED_WITHOUT_RECORDING: &str = "worker_ended_without_recording_total";
