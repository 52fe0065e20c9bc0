//! The WebSocket connection of one call to the OpenAI Realtime API (GA interface).
//!
//! [`connect`] returns at once with a sender and an event receiver; a task opens the socket in
//! the background, so the call actor can queue `session.update` and the greeting while the TLS
//! handshake is still running (the offer arrives before Twilio even opens its media socket).
//!
//! The writer never makes the actor wait:
//! - control events (`session.update`, `response.create`, truncates, tool outputs) go through an
//!   unbounded queue and are never dropped; there are only a handful per turn;
//! - caller audio goes through a bounded ring (a broadcast channel with one reader): when the
//!   socket stalls, the oldest audio is overwritten and counted in `worker_audio_dropped_total`,
//!   because stale audio is worthless and must never pile up without bound.
//!
//! Control events are written before audio when both are waiting, so `session.update` (which sets
//! the audio format) always precedes the first append. Everything already queued is written in
//! one go and flushed once: when the writer is behind, many frames cost one `send()`.
//!
//! The media path skips the generic JSON machinery where it costs most: an append is written by
//! hand straight into one buffer ([`append_json`], identical to the serde output), and
//! `response.output_audio.delta` is recognised with a borrowed probe and its audio decoded in the
//! reader task ([`parse_server_event`]); every other event goes through [`ServerEvent::parse`].

use std::borrow::Cow;
use std::time::Duration;
use switchboard_service::redact::Secret;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use switchboard_realtime::{ClientEvent, ServerEvent};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Caller audio held while the socket is slow: 250 Twilio frames of 20 ms = 5 s.
pub const AUDIO_QUEUE_FRAMES: usize = 250;
/// Server events buffered towards the call actor.
const EVENT_QUEUE: usize = 256;
/// How long to wait for the server's close reply after we close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long opening the socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many queued messages are written before one flush, so a long backlog still
/// reaches the socket in pieces (a batch of appends is about 300 bytes each).
const MAX_BATCH: usize = 64;

/// Where and how to reach the Realtime API.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Base URL, e.g. `wss://api.openai.com/v1/realtime`.
    pub url: String,
    /// Model id, sent as `?model=`.
    pub model: String,
    /// Sent as `Authorization: Bearer`; `None` sends no header (the simulator).
    pub api_key: Option<Secret>,
}

impl RealtimeSettings {
    /// The URL to connect to: the base URL with `model` in the query (unless it has one).
    pub fn endpoint(&self) -> String {
        let (_, query) = self.url.split_once('?').unwrap_or((&self.url, ""));
        if query.split('&').any(|kv| kv.starts_with("model=")) {
            return self.url.clone();
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}model={}", self.url, self.model)
    }
}

/// What the call actor hears from the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeEvent {
    /// A server event.
    Server(Box<ServerEvent>),
    /// `response.output_audio.delta` (the bulk of the traffic), its audio already decoded.
    AudioDelta {
        /// The response producing the audio.
        response_id: String,
        /// The assistant item the audio belongs to.
        item_id: String,
        /// The decoded audio (mu-law).
        audio: Bytes,
    },
    /// The socket is gone (or never opened). Always the last event.
    Closed {
        /// The WebSocket close code, when the server sent one (1001 on session expiry, 4000
        /// when the beta interface is refused).
        code: Option<u16>,
        /// What happened, for the logs.
        reason: String,
    },
}

enum Control {
    Text(Utf8Bytes),
    Close,
}

/// The sending half: cheap, never waits.
#[derive(Debug, Clone)]
pub struct RealtimeSender {
    control: mpsc::UnboundedSender<Control>,
    audio: broadcast::Sender<Utf8Bytes>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(_) => f.write_str("Text"),
            Self::Close => f.write_str("Close"),
        }
    }
}

impl RealtimeSender {
    /// Queues a control event (never dropped).
    pub fn send(&self, event: &ClientEvent) {
        let _ = self.control.send(Control::Text(event.to_json().into()));
    }

