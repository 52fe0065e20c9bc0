//! Names of the gateway's Prometheus metrics, in one place so dashboards and code agree.

/// Gauge: media sockets open right now.
pub const ACTIVE_STREAMS: &str = "gateway_active_streams";
/// Counter (`event`): Twilio frames forwarded to NATS as `InboundFrame`s.
pub const FRAMES_IN: &str = "gateway_frames_in_total";
/// Counter (`event`): messages written to Twilio.
pub const FRAMES_OUT: &str = "gateway_frames_out_total";
/// Counter: offers a worker accepted.
pub const OFFERS_ACCEPTED: &str = "gateway_offers_accepted_total";
/// Counter (`reason`): calls no worker took (the caller heard the busy message).
pub const OFFERS_REJECTED: &str = "gateway_offers_rejected_total";
/// Counter: text frames from Twilio that could not be parsed (skipped, call continues).
pub const BAD_FRAMES: &str = "gateway_bad_frames_total";
/// Counter: frames naming another streamSid than the socket's stream (ignored).
pub const WRONG_STREAM_SID: &str = "gateway_wrong_stream_sid_total";
/// Counter: outbound audio dropped because the socket could not keep up.
pub const AUDIO_DROPPED: &str = "gateway_audio_dropped_total";
/// Counter: recording events ([`crate::recorder::Tap`]) dropped because the stream's
/// recorder was [`crate::recorder::TAP_CAPACITY`] events behind (the recording misses them;
/// the call does not).
pub const RECORDING_DROPPED: &str = "gateway_recording_events_dropped_total";
/// Counter (`outcome`: [`RECORDING_STORED`], [`RECORDING_FAILED`]): call recordings written to
/// the recording store, or lost (logged as errors).
pub const RECORDINGS: &str = "gateway_recordings_total";
/// Counter: bytes of recordings written to the recording store.
pub const RECORDING_BYTES: &str = "gateway_recording_bytes_total";
/// [`RECORDINGS`] outcome: stored, and its `recording` event published.
pub const RECORDING_STORED: &str = "stored";
/// [`RECORDINGS`] outcome: encoding or writing it failed.
pub const RECORDING_FAILED: &str = "failed";
/// Counter: `.out` messages that are not valid `OutboundFrame`s.
pub const BAD_OUTBOUND: &str = "gateway_bad_outbound_frames_total";
/// Counter (`route`): requests refused for a missing or wrong `X-Twilio-Signature`.
pub const BAD_SIGNATURES: &str = "gateway_bad_signatures_total";
/// Counter (`reason`): media sockets refused or closed before the stream started.
pub const STREAMS_REFUSED: &str = "gateway_streams_refused_total";
/// Counter (`reason`): streams that ended, by `StreamStop.reason`.
pub const STREAMS_ENDED: &str = "gateway_streams_ended_total";
/// Counter: publishing to NATS failed (the client is closed or its queue is gone).
pub const NATS_PUBLISH_ERRORS: &str = "gateway_nats_publish_errors_total";
/// Histogram (`direction`), seconds: the gateway's own time per audio frame, without NATS or
/// the network: `in` from the WebSocket message read to the `InboundFrame` handed to the NATS
/// client, `out` from the `OutboundFrame` received from the NATS client to the WebSocket
/// write done (flushed). Sampled: see [`FrameTimer`].
pub const FRAME_PROCESSING: &str = "gateway_frame_processing_seconds";
/// Counter (`kind`): Twilio REST requests that failed.
pub const REST_ERRORS: &str = "gateway_twilio_rest_errors_total";
/// Counter (`reason`): offers declined for a passing reason and made again.
pub const OFFER_RETRIES: &str = "gateway_offer_retries_total";
/// Counter (`route`, `reason`): webhooks refused before their signature could be checked
/// because of their size or pace ([`WEBHOOK_TOO_LARGE`], [`WEBHOOK_TOO_MANY_FIELDS`],
/// [`WEBHOOK_TOO_SLOW`], [`WEBHOOK_URI_TOO_LONG`]).
pub const WEBHOOKS_REFUSED: &str = "gateway_webhooks_refused_total";
/// Counter: voice webhooks for a CallSid already offered (replays), refused.
pub const WEBHOOK_REPLAYS: &str = "gateway_webhook_replays_total";
/// Counter (`what`): the `voice-calls` claim bucket could not be used (the request was refused).
pub const CLAIM_ERRORS: &str = "gateway_claim_errors_total";
/// Counter: `Transfer` frames to a number outside the call's agent's `transfer_to` (refused).
pub const TRANSFERS_REFUSED: &str = "gateway_transfers_refused_total";
/// Counter (`reason`): `POST /calls` requests refused ([`CALL_UNAUTHORIZED`],
/// [`CALL_DESTINATION`], [`CALL_RATE_LIMITED`]).
pub const CALLS_REFUSED: &str = "gateway_calls_refused_total";
/// Counter (`reason`): `GET /web-call` upgrades refused (`unauthorized`, `origin`, `agent`,
/// `per_user`, `web_calls_max`, `max_streams`, `draining`, `replay`, `unavailable`, or the
/// offer's rejection reason).
pub const WEB_CALLS_REFUSED: &str = "gateway_web_calls_refused_total";
/// Counter: web calls a worker took and whose socket was opened.
pub const WEB_CALLS: &str = "gateway_web_calls_total";
/// Counter (`via`: `action`, `rest`): live calls given a new media stream
/// ([`crate::reattach`]).
pub const REATTACHES: &str = "gateway_reattaches_total";
/// Counter: `<Connect>` action requests answered with `<Hangup/>` (the call was over, or the
/// gateway had ended it).
pub const CONNECT_ACTIONS_ENDED: &str = "gateway_connect_actions_ended_total";
/// Counter (`event`: `stream-started`, `stream-stopped`, `stream-error`): `<Stream>` status
/// callbacks received.
pub const STREAM_STATUS: &str = "gateway_stream_status_total";

