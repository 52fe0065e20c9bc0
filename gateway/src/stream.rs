//! One actor per Twilio media socket.
//!
//! The actor task owns the socket's read half, the call's `.out` subscription and the stream
//! state; a writer task owns the write half ([`crate::outbox`]). Life of a stream:
//!
//! 1. **Handshake**: `connected`, then `start` within `START_TIMEOUT_SECONDS` (else close 1008
//!    "no start"). The `token` parameter of `start` must verify for `start.callSid` (else close
//!    1008 "invalid stream token") and must claim the call's stream in the `voice-calls` bucket
//!    ([`crate::claims`]): a token that already opened a stream closes 1008 "stream token already
//!    used", one older than the call's current stream closes 4409 "call already has a stream"
//!    (both counted in `gateway_streams_refused_total`). Until then nothing reaches NATS.
//! 2. **Subscribe** to `voice.call.<sid>.out` *before* publishing the first `.in` frame, so
//!    nothing the worker sends in reply to `start` can be missed.
//! 3. **Forward**: Twilio `start`/`media`/`dtmf`/`mark`/`stop` become `InboundFrame`s with a
//!    growing `seq` (core publishes: the client only enqueues, so no frame waits on NATS);
//!    `OutboundFrame`s become Twilio `media`/`mark`/`clear` through the non-blocking outbox.
//!    A malformed text frame is counted and skipped (one bad frame must not kill a live call);
//!    frames for another streamSid are counted and ignored; a binary frame closes with 1003, an
//!    oversized one with 1009.
//! 4. **End**, exactly once, with a final `stop` frame for the worker whose `reason` says why:
//!    `stop` (Twilio said so), `closed` (socket closed without `stop`), `error`, `worker_silent`
//!    (the owner was lost and no worker took the call over), `drain_deadline` (gateway shutdown,
//!    close 1001), `hangup` / `transfer` (the worker asked; close 1000 once the audio already
//!    sent has played).
//!
//! Ownership (see [`crate::owner`] and [`crate::takeover`]): every outbound frame carries its
//! owner's epoch. Frames of an older epoch are dropped; a newer epoch, or a takeover offer's
//! accept, commits the new owner: Twilio's playback is cleared, the new owner gets the
//! `start` again (`resumed`, same streamSid) and the replay ring ([`crate::replay`]), then live
//! frames. A silent owner is probed and, if lost, its call is offered to another worker; a call
//! nobody takes within `TAKEOVER_TIMEOUT_MS` gets the agent's apology (a REST update with
//! `<Say>` and `<Dial>` or `<Hangup/>`; a web call closes with 1011) and the gateway closes its
//! record with `worker_lost`.
//!
//! The stream runs in a `stream` span created when `start` arrives, whose parent is the trace
//! context of `start`'s `traceparent` parameter (written into the TwiML by [`crate::webhook`]),
//! so the call stays one trace whichever replica takes the socket. Nothing is traced or
//! allocated per audio frame beyond the frame itself ([`crate::frames`] has the fast paths).
//!
//! A web call ([`crate::web_call`]) runs the same way, except that the gateway fills in the
//! call id and token of its `start`, and it has no Twilio call: a hang-up only closes the socket
//! and a transfer is refused.
//!
//! Call control goes through Twilio's REST API in spawned tasks (never awaited here): a
//! `Transfer` to a number the call's agent may transfer to ([`crate::agents`]; any other is
//! refused, counted and logged with the number masked, and the call goes on) updates the live call with `<Say>announcement</Say><Dial><Number>to</Number></Dial>`
//! (Twilio then leaves the `<Connect>` and sends `stop`, recorded with reason `transfer`); a
//! `Hangup` additionally sets the call `completed` once the stream has ended, so the call really
//! ends even where closing the stream would not end it (404: it already had).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::StreamExt as _;
use futures::stream::SplitStream;
use switchboard_proto::event::{EndReason, OwnerReason, StopReason};
use switchboard_proto::subject::validate_call_sid;
use switchboard_proto::{
    InboundFrame, Message as _, OutboundFrame, StreamStart, inbound_frame, now_ms, outbound_frame,
};
use switchboard_twilio::media::{FrameError, ServerMessage, Start, TwilioMessage};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::claims::AttachOutcome;
use crate::close;
use crate::frames::{self, Inbound, MediaWriter, TOKEN_PARAMETER, TRACEPARENT_PARAMETER};
use crate::metrics::{self as m, ActiveStream};
use crate::offer::{Takeover, TakeoverOutcome, offer_takeover, takeover_offer};
use crate::outbox::{Outbox, Outgoing, QUEUE_CAPACITY, run_writer};
use crate::owner::{Admit, OwnerWatch, Step};
use crate::recorder::{RECORDING_WAIT, Recording, Tap};
use crate::shared::Shared;
use crate::stream_token::unix_now;
use crate::takeover::{LostCall, Ownership, Report, apology_twiml, close_record, unix_ms_of};
use crate::twilio_rest::{CallUpdate, Updated};
use crate::web_call::WebCall;
use crate::{dial, reattach};
use switchboard_service::redact::MaskedPhone;
use switchboard_twilio::twiml;

/// The mark the gateway places after the last audio when the worker hangs up; its echo means
/// everything the caller should hear has played.
pub const HANGUP_MARK: &str = "switchboard-hangup";

/// Longest wait for that echo: a goodbye is a sentence or two, and a lost echo must not keep a
/// call open.
pub const PLAYOUT_LIMIT: Duration = Duration::from_secs(30);

/// How long closing may take: writing what is queued plus the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// After refusing an oversized message the read side is unusable (the rest of that message is
/// still unread), and closing the TCP connection with unread data resets it, which can destroy
/// our close frame before the peer reads it. So the socket is held this long first.
const OVERSIZE_LINGER: Duration = Duration::from_secs(1);

