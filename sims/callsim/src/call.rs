//! One call, played the way Twilio plays it: the signed voice webhook, the TwiML, then the signed
//! Media Streams socket with real-time audio, mark echoes and `clear`.
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
    script
        .validate()
        .map_err(|e| CallError::Config(e.to_string()))?;
    let call_sid = cfg
        .call_sid
        .clone()
        .unwrap_or_else(|| format!("CA{}", random_hex()));
    let mut report = CallReport::new(call_sid.clone());
    let validator = Validator::new(cfg.auth_token.clone(), cfg.public_base());

    // The voice webhook, signed over the public URL with every form field.
    let form = CallForm {
        call_sid: call_sid.clone(),
        account_sid: cfg.account_sid.clone(),
        from: cfg.from.clone(),
        to: cfg.to.clone(),
        call_status: "ringing".to_owned(),
        direction: cfg.direction.clone(),
        ..Default::default()
    };
    let pairs = form.to_pairs();
    let url = format!("{}{}", cfg.gateway_base(), cfg.webhook_path);
    let webhook_err = |source| CallError::Webhook {
        url: url.clone(),
        source,
    };
    // reqwest needs a process-wide TLS provider even for plain HTTP; every Switchboard binary
    // installs this same one, so doing it here is a no-op there and makes the library usable alone.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(webhook_err)?;
    let webhook_sent = Instant::now();
    let response = client
        .post(&url)
        .header(
            "X-Twilio-Signature",
            validator.sign(&cfg.webhook_path, &pairs),
        )
        .header(reqwest::header::USER_AGENT, "TwilioProxy/1.1")
        .header("I-Twilio-Idempotency-Token", random_hex())
        .form(&pairs)
        .send()
        .await
        .map_err(webhook_err)?;
    let status = response.status();
    report.webhook_status = status.as_u16();
    let body = response.text().await.map_err(webhook_err)?;
    if !status.is_success() {
        return Err(CallError::WebhookStatus {
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        });
    }
    let Instructions(verbs) = Instructions::parse(&body)?;
    report.twiml = verbs.clone();

    let stream = verbs.iter().find_map(|v| match v {
        Verb::ConnectStream { url, parameters } => Some((url.clone(), parameters.clone())),
        _ => None,
    });
    let Some((stream_url, parameters)) = stream else {
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
    let (connect_url, path) = map_stream_url(&stream_url, cfg.public_base(), cfg.gateway_base())
        .ok_or_else(|| CallError::StreamUrl(stream_url.clone()))?;
    if stream_url.contains('?') {
        report.protocol_errors.push(format!(
            "31920: <Stream url=\"{stream_url}\"> has a query string; Twilio allows none"
        ));
    }

    // The Media Streams upgrade, signed over the public wss URL with no parameters.
    let connect_err = |source: tungstenite::Error| CallError::Connect {
        url: connect_url.clone(),
        source: Box::new(source),
    };
    let mut request = connect_url
        .as_str()
        .into_client_request()
        .map_err(connect_err)?;
    let signature = HeaderValue::from_str(&validator.sign_ws(&path))
        .map_err(|e| CallError::Config(format!("signature header: {e}")))?;
    request
        .headers_mut()
        .insert("X-Twilio-Signature", signature);
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result.map_err(connect_err)?,
        Err(_) => {
            return Err(connect_err(tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "WebSocket handshake timed out",
            ))));
        }
    };
    report.connected = true;
    let stream_sid = format!("MZ{}", random_hex());
    report.stream_sid = Some(stream_sid.clone());
    tracing::info!(call_sid, stream_sid, "media stream connected");

    let session = Session {
        cfg,
        call_sid,
        stream_sid,
        started: Instant::now(),
        webhook_sent,
        seq: 0,
        chunk: 0,
        playback: Playback::new(),
        caller: Caller::new(script),
        awaiting_response: None,
        report,
    };
    Ok(session.run(ws, parameters, script, cancel).await)
}

/// How the media loop ended.
enum End {
    /// The caller leaves.
    Leave(Leave),
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
    call_sid: String,
    stream_sid: String,
    /// Stream time zero: when `start` went out.
    started: Instant,
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
        ws: Ws,
        parameters: Vec<(String, String)>,
        script: &CallerScript,
        cancel: &CancellationToken,
    ) -> CallReport {
        let (mut tx, mut rx) = ws.split();
        if let Err(e) = self.open(&mut tx, parameters).await {
            return self.finish(End::Broken(e), &mut tx, &mut rx).await;
        }
        let deadline = self.started + script.time_limit();
        // Absolute deadlines: a late tick is followed by catch-up ticks, never by drift.
        let mut ticker = tokio::time::interval_at(self.started + FRAME, FRAME);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let end = loop {
            let mark_due = self.playback.next_mark_due().map(|d| self.started + d);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break End::Leave(Leave::Hangup),
                tick_at = ticker.tick() => match self.on_tick(&mut tx, tick_at, deadline).await {
                    Ok(None) => {}
                    Ok(Some(leave)) => break End::Leave(leave),
                    Err(e) => break End::Broken(e),
                },
                () = sleep_until(mark_due) => {
                    if let Err(e) = self.echo_due_marks(&mut tx).await {
                        break End::Broken(e);
                    }
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Close(frame))) => break End::Closed(frame),
                    Some(Ok(msg)) => {
                        if let Err(e) = self.on_message(&mut tx, msg).await {
                            break End::Broken(e);
                        }
                    }
                    Some(Err(e)) => break End::Broken(e),
                    None => break End::Vanished,
                },
            }
        };
        self.finish(end, &mut tx, &mut rx).await
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
        self.started = Instant::now();
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
    async fn finish(mut self, end: End, tx: &mut Tx, rx: &mut Rx) -> CallReport {
        let at = self.now();
        let hang_up = match end {
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