    /// Queues caller audio (raw mu-law, sent base64-encoded in an `input_audio_buffer.append`);
    /// the oldest queued audio is dropped when the queue is full.
    pub fn append_audio(&self, audio: &[u8]) {
        let _ = self.audio.send(append_json(audio).into());
    }

    /// Closes the socket (normal closure) after the queued control events.
    pub fn close(&self) {
        let _ = self.control.send(Control::Close);
    }
}

/// What precedes the base64 audio in an `input_audio_buffer.append` (the serde field order).
const APPEND_HEAD: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
/// What follows it.
const APPEND_TAIL: &str = r#""}"#;

/// The JSON of `ClientEvent::append(base64(audio))`, byte for byte, built in one buffer of the
/// exact size with the base64 written straight into it (50 of these per second per call).
/// Base64 needs no JSON escaping, so the text is the serde text.
pub fn append_json(audio: &[u8]) -> String {
    let b64_len = base64::encoded_len(audio.len(), true).unwrap_or(0);
    let mut json = String::with_capacity(APPEND_HEAD.len() + b64_len + APPEND_TAIL.len());
    json.push_str(APPEND_HEAD);
    base64::engine::general_purpose::STANDARD.encode_string(audio, &mut json);
    json.push_str(APPEND_TAIL);
    json
}

/// Just enough of a server event to recognise an audio delta without copying its audio: the
/// same fields, types and defaults as [`ServerEvent::OutputAudioDelta`], so whatever this accepts
/// the full parser accepts too (and vice versa for audio deltas).
#[derive(serde::Deserialize)]
struct AudioDeltaProbe<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "event_id", default, borrow)]
    _event_id: Cow<'a, str>,
    #[serde(borrow)]
    response_id: Cow<'a, str>,
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    #[serde(rename = "output_index", default)]
    _output_index: u32,
    #[serde(rename = "content_index", default)]
    _content_index: u32,
    #[serde(borrow)]
    delta: Cow<'a, str>,
}

/// Parses a server event. `response.output_audio.delta` (and its beta spelling) takes a fast
/// path: one borrowed pass, the audio decoded straight from the text; anything else (or a delta
/// whose audio is not valid base64, which the call counts and drops) is
/// [`ServerEvent::parse`]d.
pub fn parse_server_event(text: &str) -> Result<RealtimeEvent, serde_json::Error> {
    if let Ok(probe) = serde_json::from_str::<AudioDeltaProbe<'_>>(text)
        && matches!(
            probe.kind.as_ref(),
            "response.output_audio.delta" | "response.audio.delta"
        )
        && let Ok(audio) = base64::engine::general_purpose::STANDARD.decode(probe.delta.as_bytes())
    {
        return Ok(RealtimeEvent::AudioDelta {
            response_id: probe.response_id.into_owned(),
            item_id: probe.item_id.into_owned(),
            audio: Bytes::from(audio),
        });
    }
    ServerEvent::parse(text).map(|ev| RealtimeEvent::Server(Box::new(ev)))
}

/// Opens the Realtime socket of `call_sid` in the background, in a task on `tasks` (the call's,
/// so the call is not done until its socket is). The opening (until the socket is up or has
/// failed) is traced as `realtime.connect`, a child of the current span (the call's).
pub fn connect(
    settings: &RealtimeSettings,
    call_sid: &str,
    tasks: &TaskTracker,
) -> (RealtimeSender, mpsc::Receiver<RealtimeEvent>) {
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (audio_tx, audio_rx) = broadcast::channel(AUDIO_QUEUE_FRAMES);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let settings = settings.clone();
    let call_sid = call_sid.to_owned();
    let span = tracing::info_span!("realtime.connect", call_sid = %call_sid);
    tasks.spawn(async move {
        let closed = run(&settings, &call_sid, control_rx, audio_rx, &events_tx, span).await;
        if let Some((code, reason)) = closed {
            tracing::info!(%call_sid, ?code, %reason, "realtime socket closed");
            let _ = events_tx.send(RealtimeEvent::Closed { code, reason }).await;
        }
    });
    (
        RealtimeSender {
            control: control_tx,
            audio: audio_tx,
        },
        events_rx,
    )
}