/// Serves one media socket until the stream ends. `web` is set for a web call
/// ([`crate::web_call`]): its `start` gets the call id and stream token the gateway issued, and
/// the call never reaches Twilio's REST API.
pub async fn run(socket: WebSocket, shared: Arc<Shared>, web: Option<WebCall>) {
    let _active = ActiveStream::enter();
    let (sink, reader) = socket.split();
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let writer_done = CancellationToken::new();
    shared
        .tracker
        .spawn(run_writer(sink, rx, writer_done.clone()));
    let mut socket = Socket {
        reader,
        outbox: Outbox::new(tx),
        writer_done,
        linger: false,
    };

    let handshake_result = handshake(&mut socket, &shared).await;
    // Stream time zero as the recording counts it: when Twilio's `start` arrived (its media
    // timestamps count from just before), not after the checks below.
    let stream_zero = Instant::now();
    let (stream_sid, mut start) = match handshake_result {
        Ok(started) => started,
        Err(refusal) => {
            metrics::counter!(m::STREAMS_REFUSED, "reason" => refusal.reason).increment(1);
            tracing::info!(
                reason = refusal.reason,
                "media socket ended before the stream started"
            );
            socket.finish(refusal.close).await;
            return;
        }
    };
    let is_web = web.is_some();
    if let Some(web) = web {
        if validate_call_sid(&stream_sid).is_err() {
            metrics::counter!(m::STREAMS_REFUSED, "reason" => "bad_stream_sid").increment(1);
            socket.finish(Some(close::BAD_STREAM_SID.frame())).await;
            return;
        }
        // The browser knows neither; what it sent in their place is not trusted.
        start.call_sid = web.call_sid;
        start.custom_parameters.clear();
        start
            .custom_parameters
            .insert(TOKEN_PARAMETER.to_owned(), web.token);
    }
    let call_sid = start.call_sid.clone();
    // The call's trace continues from the webhook (whichever replica served it), through the
    // `traceparent` parameter of the TwiML; without one the stream is a trace of its own.
    let span = tracing::info_span!(parent: None, "stream", %call_sid, %stream_sid);
    switchboard_service::trace::set_parent(&span, &trace_parent(&start));
    async move {
        let token = start
            .custom_parameters
            .get(TOKEN_PARAMETER)
            .map(String::as_str)
            .unwrap_or_default();
        let grant = match validate_call_sid(&call_sid) {
            Ok(()) => shared.tokens.verify(&call_sid, token, unix_now()).ok(),
            Err(_) => None,
        };
        let Some(grant) = grant else {
            metrics::counter!(m::STREAMS_REFUSED, "reason" => m::REFUSED_INVALID_TOKEN)
                .increment(1);
            tracing::warn!("media stream with an invalid stream token");
            socket.finish(Some(close::INVALID_TOKEN.frame())).await;
            return;
        };
        // The token is genuine; now make sure it opens one stream only.
        let agent = match claim_stream(&shared, &call_sid, grant.attach, &stream_sid).await {
            Ok(agent) => agent,
            Err(refusal) => {
                metrics::counter!(m::STREAMS_REFUSED, "reason" => refusal.reason).increment(1);
                tracing::warn!(
                    attach = grant.attach,
                    reason = refusal.reason,
                    "media stream refused"
                );
                socket.finish(refusal.close).await;
                return;
            }
        };
        let out = match shared
            .nats
            .subscribe(shared.subjects.call_out(&call_sid))
            .await
        {
            Ok(out) => out,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to the call's outbound subject");
                socket.finish(Some(close::UNAVAILABLE.frame())).await;
                return;
            }
        };
        let started = Instant::now();
        let mut start =
            frames::stream_start_of(&stream_sid, &start, &shared.gateway_id, grant, now_ms());
        let recording = shared.agents.records(&agent).then(|| {
            Recording::start(&shared, &call_sid, (start.attach, &stream_sid), stream_zero)
        });
        start.recorded = recording.is_some();
        let mut actor = StreamActor {
            call_sid: call_sid.clone(),
            in_subject: shared.subjects.call_in(&call_sid).into(),
            shared: shared.clone(),
            socket,
            out,
            media: MediaWriter::new(&stream_sid),
            media_in: metrics::counter!(m::FRAMES_IN, "event" => "media"),
            processing_in: m::FrameTimer::new("in"),
            stream_sid: stream_sid.clone(),
            agent,
            web: is_web,
            seq: 0,
            ownership: Ownership::new(
                OwnerWatch::new(
                    Instant::now(),
                    shared.worker_silence,
                    shared.takeover_timeout,
                )
                .at_epoch(grant.epoch),
            ),
            start,
            started,
            ending: None,
            recording,
        };
        tracing::info!(
            attach = grant.attach,
            epoch = grant.epoch,
            "media stream started"
        );
        // A re-attached stream (its token issued by [`crate::reattach`]) tells the owner of the
        // token's epoch to move the call onto it.
        actor
            .publish(inbound_frame::Frame::Start(actor.start.clone()))
            .await;
        let end = actor.run().await;
        actor.end(end).await;
    }
    .instrument(span)
    .await;
}