/// [`REATTACHES`] via: answering Twilio's request of the `<Connect>` action URL.
pub const REATTACH_VIA_ACTION: &str = "action";
/// [`REATTACHES`] via: a REST update of the call after a stream stopped or failed.
pub const REATTACH_VIA_REST: &str = "rest";
/// Counter (`answer`: `alive`, `no_responders`, `unanswered`): `OwnerProbe`s sent to a silent
/// owner, by how they were answered.
pub const OWNER_PROBES: &str = "gateway_owner_probes_total";
/// Counter (`reason`: `worker_lost`, `hand_over`; `outcome`: `committed`, `lost`, `resumed`):
/// calls offered to another worker, by how the offer ended (`resumed`: the owner went on).
pub const TAKEOVERS: &str = "gateway_takeovers_total";
/// Histogram: seconds the caller heard no owner in a takeover, from the last frame of the
/// lost owner to the new owner's commit.
pub const TAKEOVER_GAP: &str = "gateway_takeover_gap_seconds";
/// Counter: outbound frames of a replaced owner (an older epoch), dropped unplayed.
pub const STALE_FRAMES: &str = "gateway_stale_frames_dropped_total";
/// Gauge: bytes of caller audio held in the replay rings of all streams.
pub const REPLAY_RING_BYTES: &str = "gateway_replay_ring_bytes";
/// [`TAKEOVERS`] outcome: a new owner took the call.
pub const TAKEOVER_COMMITTED: &str = "committed";
/// [`TAKEOVERS`] outcome: nobody took it; the caller heard the apology.
pub const TAKEOVER_LOST: &str = "lost";
/// [`TAKEOVERS`] outcome: nobody took it and the owner went on (a hand-over, or an owner heard
/// again).
pub const TAKEOVER_RESUMED: &str = "resumed";

/// [`STREAMS_REFUSED`] reason: the stream token did not verify.
pub const REFUSED_INVALID_TOKEN: &str = "invalid_token";
/// [`STREAMS_REFUSED`] reason: the stream token already opened a stream.
pub const REFUSED_TOKEN_REUSED: &str = "token_reused";
/// [`STREAMS_REFUSED`] reason: the call already has a newer stream.
pub const REFUSED_CALL_LIVE: &str = "call_live";
/// [`STREAMS_REFUSED`] reason: the claim bucket was unreachable.
pub const REFUSED_UNAVAILABLE: &str = "unavailable";

/// [`WEBHOOKS_REFUSED`] reason: the body is over the limit.
pub const WEBHOOK_TOO_LARGE: &str = "too_large";
/// [`WEBHOOKS_REFUSED`] reason: more form fields than any Twilio request has.
pub const WEBHOOK_TOO_MANY_FIELDS: &str = "too_many_fields";
/// [`WEBHOOKS_REFUSED`] reason: the body did not arrive in time.
pub const WEBHOOK_TOO_SLOW: &str = "too_slow";
/// [`WEBHOOKS_REFUSED`] reason: the query string is over the limit.
pub const WEBHOOK_URI_TOO_LONG: &str = "uri_too_long";

/// [`CALLS_REFUSED`] reason: missing or wrong `CALLS_TOKEN`.
pub const CALL_UNAUTHORIZED: &str = "unauthorized";
/// [`CALLS_REFUSED`] reason: the destination is not in `CALLS_ALLOWED_TO`.
pub const CALL_DESTINATION: &str = "destination";
/// [`CALLS_REFUSED`] reason: over `CALLS_PER_MINUTE`.
pub const CALL_RATE_LIMITED: &str = "rate_limited";

