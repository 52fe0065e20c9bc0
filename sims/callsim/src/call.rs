//! One call, played the way Twilio plays it: the signed voice webhook, the TwiML, then the signed
//! Media Streams socket with real-time audio, mark echoes and `clear`.
//!
//! `<Connect action>` and `<Stream statusCallback>` are followed as Twilio documents them: every
//! stream reports `stream-started`, then `stream-stopped` (or `stream-error` with `StreamError`
//! when the socket failed) to its status callback; when `<Connect>` ends because the far end
//! closed the socket or the socket failed, the action URL is requested (signed, with the
//! standard call fields and `CallStatus=in-progress`) and the TwiML it answers is executed, so a
//! new `<Connect><Stream>` opens a new stream of the same call (new `streamSid`, `chunk` and
//! timestamps from the start, an empty play buffer) while the caller's script goes on. A REST
//! update of the call (from [`crate::twilio_rest`]) replaces the stream's TwiML the same way.
//! Requests to the public URL go to the first of the configured gateways that accepts the
//! connection, as a load balancer in front of several gateways would.
//!
//! The call runs in the task that awaits it and owns all its state (socket halves, playback
//! model, caller); nothing is shared with other calls, so a load run is just many of these.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use switchboard_twilio::media::{DtmfDigit, MarkName, MediaFormat, Start, StopInfo, TwilioMessage};
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml::{Instructions, Verb};
use switchboard_twilio::webhook::CallForm;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::caller::{Caller, FRAME, Leave};
use crate::config::{CallConfig, map_stream_url, random_hex};
use crate::inspect::{self, Outbound};
use crate::playback::Playback;
use crate::report::{CallError, CallReport, EndedBy, Segment};
use crate::script::CallerScript;

/// TwiML documents that replace what a live call is doing (REST "update call").
pub type Redirects = tokio::sync::mpsc::UnboundedReceiver<String>;

/// The voice webhook route (ARCHITECTURE.md section 3).
pub const WEBHOOK_PATH: &str = "/twilio-voice";
/// Twilio gives up on a webhook after 15 s by default.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// Twilio's WebSocket handshake time-out (error 31901) is of this order.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After `stop` and our close frame, how long to wait for the far end's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Protocol errors kept per call; a gateway that gets every frame wrong must not eat memory.
const MAX_PROTOCOL_ERRORS: usize = 100;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Tx = SplitSink<Ws, Message>;
type Rx = SplitStream<Ws>;

/// Places one call and plays `script` on it.
pub async fn place_call(cfg: &CallConfig, script: &CallerScript) -> Result<CallReport, CallError> {
    place_call_until(cfg, script, &CancellationToken::new()).await
}

/// Like [`place_call`], but the caller hangs up (sends `stop`) as soon as `cancel` fires, so an
/// interrupted run still ends its calls the way a real phone would.
pub async fn place_call_until(
    cfg: &CallConfig,
    script: &CallerScript,
    cancel: &CancellationToken,
) -> Result<CallReport, CallError> {
    place_call_with(cfg, script, cancel, None).await
}

