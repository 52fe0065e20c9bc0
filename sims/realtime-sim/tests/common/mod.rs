//! A Realtime client for the tests: a real WebSocket, events parsed with the shared types.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use realtime_sim::{Script, SimServer};
use serde_json::Value;
use switchboard_realtime::{ClientEvent, ServerEvent};
use switchboard_twilio::mulaw;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any single event before failing.
const WAIT: Duration = Duration::from_secs(10);

/// One server event: its type, the raw JSON and the typed form.
#[derive(Debug, Clone)]
pub struct Ev {
    pub ty: String,
    pub raw: Value,
    pub ev: ServerEvent,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Starts a simulator with `script` (TOML).
pub async fn sim(script: &str) -> SimServer {
    let script = Script::from_toml_str(script).expect("test script parses");
    SimServer::start("127.0.0.1:0", script)
        .await
        .expect("simulator starts")
}

impl Client {
    /// Connects like the call-worker does (`?model=gpt-realtime`, bearer key) and reads
    /// `session.created`.
    pub async fn connect(sim: &SimServer) -> (Client, Ev) {
        let mut client = Self::connect_with(sim, &[("Authorization", "Bearer sk-test")])
            .await
            .expect("connects");
        let created = client.next().await;
        assert_eq!(created.ty, "session.created", "{:?}", created.raw);
        (client, created)
    }

    /// Connects with extra headers; no event is read.
    pub async fn connect_with(
        sim: &SimServer,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("{}?model=gpt-realtime", sim.url())
            .into_client_request()
            .expect("valid url");
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, v.parse().expect("valid header value"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Client { ws })
    }

    pub async fn send(&mut self, ev: &ClientEvent) {
        self.send_text(&ev.to_json()).await;
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// The GA session.update the call-worker sends (transcription on when asked).
    pub async fn configure(&mut self, transcription: bool) -> Ev {
        let mut session = serde_json::json!({
            "type": "realtime",
            "instructions": "You are the front desk.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5,
                        "prefix_padding_ms": 300, "silence_duration_ms": 500}
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}
            }
        });
        if transcription {
            session["audio"]["input"]["transcription"] =
                serde_json::json!({"model": "gpt-4o-mini-transcribe"});
        }
        self.send_json(serde_json::json!({"type": "session.update", "session": session}))
            .await;
        let ev = self.next().await;
        assert_eq!(ev.ty, "session.updated", "{:?}", ev.raw);
        ev
    }

    /// Appends mu-law audio in 20 ms frames, as the call-worker forwards Twilio media.
    pub async fn append(&mut self, audio: &[u8]) {
        for frame in audio.chunks(160) {
            self.send(&ClientEvent::append(B64.encode(frame))).await;
        }
    }

    /// The next server event (fails the test after 10 s or if the socket ends).
    pub async fn next(&mut self) -> Ev {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a server event within 10 s")
                .expect("the socket is open")
                .expect("a readable frame");
            match msg {
                Message::Text(text) => {
                    let raw: Value = serde_json::from_str(text.as_str()).expect("JSON event");
                    let ev = ServerEvent::parse(text.as_str()).expect("a server event");
                    let ty = raw["type"].as_str().unwrap_or_default().to_string();
                    conforms(&raw);
                    assert!(
                        raw["event_id"]
                            .as_str()
                            .is_some_and(|e| e.starts_with("event_")),
                        "every event has an event_id: {raw}"
                    );
                    return Ev { ty, raw, ev };
                }
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Events up to and including the first of type `ty`.
    pub async fn until(&mut self, ty: &str) -> Vec<Ev> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next().await;
            let done = ev.ty == ty;
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }

    /// Reads until the server closes; returns the close frame and the events before it.
    pub async fn closed(&mut self) -> (Option<CloseFrame>, Vec<Ev>) {
        let mut seen = Vec::new();
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server closes within 10 s");
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    // Keep reading so the close reply goes out and the handshake completes.
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return (frame, seen);
                }
                Some(Ok(Message::Text(text))) => {
                    let raw: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    conforms(&raw);
                    let ev = ServerEvent::parse(text.as_str()).expect("a server event");
                    let ty = raw["type"].as_str().unwrap_or_default().to_string();
                    seen.push(Ev { ty, raw, ev });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => return (None, seen),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Every event a test reads is checked field by field against the openai-python SDK's GA type
/// of its `type`: required fields present, types and enum values right, no field the type does
/// not declare, and the type itself a member of the GA union.
pub fn conforms(raw: &Value) {
    let errors = switchboard_realtime::sdk_schema::check_server(raw);
    assert!(
        errors.is_empty(),
        "not the SDK's shape ({}): {errors:?}\n{raw}",
        switchboard_realtime::sdk_schema::generator()
    );
}

/// The types of `events`, in order.
pub fn types(events: &[Ev]) -> Vec<&str> {
    events.iter().map(|e| e.ty.as_str()).collect()
}

/// The error body of an `error` event.
pub fn error_of(ev: &Ev) -> &Value {
    assert_eq!(ev.ty, "error", "expected an error, got {}", ev.raw);
    &ev.raw["error"]
}

/// `ms` of a caller's voice: a tone at RMS about 0.3.
pub fn speech(ms: usize) -> Vec<u8> {
    let amplitude = 0.3 * std::f32::consts::SQRT_2 * 32767.0;
    (0..ms * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            mulaw::encode((amplitude * (std::f32::consts::TAU * 300.0 * t).sin()) as i16)
        })
        .collect()
}

/// `ms` of silence.
pub fn silence(ms: usize) -> Vec<u8> {
    vec![mulaw::SILENCE; ms * 8]
}

/// The decoded audio of an `response.output_audio.delta`.
pub fn delta_audio(ev: &Ev) -> Vec<u8> {
    let ServerEvent::OutputAudioDelta { delta, .. } = &ev.ev else {
        panic!("not an audio delta: {}", ev.raw);
    };
    B64.decode(delta).expect("base64 audio")
}
