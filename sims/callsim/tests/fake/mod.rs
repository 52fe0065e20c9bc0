//! A tiny gateway for callsim's tests: it checks signatures like the real one, answers TwiML, and
//! on the media socket runs a fixed plan (send audio, marks, clears, junk; wait for the caller),
//! reporting everything it saw with timestamps.

// Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures::{SinkExt as _, StreamExt as _};
use switchboard_twilio::media::{ServerMessage, TwilioMessage};
use switchboard_twilio::mulaw;
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const TOKEN: &str = "test-auth-token";
/// The public URL the fake validates against; callsim must map it onto the real address.
pub const PUBLIC_URL: &str = "https://agent.example.com";

/// Something the fake gateway observed or did.
#[derive(Debug, Clone)]
pub enum Seen {
    Webhook {
        pairs: Vec<(String, String)>,
        signature_ok: bool,
    },
    Upgrade {
        at: Instant,
        signature_ok: bool,
    },
    /// A frame from callsim.
    Frame {
        at: Instant,
        msg: TwilioMessage,
    },
    /// A frame from callsim that is not a Twilio message.
    Junk(String),
    /// The fake began an action (`label` names it; waits report when their condition held).
    Sent {
        at: Instant,
        label: String,
    },
    /// The media socket ended.
    Ended,
}

/// One step of the media-socket plan.
#[derive(Debug, Clone)]
pub enum Action {
    /// This much tone audio, in 100 ms messages, sent at once (faster than real time).
    Audio(u64),
    Mark(&'static str),
    Clear,
    /// A raw text frame; `{sid}` is replaced by the stream's sid.
    Raw(&'static str),
    Binary,
    Sleep(u64),
    /// Wait for a media frame with speech in it.
    WaitSpeech,
    /// Wait for speech and then a silent frame.
    WaitSpeechEnd,
    /// Close the socket with 1000.
    Close,
}

#[derive(Clone)]
struct Plan {
    busy: Option<String>,
    parameters: Vec<(String, String)>,
    actions: Vec<Action>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// A running fake gateway.
pub struct FakeGateway {
    pub url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGateway {
    /// A gateway that connects the call to a stream carrying `parameters` and runs `actions`.
    pub async fn start(parameters: &[(&str, &str)], actions: Vec<Action>) -> Self {
        Self::spawn(None, parameters, actions).await
    }

    /// A gateway that answers every call with busy TwiML.
    pub async fn busy(message: &str) -> Self {
        Self::spawn(Some(message.to_owned()), &[], Vec::new()).await
    }

    async fn spawn(
        busy: Option<String>,
        parameters: &[(&str, &str)],
        actions: Vec<Action>,
    ) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let plan = Arc::new(Plan {
            busy,
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            actions,
            seen: tx,
        });
        let app = axum::Router::new()
            .route("/twilio-voice", post(webhook))
            .route("/media", any(media))
            .with_state(plan);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            seen,
            server,
        }
    }

    /// Everything seen until the media socket ended (or `limit` passed).
    pub async fn collect(&mut self, limit: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, self.seen.recv()).await {
            let ended = matches!(seen, Seen::Ended);
            out.push(seen);
            if ended {
                break;
            }
        }
        out
    }

    /// Everything seen so far, without waiting.
    pub fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(seen) = self.seen.try_recv() {
            out.push(seen);
        }
        out
    }
}

fn validator() -> Validator {
    Validator::new(TOKEN, PUBLIC_URL)
}