/// Claims stream `attach` of `call_sid` for this socket in the shared claim bucket and returns
/// the call's agent (for its transfer list). Refused when the token already opened a stream, the
/// call has a newer stream, or the bucket is unreachable (fail closed).
async fn claim_stream(
    shared: &Shared,
    call_sid: &str,
    attach: crate::stream_token::Attach,
    stream_sid: &str,
) -> Result<String, Refusal> {
    let unavailable = |error: crate::claims::ClaimError| {
        tracing::error!(%error, "cannot check the stream token's claim");
        Refusal {
            close: Some(close::UNAVAILABLE.frame()),
            reason: m::REFUSED_UNAVAILABLE,
        }
    };
    let claims = shared.claims().await.map_err(unavailable)?;
    let (attached, agent) = tokio::join!(
        claims.attach(call_sid, attach, stream_sid),
        claims.offered_agent(call_sid)
    );
    match attached.map_err(unavailable)? {
        AttachOutcome::Attached => {}
        AttachOutcome::TokenReused => {
            return Err(Refusal {
                close: Some(close::TOKEN_REUSED.frame()),
                reason: m::REFUSED_TOKEN_REUSED,
            });
        }
        AttachOutcome::CallLive => {
            return Err(Refusal {
                close: Some(close::CALL_LIVE.frame()),
                reason: m::REFUSED_CALL_LIVE,
            });
        }
    }
    Ok(agent.map_err(unavailable)?.unwrap_or_default())
}

/// The trace context carried by `start`'s `traceparent` parameter, as headers for
/// [`switchboard_service::trace::set_parent`] (empty when absent or not a valid header value).
fn trace_parent(start: &Start) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(value) = start
        .custom_parameters
        .get(TRACEPARENT_PARAMETER)
        .and_then(|v| v.parse::<async_nats::HeaderValue>().ok())
    {
        headers.insert(TRACEPARENT_PARAMETER, value);
    }
    headers
}

/// The socket halves the actor holds: the read half, and the queue to the writer task.
struct Socket {
    reader: SplitStream<WebSocket>,
    outbox: Outbox,
    /// Cancelled when the writer task has ended (close frame written, or the socket failed).
    writer_done: CancellationToken,
    /// Hold the connection for [`OVERSIZE_LINGER`] after the close frame (see there).
    linger: bool,
}

impl Socket {
    /// Ends the socket: sends `close` (after everything queued before it) or, without one,
    /// waits for the peer to close (Twilio closes after `stop`) and closes normally if it
    /// does not; then completes the close handshake. Bounded by [`CLOSE_GRACE`].
    async fn finish(mut self, close_frame: Option<CloseFrame>) {
        let deadline = Instant::now() + CLOSE_GRACE;
        match close_frame {
            Some(frame) => {
                self.send_close(frame, deadline).await;
                if self.linger {
                    sleep_until(deadline.min(Instant::now() + OVERSIZE_LINGER)).await;
                } else {
                    self.drain_reader(deadline).await;
                }
            }
            None => {
                if !self.drain_reader(deadline).await {
                    let deadline = Instant::now() + CLOSE_GRACE;
                    self.send_close(close::NORMAL.frame(), deadline).await;
                }
            }
        }
    }

    /// Queues the close frame and waits until the writer has written it (or gave up).
    async fn send_close(&mut self, frame: CloseFrame, deadline: Instant) {
        self.outbox.push(Outgoing::Close(frame));
        loop {
            tokio::select! {
                () = self.writer_done.cancelled() => return,
                r = self.outbox.flush_one(), if self.outbox.has_overflow() => {
                    if r.is_err() {
                        return;
                    }
                }
                () = sleep_until(deadline) => return,
            }
        }
    }