/// Like [`place_call_until`], and TwiML documents arriving on `redirects` replace the call's
/// current TwiML while it runs (Twilio's REST call update).
pub async fn place_call_with(
    cfg: &CallConfig,
    script: &CallerScript,
    cancel: &CancellationToken,
    redirects: Option<Redirects>,
) -> Result<CallReport, CallError> {
    script
        .validate()
        .map_err(|e| CallError::Config(e.to_string()))?;
    let call_sid = cfg
        .call_sid
        .clone()
        .unwrap_or_else(|| format!("CA{}", random_hex()));
    let mut report = CallReport::new(call_sid.clone());
    // reqwest needs a process-wide TLS provider even for plain HTTP; every Switchboard binary
    // installs this same one, so doing it here is a no-op there and makes the library usable alone.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("{}{}", cfg.gateway_base(), cfg.webhook_path);
    let twilio = Twilio {
        cfg: cfg.clone(),
        validator: Validator::new(cfg.auth_token.clone(), cfg.public_base()),
        // A connection per request, as Twilio's requests arrive: one kept from an earlier request
        // would outlive a gateway that died, where a new one is refused and goes to the next.
        http: reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| CallError::Webhook {
                url: url.clone(),
                source,
            })?,
        call_sid: call_sid.clone(),
    };

    // The voice webhook, signed over the public URL with every form field.
    let webhook_sent = Instant::now();
    let (status, body) = twilio
        .request(&cfg.webhook_path, &twilio.call_form("ringing"))
        .await
        .map_err(|source| CallError::Webhook { url, source })?;
    report.webhook_status = status.as_u16();
    if !status.is_success() {
        return Err(CallError::WebhookStatus {
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        });
    }
    let Instructions(verbs) = Instructions::parse(&body)?;
    report.twiml = verbs.clone();

    let Some(plan) = ConnectPlan::of(&verbs) else {
        // Twilio says the <Say> text and hangs up; no stream.
        let said: Vec<&str> = verbs
            .iter()
            .filter_map(|v| match v {
                Verb::Say(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        report.rejected_message = (!said.is_empty()).then(|| said.join(" "));
        report.ended_by = EndedBy::Rejected;
        tracing::info!(call_sid, message = ?report.rejected_message, "call rejected");
        return Ok(report);
    };
    let ws = twilio.connect(&plan, &mut report).await?;
    report.connected = true;

    let session = Session {
        cfg,
        twilio: &twilio,
        call_sid,
        stream_sid: String::new(),
        started: Instant::now(),
        stream_started: Instant::now(),
        webhook_sent,
        seq: 0,
        chunk: 0,
        playback: Playback::new(),
        caller: Caller::new(script),
        awaiting_response: None,
        report,
    };
    Ok(session.run(ws, plan, script, cancel, redirects).await)
}

/// A `<Connect><Stream>` to open: the socket, its parameters, and where Twilio reports on it.
#[derive(Debug, Clone)]
struct ConnectPlan {
    url: String,
    parameters: Vec<(String, String)>,
    /// `<Connect action>`.
    action: Option<String>,
    /// `<Stream statusCallback>` (requested with POST unless `statusCallbackMethod` says GET,
    /// which callsim does not support and reports).
    status_callback: Option<String>,
}

impl ConnectPlan {
    /// The first `<Connect><Stream>` of a document.
    fn of(verbs: &[Verb]) -> Option<Self> {
        verbs.iter().find_map(|v| match v {
            Verb::ConnectStream {
                url,
                parameters,
                action,
                status_callback,
                ..
            } => Some(Self {
                url: url.clone(),
                parameters: parameters.clone(),
                action: action.clone(),
                status_callback: status_callback.clone(),
            }),
            _ => None,
        })
    }
}

/// Twilio's side of the call's HTTP: signed requests to the public URL, served by the first
/// gateway that accepts the connection.
#[derive(Clone)]
struct Twilio {
    cfg: CallConfig,
    validator: Validator,
    http: reqwest::Client,
    call_sid: String,
}

impl Twilio {
    /// The standard request fields of the call with `CallStatus` = `status`.
    fn call_form(&self, status: &str) -> Vec<(String, String)> {
        CallForm {
            call_sid: self.call_sid.clone(),
            account_sid: self.cfg.account_sid.clone(),
            from: self.cfg.from.clone(),
            to: self.cfg.to.clone(),
            call_status: status.to_owned(),
            direction: self.cfg.direction.clone(),
            ..Default::default()
        }
        .to_pairs()
    }

    /// The path (and query) of a TwiML URL under the public URL: relative URLs are resolved
    /// against it; an absolute URL elsewhere is one callsim cannot reach.
    fn public_path(&self, url: &str) -> Option<String> {
        if url.starts_with('/') {
            return Some(url.to_owned());
        }
        map_stream_url(url, self.cfg.public_base(), self.cfg.gateway_base()).map(|(_, p)| p)
    }

    /// POSTs `pairs` to `path` under the public URL, signed over the public URL: to the first
    /// gateway that accepts the connection.
    async fn request(
        &self,
        path: &str,
        pairs: &[(String, String)],
    ) -> Result<(reqwest::StatusCode, String), reqwest::Error> {
        let signature = self.validator.sign(path, pairs);
        let mut last_error = None;
        for base in self.cfg.gateway_bases() {
            let sent = self
                .http
                .post(format!("{base}{path}"))
                .header("X-Twilio-Signature", &signature)
                .header(reqwest::header::USER_AGENT, "TwilioProxy/1.1")
                .header("I-Twilio-Idempotency-Token", random_hex())
                .form(pairs)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status();
                    return Ok((status, response.text().await?));
                }
                // The gateway is gone (refused, or reset before it answered, as a dying process
                // does with connections already in its listen backlog): the load balancer sends
                // the request to the next one.
                Err(e) if e.is_connect() || (e.is_request() && !e.is_timeout()) => {
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one gateway"))
    }

    /// Opens the plan's media socket, signed over the public `wss` URL with no parameters, on
    /// the first gateway that accepts the connection.
    async fn connect(&self, plan: &ConnectPlan, report: &mut CallReport) -> Result<Ws, CallError> {
        if plan.url.contains('?') {
            report.protocol_errors.push(format!(
                "31920: <Stream url=\"{}\"> has a query string; Twilio allows none",
                plan.url
            ));
        }
        let mut last = None;
        for base in self.cfg.gateway_bases() {
            let (connect_url, path) = map_stream_url(&plan.url, self.cfg.public_base(), base)
                .ok_or_else(|| CallError::StreamUrl(plan.url.clone()))?;
            let connect_err = |source: tungstenite::Error| CallError::Connect {
                url: connect_url.clone(),
                source: Box::new(source),
            };
            let mut request = connect_url
                .as_str()
                .into_client_request()
                .map_err(connect_err)?;
            let signature = HeaderValue::from_str(&self.validator.sign_ws(&path))
                .map_err(|e| CallError::Config(format!("signature header: {e}")))?;
            request
                .headers_mut()
                .insert("X-Twilio-Signature", signature);
            let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok((ws, _))) => return Ok(ws),
                // Nobody listens there, or the connection was reset before the handshake
                // finished: the load balancer tries the next gateway.
                Ok(Err(
                    e @ (tungstenite::Error::Io(_)
                    | tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::HandshakeIncomplete
                        | tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    )),
                )) => {
                    last = Some(connect_err(e));
                }
                Ok(Err(e)) => return Err(connect_err(e)),
                Err(_) => {
                    return Err(connect_err(tungstenite::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "WebSocket handshake timed out",
                    ))));
                }
            }
        }
        Err(last.expect("at least one gateway"))
    }

    /// Posts a `<Stream>` status callback (in a task of its own: Twilio does not hold the media
    /// for it). `error` is `StreamError` for `stream-error`.
    fn stream_status(
        &self,
        plan: &ConnectPlan,
        stream_sid: &str,
        event: &'static str,
        error: Option<String>,
    ) {
        let Some(callback) = &plan.status_callback else {
            return;
        };
        let Some(path) = self.public_path(callback) else {
            tracing::warn!(
                callback,
                "status callback outside the public URL not requested"
            );
            return;
        };
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut pairs = vec![
            ("AccountSid".to_owned(), self.cfg.account_sid.clone()),
            ("CallSid".to_owned(), self.call_sid.clone()),
            ("StreamSid".to_owned(), stream_sid.to_owned()),
            ("StreamName".to_owned(), stream_sid.to_owned()),
            ("StreamEvent".to_owned(), event.to_owned()),
            ("Timestamp".to_owned(), timestamp),
        ];
        if let Some(error) = error {
            pairs.push(("StreamError".to_owned(), error));
        }
        let twilio = self.clone();
        tokio::spawn(async move {
            match twilio.request(&path, &pairs).await {
                Ok((status, _)) if status.is_success() => {}
                Ok((status, _)) => tracing::warn!(%status, event, "stream status callback refused"),
                Err(error) => tracing::warn!(%error, event, "stream status callback failed"),
            }
        });
    }
}