async fn webhook(
    State(plan): State<Arc<Plan>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = validator().validate("/twilio-voice", &pairs, signature);
    let _ = plan.seen.send(Seen::Webhook {
        pairs,
        signature_ok,
    });
    if !signature_ok {
        return (StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    let doc = match &plan.busy {
        Some(message) => twiml::Response::new().say(message).hangup(),
        None => {
            let params: Vec<(&str, &str)> = plan
                .parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            twiml::Response::new().connect_stream(&validator().ws_url("/media"), &params)
        }
    };
    ([("content-type", "text/xml")], doc.build()).into_response()
}

async fn media(
    State(plan): State<Arc<Plan>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = validator().validate_ws("/media", signature);
    let _ = plan.seen.send(Seen::Upgrade {
        at: Instant::now(),
        signature_ok,
    });
    if !signature_ok {
        return StatusCode::FORBIDDEN.into_response();
    }
    upgrade.on_upgrade(move |socket| run_plan(socket, plan))
}

/// Reads callsim's frames (reporting each) while playing the plan.
async fn run_plan(socket: WebSocket, plan: Arc<Plan>) {
    let (mut tx, mut rx) = socket.split();
    let (inbound_tx, mut inbound) = mpsc::unbounded_channel::<TwilioMessage>();
    let seen = plan.seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            let at = Instant::now();
            let Message::Text(text) = msg else { continue };
            match TwilioMessage::parse(text.as_str()) {
                Ok(msg) => {
                    let _ = seen.send(Seen::Frame {
                        at,
                        msg: msg.clone(),
                    });
                    let _ = inbound_tx.send(msg);
                }
                Err(_) => {
                    let _ = seen.send(Seen::Junk(text.to_string()));
                }
            }
        }
        let _ = seen.send(Seen::Ended);
    });

    // The stream sid comes with `start`.
    let mut sid = String::new();
    while let Some(msg) = inbound.recv().await {
        if let TwilioMessage::Start { stream_sid, .. } = msg {
            sid = stream_sid;
            break;
        }
    }
    let mut actions: VecDeque<Action> = plan.actions.iter().cloned().collect();
    while let Some(action) = actions.pop_front() {
        let label = format!("{action:?}");
        // Stamped before sending: callsim may act on the first bytes before the last are out.
        let began = Instant::now();
        let sent: Result<(), axum::Error> = match action {
            Action::Audio(ms) => {
                let audio = tone(ms);
                let mut result = Ok(());
                for chunk in audio.chunks(800) {
                    result = tx
                        .send(text(ServerMessage::media(&sid, chunk).to_json()))
                        .await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            Action::Mark(name) => {
                tx.send(text(ServerMessage::mark(&sid, name).to_json()))
                    .await
            }
            Action::Clear => tx.send(text(ServerMessage::clear(&sid).to_json())).await,
            Action::Raw(raw) => tx.send(text(raw.replace("{sid}", &sid))).await,
            Action::Binary => tx.send(Message::Binary(vec![1u8, 2, 3].into())).await,
            Action::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            Action::WaitSpeech | Action::WaitSpeechEnd => {
                let want_end = matches!(action, Action::WaitSpeechEnd);
                let mut spoke = false;
                while let Some(msg) = inbound.recv().await {
                    let TwilioMessage::Media { media, .. } = msg else {
                        continue;
                    };
                    let level = mulaw::rms(&media.audio().unwrap_or_default());
                    if level > 0.1 {
                        spoke = true;
                        if !want_end {
                            break;
                        }
                    } else if spoke && want_end {
                        break;
                    }
                }
                let _ = plan.seen.send(Seen::Sent {
                    at: Instant::now(),
                    label,
                });
                continue;
            }
            Action::Close => {
                tx.send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "bye".into(),
                })))
                .await
            }
        };
        let _ = plan.seen.send(Seen::Sent { at: began, label });
        if sent.is_err() {
            break;
        }
    }
    // Keep the write half alive so the closing handshake completes.
    let _ = reader.await;
    drop(tx);
}

fn text(s: String) -> Message {
    Message::Text(s.into())
}

/// `ms` of a 440 Hz tone at RMS ~0.2, as mu-law.
pub fn tone(ms: u64) -> Vec<u8> {
    (0..ms * 8)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let s = 0.28 * (std::f64::consts::TAU * 440.0 * t).sin();
            mulaw::encode((s * 32767.0) as i16)
        })
        .collect()
}

/// When the fake began the action whose label starts with `prefix` (the n-th such).
pub fn sent_at(seen: &[Seen], prefix: &str, nth: usize) -> Instant {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Sent { at, label } if label.starts_with(prefix) => Some(*at),
            _ => None,
        })
        .nth(nth)
        .unwrap_or_else(|| panic!("no {prefix:?} #{nth} in {seen:#?}"))
}

/// The frames callsim sent, with arrival times.
pub fn frames(seen: &[Seen]) -> Vec<(Instant, TwilioMessage)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Frame { at, msg } => Some((*at, msg.clone())),
            _ => None,
        })
        .collect()
}

/// Arrival times of the mark echoes named `name`.
pub fn echoes(seen: &[Seen], name: &str) -> Vec<Instant> {
    frames(seen)
        .into_iter()
        .filter_map(|(at, msg)| match msg {
            TwilioMessage::Mark { mark, .. } if mark.name == name => Some(at),
            _ => None,
        })
        .collect()
}