/// Runs the connection; returns the close to report, or `None` when we closed it ourselves.
async fn run(
    settings: &RealtimeSettings,
    call_sid: &str,
    control: mpsc::UnboundedReceiver<Control>,
    audio: broadcast::Receiver<Utf8Bytes>,
    events: &mpsc::Sender<RealtimeEvent>,
    span: tracing::Span,
) -> Option<(Option<u16>, String)> {
    let endpoint = settings.endpoint();
    let mut request = match endpoint.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Some((None, format!("bad REALTIME_URL {endpoint}: {e}"))),
    };
    if let Some(key) = &settings.api_key {
        match HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
            Ok(v) => {
                request.headers_mut().insert("authorization", v);
            }
            Err(_) => return Some((None, "OPENAI_API_KEY is not a valid header value".into())),
        }
    }
    let started = tokio::time::Instant::now();
    // tungstenite zero-fills its whole read buffer before every read (128 KiB by default): per
    // call that was 128 KiB of resident memory and a 128 KiB memset per server event. Server
    // events are a few KiB; larger ones still grow the buffer as needed.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .instrument(span)
        .await;
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Some((None, format!("connecting to {endpoint}: {e}"))),
        Err(_) => return Some((None, format!("connecting to {endpoint}: timed out"))),
    };
    metrics::histogram!(crate::metrics::REALTIME_CONNECT).record(started.elapsed().as_secs_f64());
    tracing::debug!(%call_sid, %endpoint, "realtime socket open");

    let (sink, stream) = ws.split();
    let writer = write_loop(sink, control, audio, call_sid);
    let reader = read_loop(stream, events, call_sid);
    tokio::pin!(writer, reader);
    tokio::select! {
        closed = &mut reader => closed,
        written = &mut writer => match written {
            // We closed: let the reader see the server's close reply, then stop quietly.
            Ok(()) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, reader).await;
                None
            }
            Err(e) => Some((None, e)),
        },
    }
}

/// What the writer does next.
enum Next {
    Send(Message),
    Close,
    /// Nothing to write (dropped audio, or the audio queue just closed).
    Skip,
    /// Nothing is queued right now.
    Idle,
}

async fn write_loop<S>(
    mut sink: S,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut audio: broadcast::Receiver<Utf8Bytes>,
    call_sid: &str,
) -> Result<(), String>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut audio_open = true;
    loop {
        let mut next = tokio::select! {
            biased;
            c = control.recv() => control_next(c),
            a = audio.recv(), if audio_open => audio_next(a, &mut audio_open, call_sid),
        };
        let mut batched = 0;
        loop {
            match next {
                Next::Send(message) => {
                    sink.feed(message)
                        .await
                        .map_err(|e| format!("writing to the realtime socket: {e}"))?;
                    batched += 1;
                }
                Next::Close => {
                    // `send` flushes whatever was fed before the close frame.
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "call ended".into(),
                        })))
                        .await;
                    return Ok(());
                }
                Next::Skip => {}
                Next::Idle => break,
            }
            if batched >= MAX_BATCH {
                break;
            }
            // Whatever is already queued goes out with this flush, control events first.
            next = match control.try_recv() {
                Ok(c) => control_next(Some(c)),
                Err(mpsc::error::TryRecvError::Disconnected) => control_next(None),
                Err(mpsc::error::TryRecvError::Empty) if audio_open => match audio.try_recv() {
                    Ok(text) => Next::Send(Message::Text(text)),
                    Err(TryRecvError::Empty) => Next::Idle,
                    Err(TryRecvError::Lagged(n)) => audio_next(
                        Err(broadcast::error::RecvError::Lagged(n)),
                        &mut audio_open,
                        call_sid,
                    ),
                    Err(TryRecvError::Closed) => audio_next(
                        Err(broadcast::error::RecvError::Closed),
                        &mut audio_open,
                        call_sid,
                    ),
                },
                Err(mpsc::error::TryRecvError::Empty) => Next::Idle,
            };
        }
        if batched > 0 {
            sink.flush()
                .await
                .map_err(|e| format!("writing to the realtime socket: {e}"))?;
        }
    }
}