/// How the media loop ended.
enum End {
    /// The caller leaves.
    Leave(Leave),
    /// A REST update replaced the call's TwiML with this document.
    Redirected(String),
    /// The far end sent a close frame.
    Closed(Option<CloseFrame>),
    /// The socket ended without a close frame.
    Vanished,
    /// The socket failed.
    Broken(tungstenite::Error),
}

/// The state of one media stream.
struct Session<'a> {
    cfg: &'a CallConfig,
    twilio: &'a Twilio,
    call_sid: String,
    /// The current stream's `streamSid`.
    stream_sid: String,
    /// Call time zero: when the first stream's `start` went out. The caller's script and the
    /// play buffer run on call time, across streams.
    started: Instant,
    /// When the current stream's `start` went out.
    stream_started: Instant,
    webhook_sent: Instant,
    /// `sequenceNumber` of the last message sent.
    seq: u64,
    /// `chunk` of the last media frame sent.
    chunk: u32,
    playback: Playback,
    caller: Caller,
    /// When the caller last stopped speaking, until assistant audio arrives.
    awaiting_response: Option<Instant>,
    report: CallReport,
}

impl Session<'_> {
    async fn run(
        mut self,
        mut ws: Ws,
        mut plan: ConnectPlan,
        script: &CallerScript,
        cancel: &CancellationToken,
        mut redirects: Option<Redirects>,
    ) -> CallReport {
        let mut first = true;
        loop {
            let (mut tx, mut rx) = ws.split();
            let end = self
                .stream(
                    &mut tx,
                    &mut rx,
                    &plan,
                    first,
                    script,
                    cancel,
                    &mut redirects,
                )
                .await;
            first = false;
            // What Twilio does next: the caller's hang-up ends the call; a redirect runs the new
            // TwiML; the far end closing (or losing) the socket ends `<Connect>`, whose action
            // URL says what comes next.
            let next = match end {
                End::Redirected(doc) => {
                    // Twilio leaves the stream for the new TwiML: `stop`, then the socket closes.
                    self.hang_up(&mut tx, &mut rx).await;
                    self.twilio
                        .stream_status(&plan, &self.stream_sid, "stream-stopped", None);
                    Some(doc)
                }
                End::Leave(_) => {
                    self.finish(end, &mut tx, &mut rx, false).await;
                    self.twilio
                        .stream_status(&plan, &self.stream_sid, "stream-stopped", None);
                    return self.complete();
                }
                End::Closed(_) | End::Vanished | End::Broken(_) => {
                    let error = match &end {
                        End::Closed(_) => None,
                        End::Broken(e) => Some(format!("media socket failed: {e}")),
                        _ => Some("media socket closed without a close frame".to_owned()),
                    };
                    let event = if error.is_some() {
                        "stream-error"
                    } else {
                        "stream-stopped"
                    };
                    let action = plan.action.is_some();
                    self.finish(end, &mut tx, &mut rx, action).await;
                    self.twilio
                        .stream_status(&plan, &self.stream_sid, event, error);
                    match &plan.action {
                        Some(action) => self.follow_action(action).await,
                        None => None,
                    }
                }
            };
            let Some(doc) = next else {
                return self.complete();
            };
            let verbs = match Instructions::parse(&doc) {
                Ok(Instructions(verbs)) => verbs,
                Err(e) => {
                    self.report.step_errors.push(format!("TwiML: {e}"));
                    self.report.ended_by = EndedBy::Error;
                    return self.complete();
                }
            };
            let Some(next_plan) = ConnectPlan::of(&verbs) else {
                // `<Hangup/>` (or a `<Say>`, then the end of the document): the call is over.
                return self.complete();
            };
            match self.twilio.connect(&next_plan, &mut self.report).await {
                Ok(next_ws) => {
                    tracing::info!(call_sid = self.call_sid, "media stream re-attached");
                    self.report.reattached += 1;
                    ws = next_ws;
                    plan = next_plan;
                }
                Err(e) => {
                    self.report
                        .step_errors
                        .push(format!("re-attaching the stream: {e}"));
                    self.report.ended_by = EndedBy::Error;
                    return self.complete();
                }
            }
        }
    }

    /// Requests the `<Connect>` action URL (the call goes on) and returns the TwiML it answers.
    async fn follow_action(&mut self, action: &str) -> Option<String> {
        let Some(path) = self.twilio.public_path(action) else {
            self.report.step_errors.push(format!(
                "<Connect action=\"{action}\"> is outside the public URL"
            ));
            return None;
        };
        self.report.connect_actions += 1;
        let form = self.twilio.call_form("in-progress");
        match self.twilio.request(&path, &form).await {
            Ok((status, body)) if status.is_success() => Some(body),
            Ok((status, body)) => {
                // Twilio plays an application error and hangs up.
                self.report.step_errors.push(format!(
                    "<Connect> action answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                ));
                None
            }
            Err(e) => {
                self.report
                    .step_errors
                    .push(format!("<Connect> action request failed: {e}"));
                None
            }
        }
    }

    /// One media stream, from `connected` to its end.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &mut self,
        tx: &mut Tx,
        rx: &mut Rx,
        plan: &ConnectPlan,
        first: bool,
        script: &CallerScript,
        cancel: &CancellationToken,
        redirects: &mut Option<Redirects>,
    ) -> End {
        self.stream_sid = format!("MZ{}", random_hex());
        self.report.stream_sids.push(self.stream_sid.clone());
        if first {
            self.report.stream_sid = Some(self.stream_sid.clone());
        } else {
            // A new stream: numbering starts over, and its play buffer starts empty (what the
            // old stream had queued is gone, its marks never come back).
            self.seq = 0;
            self.chunk = 0;
            let now = self.now();
            self.playback.clear(now);
        }
        tracing::info!(
            call_sid = self.call_sid,
            stream_sid = self.stream_sid,
            "media stream connected"
        );
        if let Err(e) = self.open(tx, plan.parameters.clone(), first).await {
            return End::Broken(e);
        }
        self.twilio
            .stream_status(plan, &self.stream_sid, "stream-started", None);
        let deadline = self.started + script.time_limit();
        // Absolute deadlines: a late tick is followed by catch-up ticks, never by drift.
        let mut ticker = tokio::time::interval_at(self.stream_started + FRAME, FRAME);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            let mark_due = self.playback.next_mark_due().map(|d| self.started + d);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break End::Leave(Leave::Hangup),
                Some(doc) = next_redirect(redirects) => break End::Redirected(doc),
                tick_at = ticker.tick() => match self.on_tick(tx, tick_at, deadline).await {
                    Ok(None) => {}
                    Ok(Some(leave)) => break End::Leave(leave),
                    Err(e) => break End::Broken(e),
                },
                () = sleep_until(mark_due) => {
                    if let Err(e) = self.echo_due_marks(tx).await {
                        break End::Broken(e);
                    }
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Close(frame))) => break End::Closed(frame),
                    Some(Ok(msg)) => {
                        if let Err(e) = self.on_message(tx, msg).await {
                            break End::Broken(e);
                        }
                    }
                    Some(Err(e)) => break End::Broken(e),
                    None => break End::Vanished,
                },
            }
        }
    }

    /// Stream time now.
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.started)
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    async fn send(&mut self, tx: &mut Tx, msg: TwilioMessage) -> Result<(), tungstenite::Error> {
        tx.send(Message::text(msg.to_json())).await
    }

    /// `connected`, then `start` with the TwiML's parameters.
    async fn open(
        &mut self,
        tx: &mut Tx,
        parameters: Vec<(String, String)>,
        first: bool,
    ) -> Result<(), tungstenite::Error> {
        self.send(tx, TwilioMessage::connected()).await?;
        let custom_parameters: HashMap<String, String> = parameters.into_iter().collect();
        let start = TwilioMessage::Start {
            sequence_number: self.next_seq(),
            stream_sid: self.stream_sid.clone(),
            start: Start {
                stream_sid: self.stream_sid.clone(),
                account_sid: self.cfg.account_sid.clone(),
                call_sid: self.call_sid.clone(),
                tracks: vec!["inbound".to_owned()],
                custom_parameters,
                media_format: MediaFormat::default(),
            },
        };
        self.stream_started = Instant::now();
        if first {
            self.started = self.stream_started;
        }
        self.send(tx, start).await
    }

    /// One 20 ms tick: due marks, the caller's next move, one media frame.
    ///
    /// The caller decides at the tick's scheduled time, not the (possibly later) current time:
    /// when callsim falls behind, the catch-up frames still cover every 20 ms of the call, and
    /// a step never ends "early" in stream time.
    async fn on_tick(
        &mut self,
        tx: &mut Tx,
        tick_at: Instant,
        deadline: Instant,
    ) -> Result<Option<Leave>, tungstenite::Error> {
        self.echo_due_marks(tx).await?;
        if Instant::now() >= deadline {
            return Ok(Some(Leave::Failed(format!(
                "the call ran past its time limit of {} s",
                (deadline - self.started).as_secs()
            ))));
        }
        let frame_time = tick_at.saturating_duration_since(self.started);
        let tick = self.caller.tick(frame_time, &self.playback);
        self.chunk += 1;
        self.seq += 1;
        // The timestamp is the presentation time of the frame's first sample.
        let media = TwilioMessage::media(
            self.seq,
            &self.stream_sid,
            self.chunk,
            (self.chunk - 1).saturating_mul(20),
            &tick.frame,
        );
        self.send(tx, media).await?;
        self.report.frames_sent += 1;
        if !is_silence(&tick.frame) {
            let start_ms = ms(frame_time);
            let end_ms = start_ms + FRAME.as_millis() as u64;
            match self.report.said_segments.last_mut() {
                Some(last) if last.end_ms == start_ms => last.end_ms = end_ms,
                _ => self.report.said_segments.push(Segment { start_ms, end_ms }),
            }
        }
        if let Some(digit) = tick.dtmf {
            let dtmf = TwilioMessage::Dtmf {
                sequence_number: self.next_seq(),
                stream_sid: self.stream_sid.clone(),
                dtmf: DtmfDigit {
                    track: "inbound_track".to_owned(),
                    digit: digit.to_string(),
                },
            };
            self.send(tx, dtmf).await?;
        }
        if tick.said_end {
            self.awaiting_response = Some(Instant::now());
        }
        Ok(tick.leave)
    }

    /// Echoes the marks whose audio has finished playing.
    async fn echo_due_marks(&mut self, tx: &mut Tx) -> Result<(), tungstenite::Error> {
        let now = self.now();
        for (name, due) in self.playback.take_due_marks(now) {
            let late = now.saturating_sub(due).as_millis() as u64;
            self.report.mark_lateness_ms.push(late);
            self.send_mark(tx, name).await?;
        }
        Ok(())
    }

    async fn send_mark(&mut self, tx: &mut Tx, name: String) -> Result<(), tungstenite::Error> {
        let mark = TwilioMessage::Mark {
            sequence_number: self.next_seq(),
            stream_sid: self.stream_sid.clone(),
            mark: MarkName { name },
        };
        self.send(tx, mark).await?;
        self.report.marks_sent_back += 1;
        Ok(())
    }

    /// A frame from the gateway (close frames are handled by the loop).
    async fn on_message(&mut self, tx: &mut Tx, msg: Message) -> Result<(), tungstenite::Error> {
        let outbound = match msg {
            Message::Text(text) => inspect::text(text.as_str(), &self.stream_sid),
            Message::Binary(bytes) => Err(inspect::binary(bytes.len())),
            _ => return Ok(()),
        };
        let outbound = match outbound {
            Ok(o) => o,
            Err(problem) => {
                self.flag(problem);
                return Ok(());
            }
        };
        let now = self.now();
        match outbound {
            Outbound::Media(audio) => {
                self.playback.push_audio(now, audio.len());
                let at = Instant::now();
                if self.report.greeting_latency_ms.is_none() {
                    self.report.greeting_latency_ms = Some(ms(at - self.webhook_sent));
                }
                if let Some(said) = self.awaiting_response.take() {
                    self.report.response_latencies_ms.push(ms(at - said));
                }
            }
            Outbound::Mark(name) => {
                self.playback.push_mark(now, name);
                // Due at once if nothing is queued.
                self.echo_due_marks(tx).await?;
            }
            Outbound::Clear => {
                self.echo_due_marks(tx).await?;
                let pending = self.playback.clear(now);
                self.report.clears += 1;
                if self.cfg.echo_marks_on_clear {
                    for name in pending {
                        self.send_mark(tx, name).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records a frame Twilio would flag.
    fn flag(&mut self, problem: String) {
        tracing::debug!(call_sid = self.call_sid, problem, "protocol error");
        let errors = &mut self.report.protocol_errors;
        if errors.len() < MAX_PROTOCOL_ERRORS {
            errors.push(problem);
        } else if errors.len() == MAX_PROTOCOL_ERRORS {
            errors.push("(further protocol errors not recorded)".to_owned());
        }
    }

    /// Ends the call and completes the report.
    /// Ends the stream: the caller's hang-up, or what the far end's close or failure means.
    /// `action` says whether `<Connect>` has an action URL, which Twilio requests next (so a
    /// failed socket is not yet the end of the call).
    async fn finish(&mut self, end: End, tx: &mut Tx, rx: &mut Rx, action: bool) {
        let hang_up = match end {
            End::Redirected(_) => true,
            End::Leave(Leave::Hangup) => {
                self.report.ended_by = EndedBy::Caller;
                true
            }
            End::Leave(Leave::Drop) => {
                // Nothing more goes out: the connection just disappears when the halves drop.
                self.report.ended_by = EndedBy::Caller;
                false
            }
            End::Leave(Leave::Failed(reason)) => {
                self.report.step_errors.push(reason);
                self.report.ended_by = EndedBy::Error;
                true
            }
            End::Closed(frame) => {
                if let Some(frame) = frame {
                    self.report.close_code = Some(u16::from(frame.code));
                    self.report.close_reason =
                        (!frame.reason.is_empty()).then(|| frame.reason.to_string());
                }
                self.report.ended_by = EndedBy::Agent;
                // Completes the closing handshake (tungstenite queued our reply).
                let _ = tx.close().await;
                false
            }
            End::Vanished => {
                self.flag("31924: the media socket closed without a WebSocket close frame".into());
                self.report.ended_by = EndedBy::Agent;
                false
            }
            End::Broken(e) => match e {
                tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )
                | tungstenite::Error::ConnectionClosed => {
                    self.flag(
                        "31924: the media socket closed without a WebSocket close frame".into(),
                    );
                    self.report.ended_by = EndedBy::Agent;
                    false
                }
                other if action => {
                    self.report
                        .stream_failures
                        .push(format!("media socket failed: {other}"));
                    self.report.ended_by = EndedBy::Agent;
                    false
                }
                other => {
                    self.report
                        .step_errors
                        .push(format!("media socket failed: {other}"));
                    self.report.ended_by = EndedBy::Error;
                    false
                }
            },
        };
        if hang_up {
            self.hang_up(tx, rx).await;
        }
    }

    /// Completes the report once the call is over.
    fn complete(mut self) -> CallReport {
        let at = self.now();
        self.report.heard_ms = ms(self.playback.heard(at));
        self.report.heard_segments = self
            .playback
            .segments(at)
            .into_iter()
            .map(|s| Segment {
                start_ms: ms(s.start),
                end_ms: ms(s.end),
            })
            .collect();
        self.report.audio_received_ms = ms(self.playback.received());
        self.report.duration_ms = ms(at);
        tracing::info!(
            call_sid = self.call_sid,
            ended_by = ?self.report.ended_by,
            heard_ms = self.report.heard_ms,
            "call ended"
        );
        self.report
    }

    /// `stop`, our close frame, then a bounded wait for the far end's close.
    async fn hang_up(&mut self, tx: &mut Tx, rx: &mut Rx) {
        let stop = TwilioMessage::Stop {
            sequence_number: self.next_seq(),
            stream_sid: self.stream_sid.clone(),
            stop: StopInfo {
                account_sid: self.cfg.account_sid.clone(),
                call_sid: self.call_sid.clone(),
            },
        };
        if self.send(tx, stop).await.is_err() {
            return;
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if tx.send(Message::Close(Some(close))).await.is_err() {
            return;
        }
        let until = Instant::now() + CLOSE_WAIT;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, rx.next()).await {}
    }
}

/// The next redirect, or never without a channel (or once it is closed).
async fn next_redirect(redirects: &mut Option<Redirects>) -> Option<String> {
    match redirects {
        Some(rx) => match rx.recv().await {
            Some(doc) => Some(doc),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a mu-law frame is silence (no sample above a whisper).
fn is_silence(frame: &[u8]) -> bool {
    frame
        .iter()
        .all(|&b| switchboard_twilio::mulaw::decode(b).unsigned_abs() < 500)
}