/// Registers descriptions with the installed recorder (shown as `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(ACTIVE_STREAMS, "Media sockets open right now");
    describe_counter!(FRAMES_IN, "Twilio frames forwarded to NATS");
    describe_counter!(WEB_CALLS, "Web calls taken by a worker");
    describe_counter!(WEB_CALLS_REFUSED, "Web call upgrades refused");
    describe_counter!(FRAMES_OUT, "Messages written to Twilio");
    describe_counter!(OFFERS_ACCEPTED, "Call offers a worker accepted");
    describe_counter!(OFFERS_REJECTED, "Calls no worker took");
    describe_counter!(BAD_FRAMES, "Unparseable text frames from Twilio");
    describe_counter!(WRONG_STREAM_SID, "Frames for another streamSid");
    describe_counter!(AUDIO_DROPPED, "Outbound audio dropped on a stalled socket");
    describe_counter!(BAD_OUTBOUND, "Invalid OutboundFrames from workers");
    describe_counter!(BAD_SIGNATURES, "Requests with a missing or wrong signature");
    describe_counter!(
        STREAMS_REFUSED,
        "Media sockets refused before the stream started"
    );
    describe_counter!(STREAMS_ENDED, "Streams that ended, by reason");
    describe_counter!(NATS_PUBLISH_ERRORS, "Failed NATS publishes");
    describe_counter!(REST_ERRORS, "Failed Twilio REST requests");
    describe_counter!(OFFER_RETRIES, "Offers made again after a passing decline");
    describe_counter!(
        WEBHOOKS_REFUSED,
        "Webhooks refused for their size or pace before verification"
    );
    describe_counter!(WEBHOOK_REPLAYS, "Voice webhooks for a call already offered");
    describe_counter!(
        CLAIM_ERRORS,
        "Requests refused: the voice-calls bucket was unusable"
    );
    describe_counter!(
        TRANSFERS_REFUSED,
        "Transfers to a number outside the agent's transfer_to"
    );
    describe_counter!(CALLS_REFUSED, "POST /calls requests refused, by reason");
    describe_counter!(REATTACHES, "Live calls given a new media stream, by way");
    describe_counter!(
        CONNECT_ACTIONS_ENDED,
        "<Connect> action requests answered with <Hangup/>"
    );
    describe_counter!(STREAM_STATUS, "<Stream> status callbacks, by event");
    describe_counter!(OWNER_PROBES, "Probes of a silent call owner, by answer");
    describe_counter!(TAKEOVERS, "Calls offered to another worker, by outcome");
    describe_histogram!(
        TAKEOVER_GAP,
        Unit::Seconds,
        "Time a caller had no owner during a takeover"
    );
    describe_counter!(STALE_FRAMES, "Outbound frames of a replaced owner, dropped");
    describe_gauge!(
        REPLAY_RING_BYTES,
        Unit::Bytes,
        "Caller audio held for replay after a takeover"
    );
    describe_histogram!(
        FRAME_PROCESSING,
        Unit::Seconds,
        "The gateway's own time per audio frame (socket to NATS client and back)"
    );
}

/// One frame in [`FrameTimer::SAMPLE_EVERY`] is timed into [`FRAME_PROCESSING`]: at 500
/// streams every frame would be 50,000 samples a second, each held in memory until the next
/// upkeep; a fixed stride keeps the distribution (frame timing does not follow the frame
/// count) at an eighth of the cost.
#[derive(Debug)]
pub struct FrameTimer {
    histogram: metrics::Histogram,
    frames: u32,
}

impl FrameTimer {
    pub const SAMPLE_EVERY: u32 = 8;

    /// `direction`: `in` or `out`.
    pub fn new(direction: &'static str) -> Self {
        Self {
            histogram: metrics::histogram!(FRAME_PROCESSING, "direction" => direction),
            frames: 0,
        }
    }

    /// A frame whose processing began at `since` is done.
    pub fn done(&mut self, since: tokio::time::Instant) {
        self.frames = self.frames.wrapping_add(1);
        if self.frames.is_multiple_of(Self::SAMPLE_EVERY) {
            self.histogram.record(since.elapsed().as_secs_f64());
        }
    }
}

/// Keeps [`ACTIVE_STREAMS`] right however a stream task ends (including a panic).
pub struct ActiveStream(());

impl ActiveStream {
    pub fn enter() -> Self {
        metrics::gauge!(ACTIVE_STREAMS).increment(1.0);
        Self(())
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        metrics::gauge!(ACTIVE_STREAMS).decrement(1.0);
    }
}