fn control_next(c: Option<Control>) -> Next {
    match c {
        Some(Control::Text(text)) => Next::Send(Message::Text(text)),
        Some(Control::Close) | None => Next::Close,
    }
}

fn audio_next(
    a: Result<Utf8Bytes, broadcast::error::RecvError>,
    audio_open: &mut bool,
    call_sid: &str,
) -> Next {
    match a {
        Ok(text) => Next::Send(Message::Text(text)),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            metrics::counter!(crate::metrics::AUDIO_DROPPED).increment(n);
            tracing::debug!(%call_sid, dropped = n, "realtime socket slow: dropped oldest caller audio");
            Next::Skip
        }
        Err(broadcast::error::RecvError::Closed) => {
            *audio_open = false;
            Next::Skip
        }
    }
}

async fn read_loop<S>(
    mut stream: S,
    events: &mpsc::Sender<RealtimeEvent>,
    call_sid: &str,
) -> Option<(Option<u16>, String)>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut close: Option<(Option<u16>, String)> = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => match parse_server_event(&text) {
                Ok(event) => {
                    if events.send(event).await.is_err() {
                        // The call is over; nobody listens any more.
                        return None;
                    }
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::REALTIME_UNPARSED_EVENTS).increment(1);
                    tracing::warn!(%call_sid, error = %e, "unparseable realtime event ignored");
                }
            },
            Ok(Message::Close(frame)) => {
                close = Some(match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                    None => (None, "closed without a close frame".into()),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Some(close.unwrap_or((None, format!("realtime socket error: {e}"))));
            }
        }
    }
    Some(close.unwrap_or((None, "realtime socket closed".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    #[test]
    fn endpoint_adds_the_model() {
        let s = |url: &str| RealtimeSettings {
            url: url.into(),
            model: "gpt-realtime".into(),
            api_key: None,
        };
        assert_eq!(
            s("wss://api.openai.com/v1/realtime").endpoint(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(
            s("ws://h/v1/realtime?x=1").endpoint(),
            "ws://h/v1/realtime?x=1&model=gpt-realtime"
        );
        assert_eq!(s("ws://h/?model=m").endpoint(), "ws://h/?model=m");
    }

    #[test]
    fn append_json_is_the_serde_json() {
        let payloads: [&[u8]; 6] = [
            &[],
            &[0xff],
            &[0xff, 0x00],
            &[0xff, 0x00, 0x7f],
            &[0xfb, 0xff, 0xbf, 0x3e, 0x00],
            &[0x7f; 160],
        ];
        for audio in payloads {
            let b64 = base64::engine::general_purpose::STANDARD.encode(audio);
            let serde = ClientEvent::append(b64).to_json();
            assert_eq!(append_json(audio), serde);
            assert_eq!(append_json(audio).capacity(), serde.len(), "sized exactly");
        }
    }

    /// What the full parser makes of `text`, in the fast path's terms.
    fn slow(text: &str) -> Option<RealtimeEvent> {
        let ev = ServerEvent::parse(text).ok()?;
        if let ServerEvent::OutputAudioDelta {
            response_id,
            item_id,
            delta,
            ..
        } = &ev
            && let Ok(audio) = base64::engine::general_purpose::STANDARD.decode(delta)
        {
            return Some(RealtimeEvent::AudioDelta {
                response_id: response_id.clone(),
                item_id: item_id.clone(),
                audio: Bytes::from(audio),
            });
        }
        Some(RealtimeEvent::Server(Box::new(ev)))
    }

    #[test]
    fn the_audio_delta_fast_path_agrees_with_the_full_parser() {
        let delta = |b64: &str| {
            format!(
                r#"{{"type":"response.output_audio.delta","event_id":"e1","response_id":"r1","item_id":"i1","output_index":0,"content_index":0,"delta":"{b64}"}}"#
            )
        };
        let b64_800 = base64::engine::general_purpose::STANDARD.encode([0x55u8; 800]);
        let cases = [
            delta("/wB/"),
            delta(""),
            delta(&b64_800),
            // Escaped slashes are valid JSON: the probe must not need borrowed strings.
            delta(r"\/wB\/"),
            // The beta spelling, other field order, defaults left out, unknown fields.
            r#"{"delta":"/w==","item_id":"i2","response_id":"r2","type":"response.audio.delta","x":[1,{"y":2}]}"#.into(),
            // Not base64: the call must see it (and count it), so the full parser takes it.
            delta("not base64!"),
            // Broken deltas are the full parser's to reject.
            r#"{"type":"response.output_audio.delta","response_id":"r1","delta":"/w=="}"#.into(),
            r#"{"type":"response.output_audio.delta","event_id":null,"response_id":"r1","item_id":"i1","delta":"/w=="}"#.into(),
            // Everything else.
            r#"{"type":"response.output_audio_transcript.delta","event_id":"e","response_id":"r1","item_id":"i1","output_index":0,"content_index":0,"delta":"Hi"}"#.into(),
            r#"{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}"#.into(),
            r#"{"type":"something.new","delta":"/w=="}"#.into(),
            "not json".into(),
        ];
        for text in &cases {
            assert_eq!(parse_server_event(text).ok(), slow(text), "{text}");
        }
        assert_eq!(
            parse_server_event(&delta(r"\/wB\/")).unwrap(),
            RealtimeEvent::AudioDelta {
                response_id: "r1".into(),
                item_id: "i1".into(),
                audio: Bytes::from_static(&[0xff, 0x00, 0x7f]),
            }
        );
        assert!(matches!(
            parse_server_event(&delta("not base64!")).unwrap(),
            RealtimeEvent::Server(_)
        ));
    }

    #[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
    /// A one-connection fake server: records the upgrade request, sends `script`, then echoes
    /// every client text frame back to the test.
    async fn fake_server(
        script: Vec<String>,
        close_after_script: Option<u16>,
    ) -> (
        String,
        tokio::sync::oneshot::Receiver<Request>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (req_tx, req_rx) = tokio::sync::oneshot::channel();
        let (got_tx, got_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut req_tx = Some(req_tx);
            let mut ws =
                tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                    if let Some(tx) = req_tx.take() {
                        let mut copy = Request::builder().uri(req.uri().clone());
                        for (k, v) in req.headers() {
                            copy = copy.header(k, v);
                        }
                        let _ = tx.send(copy.body(()).unwrap());
                    }
                    Ok(resp)
                })
                .await
                .unwrap();
            for text in script {
                ws.send(Message::text(text)).await.unwrap();
            }
            if let Some(code) = close_after_script {
                let _ = ws
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "bye".into(),
                    })))
                    .await;
            }
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let _ = got_tx.send(t.to_string());
                }
            }
        });
        (format!("ws://{addr}/v1/realtime"), req_rx, got_rx)
    }

    #[tokio::test]
    async fn sends_auth_only_when_configured_and_never_the_beta_header() {
        let (url, req, _got) = fake_server(vec![], None).await;
        let settings = RealtimeSettings {
            url,
            model: "gpt-realtime".into(),
            api_key: Some(Secret::new("sk-test")),
        };
        let (tx, _rx) = connect(&settings, "CA1", &TaskTracker::new());
        let req = req.await.unwrap();
        assert_eq!(req.uri().query(), Some("model=gpt-realtime"));
        assert_eq!(req.headers()["authorization"], "Bearer sk-test");
        assert!(req.headers().get("openai-beta").is_none());
        drop(tx);

        let (url, req, _got) = fake_server(vec![], None).await;
        let settings = RealtimeSettings {
            url,
            model: "m".into(),
            api_key: None,
        };
        let (_tx, _rx) = connect(&settings, "CA1", &TaskTracker::new());
        let req = req.await.unwrap();
        assert!(req.headers().get("authorization").is_none());
        assert!(req.headers().get("openai-beta").is_none());
    }

    #[tokio::test]
    async fn control_events_go_first_and_server_events_come_back() {
        let created = r#"{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}"#;
        let (url, _req, mut got) = fake_server(vec![created.into()], None).await;
        let settings = RealtimeSettings {
            url,
            model: "m".into(),
            api_key: None,
        };
        let (tx, mut rx) = connect(&settings, "CA1", &TaskTracker::new());
        // Queued before the socket is open: the control event must still be written first.
        tx.append_audio(&[0, 0, 0]);
        tx.send(&ClientEvent::response_create());
        let first = got.recv().await.unwrap();
        assert!(first.contains("response.create"), "{first}");
        let second = got.recv().await.unwrap();
        assert!(second.contains("input_audio_buffer.append"), "{second}");
        match rx.recv().await.unwrap() {
            RealtimeEvent::Server(ev) => {
                assert!(matches!(*ev, ServerEvent::SessionCreated { .. }), "{ev:?}")
            }
            other => panic!("unexpected {other:?}"),
        }
        // Closing ourselves reports nothing more.
        tx.close();
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn the_connection_is_tracked_until_its_socket_is_closed() {
        let (url, req, _got) = fake_server(vec![], None).await;
        let settings = RealtimeSettings {
            url,
            model: "m".into(),
            api_key: None,
        };
        let tasks = TaskTracker::new();
        let (tx, _rx) = connect(&settings, "CA1", &tasks);
        req.await.unwrap();
        tasks.close();
        // The call's drain waits on this tracker: the open socket is one of its tasks.
        assert_eq!(tasks.len(), 1);
        tx.close();
        tokio::time::timeout(CLOSE_GRACE * 2, tasks.wait())
            .await
            .expect("the connection task ended after the close");
    }

    #[tokio::test]
    async fn a_backlog_is_written_whole_and_in_order() {
        let (url, _req, mut got) = fake_server(vec![], None).await;
        let settings = RealtimeSettings {
            url,
            model: "m".into(),
            api_key: None,
        };
        let (tx, _rx) = connect(&settings, "CA1", &TaskTracker::new());
        // More than one batch, queued before the socket opens.
        let frames = u8::try_from(MAX_BATCH * 2 + 5).unwrap();
        for i in 0..frames {
            tx.append_audio(&[i]);
        }
        tx.send(&ClientEvent::response_create());
        assert!(got.recv().await.unwrap().contains("response.create"));
        for i in 0..frames {
            assert_eq!(got.recv().await.unwrap(), append_json(&[i]));
        }
    }

    #[tokio::test]
    async fn server_close_is_reported_with_its_code() {
        let (url, _req, _got) = fake_server(vec![], Some(4000)).await;
        let settings = RealtimeSettings {
            url,
            model: "m".into(),
            api_key: None,
        };
        let (_tx, mut rx) = connect(&settings, "CA1", &TaskTracker::new());
        match rx.recv().await.unwrap() {
            RealtimeEvent::Closed { code, reason } => {
                assert_eq!(code, Some(4000));
                assert_eq!(reason, "bye");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_failure_is_reported() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let settings = RealtimeSettings {
            url: format!("ws://127.0.0.1:{port}/v1/realtime"),
            model: "m".into(),
            api_key: None,
        };
        let (_tx, mut rx) = connect(&settings, "CA1", &TaskTracker::new());
        assert!(matches!(
            rx.recv().await,
            Some(RealtimeEvent::Closed { code: None, .. })
        ));
    }
}