    /// Reads (and discards) until the peer's side ends; false if it did not by `deadline`.
    async fn drain_reader(&mut self, deadline: Instant) -> bool {
        loop {
            match timeout_at(deadline, self.reader.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Why a socket ended before its stream started.
struct Refusal {
    /// The close frame to send, if the socket is still open.
    close: Option<CloseFrame>,
    /// Metric label.
    reason: &'static str,
}

/// Waits for `start` (skipping `connected` and malformed frames).
async fn handshake(socket: &mut Socket, shared: &Shared) -> Result<(String, Start), Refusal> {
    let deadline = Instant::now() + shared.start_timeout;
    loop {
        let item = tokio::select! {
            () = shared.closing.cancelled() => {
                return Err(Refusal {
                    close: Some(close::SHUTDOWN.frame()),
                    reason: "shutdown",
                });
            }
            item = timeout_at(deadline, socket.reader.next()) => match item {
                Ok(item) => item,
                Err(_) => {
                    return Err(Refusal {
                        close: Some(close::NO_START.frame()),
                        reason: "no_start",
                    });
                }
            },
        };
        match classify(item) {
            Incoming::Text(text) => match TwilioMessage::parse(&text) {
                Ok(TwilioMessage::Connected { .. }) => {}
                Ok(TwilioMessage::Start {
                    stream_sid, start, ..
                }) => return Ok((stream_sid, start)),
                Ok(other) => {
                    tracing::debug!(stream_sid = ?other.stream_sid(), "frame before start ignored");
                    metrics::counter!(m::BAD_FRAMES).increment(1);
                }
                Err(error) => bad_frame(&error),
            },
            Incoming::Control => {}
            Incoming::Binary => {
                return Err(Refusal {
                    close: Some(close::BINARY.frame()),
                    reason: "binary_frame",
                });
            }
            Incoming::TooBig => {
                socket.linger = true;
                return Err(Refusal {
                    close: Some(close::TOO_BIG.frame()),
                    reason: "message_too_big",
                });
            }
            Incoming::Closed => {
                return Err(Refusal {
                    close: None,
                    reason: "closed",
                });
            }
        }
    }
}

/// A read from the socket, sorted by what the actor does with it.
enum Incoming {
    Text(Utf8Bytes),
    /// Ping or pong (the library answers pings itself).
    Control,
    Binary,
    /// Larger than [`crate::media::MAX_MESSAGE_BYTES`].
    TooBig,
    /// The peer closed, or the connection failed.
    Closed,
}

fn classify(item: Option<Result<Message, axum::Error>>) -> Incoming {
    match item {
        Some(Ok(Message::Text(text))) => Incoming::Text(text),
        Some(Ok(Message::Binary(_))) => Incoming::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Ok(Message::Close(_))) | None => Incoming::Closed,
        Some(Err(error)) => {
            use tokio_tungstenite::tungstenite::Error as WsError;
            let inner = error.into_inner();
            match inner.downcast_ref::<WsError>() {
                Some(WsError::Capacity(_)) => Incoming::TooBig,
                _ => {
                    tracing::debug!(error = %inner, "media socket read failed");
                    Incoming::Closed
                }
            }
        }
    }
}

fn bad_frame(error: &FrameError) {
    metrics::counter!(m::BAD_FRAMES).increment(1);
    tracing::debug!(%error, "malformed media stream frame skipped");
}

/// How a running stream ends.
struct End {
    /// The `stop` reason to publish (None when the `stop` frame is already out).
    stop: Option<StopReason>,
    /// The close frame to send (None when the peer closes or already has).
    close: Option<CloseFrame>,
}

enum Flow {
    Continue,
    End(End),
}

/// The worker asked to end the call; the gateway waits for its hang-up mark to be echoed.
struct Ending {
    /// `hangup` or `transfer`.
    reason: StopReason,
    deadline: Instant,
}

/// The state of a started stream.
struct StreamActor {
    shared: Arc<Shared>,
    socket: Socket,
    call_sid: String,
    /// `voice.call.<sid>.out`.
    out: async_nats::Subscriber,
    /// `voice.call.<sid>.in` (cheap to clone per frame).
    in_subject: async_nats::Subject,
    stream_sid: String,
    /// The call's agent as the webhook routed it (empty: none), whose transfer list applies.
    agent: String,
    /// A web call: no Twilio call exists, so no REST request is ever made for it.
    web: bool,
    /// Renders outbound audio for this stream.
    media: MediaWriter,
    /// Metric handles for the per-frame path, looked up once.
    media_in: metrics::Counter,
    processing_in: m::FrameTimer,
    /// Seq of the last `InboundFrame` published.
    seq: u64,
    /// Who owns the call, whether it is alive, and the audio a new owner gets replayed.
    ownership: Ownership,
    /// The stream's `start` as the first owner got it; each new owner gets it resumed.
    start: StreamStart,
    /// When the stream started.
    started: Instant,
    ending: Option<Ending>,
    /// The call's recording (None: its agent says `record = false`).
    recording: Option<Recording>,
}

impl StreamActor {
    /// When the timer fires unless something happens first: the owner watch's next step, or
    /// while ending, the play-out deadline.
    fn deadline(&self) -> Instant {
        match &self.ending {
            Some(ending) => ending.deadline,
            None => self
                .ownership
                .watch
                .deadline()
                .unwrap_or_else(|| Instant::now() + PLAYOUT_LIMIT),
        }
    }

    async fn run(&mut self) -> End {
        // Created once, not per loop turn: every turn is one audio frame, and registering a
        // timer or a cancellation waiter per frame is a large part of a frame's cost. The
        // timer is re-armed lazily: the owner's last frame moves with every worker message, so
        // when it fires early it is set to the deadline as it stands then.
        let closing = self.shared.closing.clone().cancelled_owned();
        let writer_done = self.socket.writer_done.clone().cancelled_owned();
        let timer = sleep_until(self.deadline());
        tokio::pin!(closing, writer_done, timer);
        loop {
            let flow = tokio::select! {
                () = &mut closing => Flow::End(End {
                    stop: Some(StopReason::DrainDeadline),
                    close: Some(close::SHUTDOWN.frame()),
                }),
                () = &mut writer_done => Flow::End(End {
                    stop: Some(StopReason::Error),
                    close: None,
                }),
                item = self.socket.reader.next() => self.on_socket(item, Instant::now()).await,
                msg = self.out.next() => match msg {
                    Some(msg) => self.on_outbound(msg).await,
                    None => {
                        tracing::error!("outbound subscription ended");
                        Flow::End(End {
                            stop: Some(StopReason::Error),
                            close: Some(close::WORKER_LINK_LOST.frame()),
                        })
                    }
                },
                r = self.socket.outbox.flush_one(), if self.socket.outbox.has_overflow() => {
                    match r {
                        Ok(()) => Flow::Continue,
                        Err(_) => Flow::End(End { stop: Some(StopReason::Error), close: None }),
                    }
                }
                () = &mut timer => {
                    let deadline = self.deadline();
                    if Instant::now() < deadline {
                        timer.as_mut().reset(deadline);
                        Flow::Continue
                    } else if let Some(ending) = &self.ending {
                        tracing::info!("hang-up mark not echoed in time; closing");
                        Flow::End(End {
                            stop: Some(ending.reason),
                            close: Some(close::NORMAL.frame()),
                        })
                    } else {
                        self.on_owner_tick().await
                    }
                }
                report = self.ownership.next_report() => self.on_report(report).await,
            };
            if let Flow::End(end) = flow {
                return end;
            }
            // Only an ending can bring the deadline forward.
            let deadline = self.deadline();
            if deadline < timer.deadline() {
                timer.as_mut().reset(deadline);
            }
        }
    }

    /// Publishes the final `stop`, closes the socket and leaves the `.out` subject.
    async fn end(mut self, end: End) {
        let ended_at = Instant::now();
        if let Some(reason) = end.stop
            && !self.web
            && reason != StopReason::Digits
        {
            // Before the socket closes: Twilio requests the `<Connect>` action right after.
            reattach::record_ended(&self.shared, &self.call_sid, reason).await;
        }
        if self.ownership.watch.offering() {
            // Nobody owns the call to record its end: the gateway does.
            let reason = end.stop.unwrap_or(StopReason::Stop).end_reason();
            self.close_record(reason);
        }
        if end.stop == Some(StopReason::Hangup) && !self.web {
            self.update_call(CallUpdate::Complete);
        }
        if let Some(reason) = end.stop {
            self.publish(frames::stop(reason)).await;
            metrics::counter!(m::STREAMS_ENDED, "reason" => reason.as_str()).increment(1);
            tracing::info!(%reason, "media stream ended");
        } else {
            let reason = StopReason::Stop;
            metrics::counter!(m::STREAMS_ENDED, "reason" => reason.as_str()).increment(1);
            tracing::info!(%reason, "media stream ended");
        }
        // After the `stop`: the recorder's `StreamRecorded` follows it on `.in`.
        self.record(|| Tap::End { at: ended_at });
        if let Err(error) = self.out.unsubscribe().await {
            tracing::debug!(%error, "unsubscribing from the outbound subject failed");
        }
        self.socket.finish(end.close).await;
    }

    /// One read from the socket, which arrived at `read_at`.
    async fn on_socket(
        &mut self,
        item: Option<Result<Message, axum::Error>>,
        read_at: Instant,
    ) -> Flow {
        match classify(item) {
            Incoming::Text(text) => self.on_text(&text, read_at).await,
            Incoming::Control => Flow::Continue,
            Incoming::Binary => Flow::End(End {
                stop: Some(StopReason::Error),
                close: Some(close::BINARY.frame()),
            }),
            Incoming::TooBig => {
                self.socket.linger = true;
                Flow::End(End {
                    stop: Some(StopReason::Error),
                    close: Some(close::TOO_BIG.frame()),
                })
            }
            Incoming::Closed => Flow::End(End {
                stop: Some(StopReason::Closed),
                close: None,
            }),
        }
    }

    async fn on_text(&mut self, text: &str, read_at: Instant) -> Flow {
        let msg = match frames::parse_inbound(text) {
            Ok(Inbound::Media { stream_sid, frame }) => {
                if self.is_other_stream(Some(&stream_sid)) {
                    return Flow::Continue;
                }
                match frame {
                    Ok(frame) => {
                        self.publish(frame).await;
                        self.processing_in.done(read_at);
                    }
                    Err(error) => bad_frame(&error),
                }
                return Flow::Continue;
            }
            Ok(Inbound::Other(msg)) => msg,
            Err(error) => {
                bad_frame(&error);
                return Flow::Continue;
            }
        };
        if self.is_other_stream(msg.stream_sid()) {
            return Flow::Continue;
        }
        match msg {
            TwilioMessage::Connected { .. } | TwilioMessage::Start { .. } => {
                metrics::counter!(m::BAD_FRAMES).increment(1);
                tracing::debug!("repeated connected/start ignored");
            }
            TwilioMessage::Media { media, .. } => match frames::audio(&media) {
                Ok(frame) => self.publish(frame).await,
                Err(error) => bad_frame(&error),
            },
            TwilioMessage::Dtmf { dtmf, .. } => self.publish(frames::dtmf(&dtmf.digit)).await,
            TwilioMessage::Mark { mark, .. } => {
                if mark.name == HANGUP_MARK
                    && let Some(ending) = &self.ending
                {
                    return Flow::End(End {
                        stop: Some(ending.reason),
                        close: Some(close::NORMAL.frame()),
                    });
                }
                self.record(|| Tap::Echo {
                    at: read_at,
                    name: mark.name.clone(),
                });
                self.publish(frames::mark_echo(&mark.name)).await;
            }
            TwilioMessage::Stop { .. } => {
                // After a transfer Twilio leaves the stream by itself: that is the transfer.
                let reason = self.ending.as_ref().map_or(StopReason::Stop, |e| e.reason);
                // Keys: the call goes on with its next stream.
                if !self.web && reason != StopReason::Digits {
                    reattach::record_ended(&self.shared, &self.call_sid, reason).await;
                }
                self.publish(frames::stop(reason)).await;
                return Flow::End(End {
                    stop: None,
                    close: None,
                });
            }
        }
        Flow::Continue
    }

    /// Whether a frame naming `sid` belongs to another stream (counted and ignored).
    fn is_other_stream(&self, sid: Option<&str>) -> bool {
        match sid {
            Some(sid) if sid != self.stream_sid => {
                metrics::counter!(m::WRONG_STREAM_SID).increment(1);
                tracing::debug!(other = sid, "frame for another stream ignored");
                true
            }
            _ => false,
        }
    }

    async fn on_outbound(&mut self, msg: async_nats::Message) -> Flow {
        let received = Instant::now();
        let (epoch, frame) = match OutboundFrame::decode(msg.payload) {
            Ok(OutboundFrame {
                frame: Some(frame),
                epoch,
                ..
            }) => (epoch, frame),
            Ok(_) => {
                metrics::counter!(m::BAD_OUTBOUND).increment(1);
                tracing::debug!("empty outbound frame ignored");
                return Flow::Continue;
            }
            Err(error) => {
                metrics::counter!(m::BAD_OUTBOUND).increment(1);
                tracing::debug!(%error, "undecodable outbound frame ignored");
                return Flow::Continue;
            }
        };
        if !self.admit(epoch, received).await {
            return Flow::Continue;
        }
        if self.ending.is_some() {
            // The call is being hung up: later audio would be cut off anyway.
            return Flow::Continue;
        }
        match frame {
            outbound_frame::Frame::Audio(audio) => {
                self.record(|| Tap::Agent {
                    at: received,
                    audio: audio.payload.clone(),
                });
                for text in self.media.render_chunks(&audio.payload) {
                    self.socket.outbox.push(Outgoing::Audio { text, received });
                }
            }
            outbound_frame::Frame::Mark(mark) => {
                if mark.name.is_empty() {
                    // Twilio rejects a mark without a name.
                    metrics::counter!(m::BAD_OUTBOUND).increment(1);
                } else {
                    self.push(ServerMessage::mark(&self.stream_sid, &mark.name));
                    self.record(|| Tap::Mark {
                        at: received,
                        name: mark.name,
                    });
                }
            }
            outbound_frame::Frame::Clear(_) => {
                self.push(ServerMessage::clear(&self.stream_sid));
                self.record(|| Tap::Clear { at: received });
            }
            outbound_frame::Frame::Hangup(hangup) => {
                tracing::info!(reason = %hangup.reason, "worker hangs up");
                self.begin_ending(StopReason::Hangup);
            }
            outbound_frame::Frame::Transfer(transfer) => {
                if self.web {
                    // A browser call has no phone line to hand over.
                    metrics::counter!(m::TRANSFERS_REFUSED).increment(1);
                    tracing::warn!(to = %MaskedPhone(&transfer.to), "transfer of a web call refused");
                    return Flow::Continue;
                }
                if !self
                    .shared
                    .agents
                    .allows_transfer(&self.agent, &transfer.to)
                {
                    // The call goes on as it was; the worker is not told (it only ever asks for
                    // its agent's own `transfer_to`, so this is a misbehaving publisher or an
                    // agents file that differs between worker and gateway).
                    metrics::counter!(m::TRANSFERS_REFUSED).increment(1);
                    tracing::warn!(to = %MaskedPhone(&transfer.to), agent = %self.agent,
                        "transfer to a number outside the agent's transfer_to refused");
                    return Flow::Continue;
                }
                tracing::info!(to = %MaskedPhone(&transfer.to), timeout_seconds = transfer.timeout_seconds,
                    "worker transfers the call");
                if transfer.timeout_seconds > 0 && !transfer.whisper.trim().is_empty() {
                    // Warm: hold, call the human with the summary, then bridge.
                    let shared = self.shared.clone();
                    let call_sid = self.call_sid.clone();
                    let span = tracing::Span::current();
                    self.shared.tracker.spawn(
                        async move {
                            dial::warm_transfer(
                                &shared,
                                &call_sid,
                                &transfer.to,
                                &transfer.caller_id,
                                &transfer.whisper,
                                transfer.timeout_seconds,
                            )
                            .await;
                        }
                        .instrument(span),
                    );
                    self.begin_ending(StopReason::Transfer);
                    return Flow::Continue;
                }
                let doc = if transfer.timeout_seconds > 0 {
                    // Rings, then reports back: the caller may come back to the agent.
                    dial::dial_twiml(&self.shared, &transfer.to, transfer.timeout_seconds)
                } else {
                    let mut doc = twiml::Response::new();
                    if !transfer.announcement.trim().is_empty() {
                        doc = doc.say(&transfer.announcement);
                    }
                    doc.dial(&transfer.to).build()
                };
                self.update_call(CallUpdate::Twiml(doc));
                self.begin_ending(StopReason::Transfer);
            }
            outbound_frame::Frame::SendDigits(keys) => {
                if self.web {
                    metrics::counter!(m::DIGITS_REFUSED).increment(1);
                    tracing::warn!("keys on a web call refused");
                    return Flow::Continue;
                }
                if let Err(error) = twiml::validate_digits(&keys.digits) {
                    metrics::counter!(m::DIGITS_REFUSED).increment(1);
                    tracing::warn!(%error, "keys refused");
                    return Flow::Continue;
                }
                tracing::info!(keys = keys.digits.len(), "worker presses keys");
                self.send_digits(keys.digits);
            }
            // Being admitted is all a heartbeat is for.
            outbound_frame::Frame::Heartbeat(_) => {}
            outbound_frame::Frame::Owner(owner) => {
                tracing::debug!(worker_id = %owner.worker_id, epoch, "call owner");
                self.ownership.owner = Some(owner);
            }
            outbound_frame::Frame::HandOver(_) => {
                tracing::info!(epoch, "owner hands the call over");
                let step = self.ownership.watch.hand_over(received);
                return self.on_owner_step(step).await;
            }
        }
        Flow::Continue
    }

    /// Places the hang-up mark after the queued audio; the stream closes when Twilio echoes it
    /// (everything before it has played) or after [`PLAYOUT_LIMIT`].
    fn begin_ending(&mut self, reason: StopReason) {
        // Recorded before Twilio hears of it, so the `<Connect>` action that follows hangs up.
        self.mark_ended(reason);
        self.push(ServerMessage::mark(&self.stream_sid, HANGUP_MARK));
        self.ending = Some(Ending {
            reason,
            deadline: Instant::now() + PLAYOUT_LIMIT,
        });
    }

    /// Records that the call is over for the gateway: the worker ends the call on the `stop` it
    /// gets, so a `<Connect>` action or a stream status callback that follows must not give the
    /// call a new stream ([`crate::reattach`]). Only a stream that vanishes without a `stop` (the
    /// gateway holding it died) leaves its call to be re-attached.
    fn mark_ended(&self, reason: StopReason) {
        if !self.web {
            reattach::spawn_record_ended(&self.shared, &self.call_sid, reason);
        }
    }

    /// Presses `digits` on the line: a REST update with `<Play digits>` and the call's next
    /// stream ([`dial::digits_twiml`]), in a task of its own. Twilio then stops this stream
    /// (reason `digits`, which does not end the call for anyone).
    fn send_digits(&mut self, digits: String) {
        self.ending = Some(Ending {
            reason: StopReason::Digits,
            deadline: Instant::now() + PLAYOUT_LIMIT,
        });
        let shared = self.shared.clone();
        let call_sid = self.call_sid.clone();
        let span = tracing::Span::current();
        self.shared.tracker.spawn(
            async move {
                let doc = match dial::digits_twiml(&shared, &call_sid, &digits).await {
                    Ok(reattach::Reattach::Stream(doc)) => doc,
                    Ok(other) => {
                        tracing::warn!(?other, "no next stream for the call; keys not sent");
                        return;
                    }
                    Err(error) => {
                        metrics::counter!(m::CLAIM_ERRORS, "what" => "reattach").increment(1);
                        tracing::warn!(%error, "cannot issue the next stream; keys not sent");
                        return;
                    }
                };
                match shared
                    .rest
                    .update_call(&call_sid, &CallUpdate::Twiml(doc))
                    .await
                {
                    Ok(Updated::Applied) => tracing::info!("keys sent"),
                    Ok(Updated::AlreadyEnded) => tracing::debug!("call had already ended"),
                    Err(error) => {
                        metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind()))
                            .increment(1);
                        tracing::warn!(%error, "updating the call with keys failed");
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Sends `update` to Twilio in a task of its own (tracked, so shutdown waits for it).
    fn update_call(&self, update: CallUpdate) {
        let rest = self.shared.rest.clone();
        let call_sid = self.call_sid.clone();
        let span = tracing::Span::current();
        self.shared.tracker.spawn(
            async move {
                match rest.update_call(&call_sid, &update).await {
                    Ok(Updated::Applied) => tracing::info!(?update, "call updated"),
                    Ok(Updated::AlreadyEnded) => tracing::debug!("call had already ended"),
                    Err(error) => {
                        metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind()))
                            .increment(1);
                        tracing::warn!(%error, ?update, "updating the call failed");
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Hands what `tap` makes to the call's recorder (never waits; nothing is made when the
    /// call is not recorded).
    fn record(&self, tap: impl FnOnce() -> Tap) {
        if let Some(recording) = &self.recording {
            recording.tap(tap());
        }
    }

    fn push(&mut self, msg: ServerMessage) {
        // A gone writer is noticed through `writer_done` on the next loop turn.
        self.socket.outbox.push(Outgoing::Twilio(msg));
    }

    /// Publishes one frame on `.in`. `publish` only hands the message to the NATS client's
    /// connection task, so this never waits on the network. Live caller audio also goes into
    /// the replay ring.
    async fn publish(&mut self, frame: inbound_frame::Frame) {
        if let inbound_frame::Frame::Audio(audio) = &frame
            && !audio.replayed
        {
            let now = Instant::now();
            self.record(|| Tap::Caller {
                at: now,
                timestamp_ms: audio.timestamp_ms,
                audio: audio.payload.clone(),
            });
            self.ownership.ring.push(now, audio.clone());
        }
        self.seq += 1;
        let kind = frames::inbound_kind(&frame);
        let payload = InboundFrame {
            seq: self.seq,
            frame: Some(frame),
        }
        .encode_to_vec();
        match self
            .shared
            .nats
            .publish(self.in_subject.clone(), payload.into())
            .await
        {
            Ok(()) if kind == "media" => self.media_in.increment(1),
            Ok(()) => metrics::counter!(m::FRAMES_IN, "event" => kind).increment(1),
            Err(error) => {
                metrics::counter!(m::NATS_PUBLISH_ERRORS).increment(1);
                tracing::warn!(%error, kind, "publishing an inbound frame failed");
            }
        }
    }
}

/// Takeover: the owner watch's steps, probe and offer reports, committing a new owner, and
/// giving up on a lost call.
impl StreamActor {
    /// Whether an outbound frame of `epoch` is played; a newer epoch commits its owner first.
    async fn admit(&mut self, epoch: u32, received: Instant) -> bool {
        match self.ownership.watch.admit(epoch, received) {
            Admit::Play => true,
            Admit::Stale => {
                metrics::counter!(m::STALE_FRAMES).increment(1);
                false
            }
            Admit::Commit => {
                self.commit(epoch).await;
                self.ownership.watch.admit(epoch, received) == Admit::Play
            }
        }
    }

    /// The owner watch's timer fired.
    async fn on_owner_tick(&mut self) -> Flow {
        let link_up =
            self.shared.nats.connection_state() == async_nats::connection::State::Connected;
        let step = self.ownership.watch.tick(Instant::now(), link_up);
        self.on_owner_step(step).await
    }

    async fn on_report(&mut self, report: Report) -> Flow {
        let now = Instant::now();
        match report {
            Report::Probe(answer) => {
                let step = self.ownership.watch.probe_answered(answer, now);
                self.on_owner_step(step).await
            }
            Report::Offer(TakeoverOutcome::Accepted { worker_id, epoch }) => {
                tracing::info!(%worker_id, epoch, "call taken over");
                self.commit(epoch).await;
                Flow::Continue
            }
            Report::Offer(TakeoverOutcome::ClaimLost) => {
                tracing::debug!("another offer of this epoch won; waiting for its owner");
                Flow::Continue
            }
            Report::Offer(TakeoverOutcome::NotTaken { reason }) => {
                tracing::warn!(%reason, "no worker took the call over");
                let step = self.ownership.watch.offer_ended(now);
                self.on_owner_step(step).await
            }
        }
    }

    async fn on_owner_step(&mut self, step: Step) -> Flow {
        match step {
            Step::Wait => Flow::Continue,
            Step::Probe => {
                let timeout = self
                    .shared
                    .worker_silence
                    .saturating_sub(self.ownership.watch.probe_after())
                    .max(Duration::from_millis(100));
                let probe = crate::takeover::probe(
                    self.shared.nats.clone(),
                    self.shared.subjects.call_owner(&self.call_sid),
                    self.ownership.watch.epoch(),
                    timeout,
                );
                self.ownership.spawn(
                    &self.shared.tracker,
                    async move { Report::Probe(probe.await) },
                );
                Flow::Continue
            }
            Step::Offer {
                reason,
                epoch,
                silent_since,
            } => {
                tracing::warn!(%reason, epoch, previous = self.ownership.worker_id(),
                    "offering the call to another worker");
                let offer = takeover_offer(
                    &self.start,
                    &self.agent,
                    &self.shared.gateway_id,
                    &Takeover {
                        epoch,
                        reason,
                        previous_worker_id: self.ownership.worker_id().to_owned(),
                        silent_since_ms: unix_ms_of(silent_since),
                    },
                );
                let deadline = Instant::now() + self.shared.takeover_timeout;
                // A paused owner is still a member of the workers' queue group, so an attempt
                // may land on it and time out: each attempt gets a fifth of the bound at most,
                // so several such draws still leave time for a live worker. (A worker that accepts
                // after its attempt timed out still wins its claim: its first frame commits.)
                let per_attempt = self
                    .shared
                    .offer_timeout
                    .min(self.shared.takeover_timeout / 5);
                let (nats, subjects) = (self.shared.nats.clone(), self.shared.subjects.clone());
                self.ownership.spawn(
                    &self.shared.tracker,
                    async move {
                        Report::Offer(
                            offer_takeover(&nats, &subjects, &offer, per_attempt, deadline).await,
                        )
                    }
                    .instrument(tracing::Span::current()),
                );
                Flow::Continue
            }
            Step::GiveUp { silent_since } => self.give_up(silent_since),
        }
    }

    /// The owner of `epoch` took the call: Twilio drops what the previous owner queued, the new
    /// owner gets the resumed `start` and the replay ring, then live frames.
    async fn commit(&mut self, epoch: u32) {
        let Some(committed) = self.ownership.watch.commit(epoch, Instant::now()) else {
            return;
        };
        if let Some((reason, gap)) = committed.offer {
            metrics::counter!(m::TAKEOVERS, "reason" => reason.as_str(),
                "outcome" => m::TAKEOVER_COMMITTED)
            .increment(1);
            metrics::histogram!(m::TAKEOVER_GAP).record(gap.as_secs_f64());
            tracing::info!(epoch, %reason, gap_ms = gap.as_millis() as u64, "new owner committed");
        } else {
            tracing::info!(epoch, "a newer owner's frame committed it");
        }
        self.ownership.owner = None;
        self.push(ServerMessage::clear(&self.stream_sid));
        self.record(|| Tap::Clear { at: Instant::now() });
        let start = StreamStart {
            epoch,
            resumed: true,
            ..self.start.clone()
        };
        self.publish(inbound_frame::Frame::Start(start)).await;
        let replay: Vec<_> = self.ownership.ring.replay().collect();
        for audio in replay {
            self.publish(inbound_frame::Frame::Audio(audio)).await;
        }
    }

    /// No worker took the call within `TAKEOVER_TIMEOUT_MS`: the caller hears the agent's
    /// apology and is transferred or hung up (a web call just closes), and the gateway closes
    /// the record with `worker_lost`.
    fn give_up(&mut self, silent_since: Instant) -> Flow {
        metrics::counter!(m::TAKEOVERS, "reason" => OwnerReason::WorkerLost.as_str(),
            "outcome" => m::TAKEOVER_LOST)
        .increment(1);
        tracing::warn!(
            silent_ms = silent_since.elapsed().as_millis() as u64,
            "no worker took the call over; apologising and closing its record"
        );
        self.close_record_since(EndReason::WorkerLost, silent_since);
        if self.web {
            return Flow::End(End {
                stop: Some(StopReason::WorkerSilent),
                close: Some(close::WORKER_SILENT.frame()),
            });
        }
        let (apology, transfer_to) = self.ownership.fallback();
        let transfer = (!transfer_to.is_empty()
            && self.shared.agents.allows_transfer(&self.agent, transfer_to))
        .then_some(transfer_to);
        let doc = apology_twiml(apology, transfer);
        self.update_call(CallUpdate::Twiml(doc));
        // Twilio leaves the stream for the new TwiML and sends `stop`.
        self.ending = Some(Ending {
            reason: StopReason::WorkerSilent,
            deadline: Instant::now() + PLAYOUT_LIMIT,
        });
        Flow::Continue
    }

    /// Closes the record of a call that has no owner, ended for `reason`.
    fn close_record(&self, reason: EndReason) {
        let silent_since = match self.ownership.watch.state() {
            crate::owner::Watch::Offering { silent_since, .. } => silent_since,
            _ => Instant::now(),
        };
        self.close_record_since(reason, silent_since);
    }

    fn close_record_since(&self, reason: EndReason, silent_since: Instant) {
        let lost = LostCall {
            call_sid: self.call_sid.clone(),
            gateway_id: self.shared.gateway_id.clone(),
            epoch: self.ownership.watch.epoch(),
            previous_worker_id: self.ownership.worker_id().to_owned(),
            agent_id: self.agent.clone(),
            gap_ms: u32::try_from(silent_since.elapsed().as_millis()).unwrap_or(u32::MAX),
            duration_ms: self.started.elapsed().as_millis() as u64,
            reason,
        };
        let js = async_nats::jetstream::new(self.shared.nats.clone());
        let shared = self.shared.clone();
        // The stream may still be playing the apology: its recording is done once it ends.
        let recording = self.recording.as_ref().map(Recording::done);
        let recording = async move {
            match recording {
                Some(done) => done.within(PLAYOUT_LIMIT + RECORDING_WAIT).await,
                None => None,
            }
        };
        self.shared.tracker.spawn(
            async move {
                match close_record(&js, &shared.events, &shared.subjects, &lost, recording).await {
                    Ok(epoch) => tracing::info!(epoch, reason = %lost.reason,
                        "the gateway closed the call's record and fenced its owner"),
                    Err(error) => tracing::error!(%error,
                        "closing the record of a lost call failed"),
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}
