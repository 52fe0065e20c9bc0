//! A gateway served in-process against a real nats-server, plus a fake worker and a Twilio-like
//! WebSocket client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use gateway::{Config, Gateway};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{InboundFrame, Message as _, OfferReply, OutboundFrame};
use switchboard_testkit::NatsServer;
use switchboard_twilio::media::TwilioMessage;
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml::{Instructions, Verb};
use switchboard_twilio::webhook::CallForm;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PUBLIC_URL: &str = "https://gw.example.com";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// The agents file every test gateway reads (`AGENTS_FILE`), as in production: the front desk
/// answers the test calls' number and may transfer to its own number, or (through a handoff to
/// billing) to billing's; sales (named by outbound calls) has its own.
pub const AGENTS: &str = r#"
[[agent]]
id = "front-desk"
numbers = ["+15550001111", "*"]
instructions = "x"
tools = ["transfer_call", "handoff"]
handoff_to = ["billing"]
transfer_to = "+15550002222"

[[agent]]
id = "billing"
numbers = ["+15550005555"]
instructions = "x"
transfer_to = "+15550003333"

[[agent]]
id = "sales"
instructions = "x"
transfer_to = "+15550009999"
"#;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A gateway on 127.0.0.1:<random> with its own nats-server.
pub struct TestGateway {
    /// The nats-server this gateway started (None: it shares another gateway's).
    nats_server: Option<NatsServer>,
    /// Its URL.
    pub nats_url: String,
    pub nats: async_nats::Client,
    pub addr: SocketAddr,
    pub subjects: Subjects,
    pub validator: Validator,
    pub http: reqwest::Client,
    /// Holds the agents file.
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), gateway::Error>>>,
}

impl TestGateway {
    /// Starts a gateway with the test defaults plus `extra` flags, and waits until it is ready.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_metrics(extra, None).await
    }

    /// Starts a gateway without an agents file.
    pub async fn start_without_agents(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_full(extra, None, false).await
    }

    /// Starts another replica on the nats-server of `first`.
    pub async fn start_on(first: &TestGateway, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(None, first.nats_url.clone(), extra, None, true).await
    }

    pub async fn start_with_metrics(
        extra: &[&str],
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        Self::start_full(extra, metrics, true).await
    }

    async fn start_full(
        extra: &[&str],
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        with_agents: bool,
    ) -> anyhow::Result<Self> {
        let nats_server = NatsServer::start().await?;
        let url = nats_server.url().to_owned();
        Self::start_inner(Some(nats_server), url, extra, metrics, with_agents).await
    }

    async fn start_inner(
        nats_server: Option<NatsServer>,
        nats_url: String,
        extra: &[&str],
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        with_agents: bool,
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let agents_file = dir.path().join("agents.toml");
        std::fs::write(&agents_file, AGENTS)?;
        let agents_file = agents_file.display().to_string();
        let recordings = dir.path().join("recordings").display().to_string();
        let mut args = vec![
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            PUBLIC_URL,
            "--twilio-account-sid",
            ACCOUNT_SID,
            "--twilio-auth-token",
            AUTH_TOKEN,
            "--gateway-id",
            "gw-test",
            "--nats-url",
            &nats_url,
            "--nats-subject-prefix",
            "voice",
        ];
        if !extra.contains(&"--worker-silence-ms") {
            // Test workers only send heartbeats where that is what the test is about.
            args.extend_from_slice(&["--worker-silence-ms", "60000"]);
        }
        if with_agents {
            args.extend_from_slice(&["--agents-file", &agents_file]);
        }
        if !extra.contains(&"--recordings-url") {
            args.extend_from_slice(&["--recordings-url", &recordings]);
        }
        args.extend_from_slice(extra);
        let config = <Config as clap::Parser>::try_parse_from(args)?;
        let gateway = Gateway::connect(config, metrics).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(listener, async move {
            let _ = rx.await;
        }));
        let nats = async_nats::connect(&nats_url).await?;
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        let gw = Self {
            nats_server,
            nats_url,
            nats,
            addr,
            subjects: Subjects::default(),
            validator: Validator::new(AUTH_TOKEN, PUBLIC_URL),
            http,
            _dir: dir,
            shutdown: Some(tx),
            served: Some(served),
        };
        let url = gw.url("/readyz");
        let http = gw.http.clone();
        switchboard_testkit::eventually(PATIENCE, "gateway ready", || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let r = http.get(url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await?;
        Ok(gw)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends the stop signal.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return.
    pub async fn served(&mut self, within: Duration) -> anyhow::Result<()> {
        let handle = self.served.take().context("already awaited")?;
        tokio::time::timeout(within, handle)
            .await
            .context("serve did not return in time")???;
        Ok(())
    }

    /// POSTs a signed (when `signature` is None: correctly signed) form to `path`.
    pub async fn post_form(
        &self,
        path: &str,
        pairs: &[(String, String)],
        signature: Option<Option<String>>,
    ) -> anyhow::Result<reqwest::Response> {
        let signature = match signature {
            None => Some(self.validator.sign(path, pairs)),
            Some(explicit) => explicit,
        };
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs)?);
        if let Some(sig) = signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        Ok(req.send().await?)
    }

    /// The voice webhook for `call_sid`, correctly signed; returns the parsed TwiML.
    pub async fn voice_webhook(&self, call_sid: &str) -> anyhow::Result<Instructions> {
        let resp = self
            .post_form("/twilio-voice", &voice_form(call_sid), None)
            .await?;
        if !resp.status().is_success() {
            bail!("webhook answered {}", resp.status());
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !content_type.starts_with("text/xml") {
            bail!("webhook answered content-type {content_type}");
        }
        Ok(Instructions::parse(&resp.text().await?)?)
    }

    /// The stream token a webhook hands out for `call_sid` (a worker must be accepting).
    pub async fn token_for(&self, call_sid: &str) -> anyhow::Result<String> {
        let Instructions(verbs) = self.voice_webhook(call_sid).await?;
        match verbs.as_slice() {
            [Verb::ConnectStream { parameters, .. }] => parameters
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
                .context("no token parameter"),
            other => bail!("unexpected TwiML {other:?}"),
        }
    }

    /// Opens `/media` with the given signature header (None: none at all).
    pub async fn connect_media_with(
        &self,
        signature: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/media", self.addr).into_client_request()?;
        if let Some(sig) = signature {
            req.headers_mut()
                .insert("X-Twilio-Signature", sig.parse().expect("header value"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(ws)
    }

    /// Opens `/media` correctly signed.
    pub async fn connect_media(&self) -> anyhow::Result<Ws> {
        Ok(self
            .connect_media_with(Some(&self.validator.sign_ws("/media")))
            .await?)
    }

    /// Opens a started stream for `call_sid` (token from a real webhook) and returns the socket
    /// with the `.in` subscription (its `start` frame already read).
    pub async fn started_stream(
        &self,
        call_sid: &str,
        stream_sid: &str,
    ) -> anyhow::Result<(Ws, async_nats::Subscriber, InboundFrame)> {
        let token = self.token_for(call_sid).await?;
        let mut inbound = self.nats.subscribe(self.subjects.call_in(call_sid)).await?;
        barrier(&self.nats).await?;
        let mut ws = self.connect_media().await?;
        send_json(&mut ws, &TwilioMessage::connected()).await?;
        send_json(
            &mut ws,
            &start_message(call_sid, stream_sid, &[("token", &token)]),
        )
        .await?;
        let start = next_inbound(&mut inbound).await?;
        Ok((ws, inbound, start))
    }

    /// Publishes an outbound frame for `call_sid` as a worker would.
    pub async fn send_out(&self, call_sid: &str, frame: OutboundFrame) -> anyhow::Result<()> {
        self.nats
            .publish(
                self.subjects.call_out(call_sid),
                frame.encode_to_vec().into(),
            )
            .await?;
        self.nats.flush().await?;
        Ok(())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(h) = self.served.take() {
            h.abort();
        }
    }
}

/// Waits until the server has processed every command `client` sent before (its subscriptions
/// are live): a message to ourselves is delivered only after them. (`flush` only writes the
/// socket; it does not wait for the server.)
pub async fn barrier(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, "barrier".into()).await?;
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .context("barrier timed out")?
        .context("barrier subscription ended")?;
    Ok(())
}

/// The form Twilio posts for a new inbound call.
pub fn voice_form(call_sid: &str) -> Vec<(String, String)> {
    let mut pairs = CallForm {
        call_sid: call_sid.to_owned(),
        account_sid: ACCOUNT_SID.to_owned(),
        from: "+15550001234".to_owned(),
        to: "+15550001111".to_owned(),
        call_status: "ringing".to_owned(),
        direction: "inbound".to_owned(),
        ..Default::default()
    }
    .to_pairs();
    // Twilio adds fields we do not use; they are signed all the same.
    pairs.push(("FromCity".to_owned(), "SPRINGFIELD".to_owned()));
    pairs
}

/// What a fake worker saw and how it answers.
pub struct FakeWorker {
    pub offers: tokio::sync::mpsc::UnboundedReceiver<switchboard_proto::CallOffer>,
    task: JoinHandle<()>,
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A call-worker stand-in in the `call-workers` queue group, answering every offer with `reply`.
pub async fn fake_worker(
    nats: &async_nats::Client,
    reply: OfferReply,
) -> anyhow::Result<FakeWorker> {
    fake_worker_replying(nats, vec![reply]).await
}

/// A call-worker stand-in answering the n-th offer with `replies[n]` (the last one once they
/// run out).
pub async fn fake_worker_replying(
    nats: &async_nats::Client,
    replies: Vec<OfferReply>,
) -> anyhow::Result<FakeWorker> {
    let subjects = Subjects::default();
    let mut sub = nats
        .queue_subscribe(
            subjects.offer(),
            switchboard_proto::WORKERS_QUEUE_GROUP.to_owned(),
        )
        .await?;
    barrier(nats).await?;
    let (tx, offers) = tokio::sync::mpsc::unbounded_channel();
    let client = nats.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        while let Some(msg) = sub.next().await {
            if let Ok(offer) = switchboard_proto::CallOffer::decode(msg.payload.clone()) {
                let _ = tx.send(offer);
            }
            let reply = replies
                .get(n)
                .or(replies.last())
                .cloned()
                .unwrap_or_default();
            n += 1;
            if let Some(reply_to) = msg.reply {
                let _ = client.publish(reply_to, reply.encode_to_vec().into()).await;
            }
        }
    });
    Ok(FakeWorker { offers, task })
}

/// An accepting worker.
pub async fn accepting_worker(nats: &async_nats::Client) -> anyhow::Result<FakeWorker> {
    fake_worker(
        nats,
        OfferReply {
            accepted: true,
            worker_id: "worker-1".into(),
            agent_id: "front-desk".into(),
            reason: String::new(),
            epoch: 0,
        },
    )
    .await
}

/// Twilio's `start` frame.
pub fn start_message(call_sid: &str, stream_sid: &str, params: &[(&str, &str)]) -> TwilioMessage {
    TwilioMessage::Start {
        sequence_number: "1".into(),
        stream_sid: stream_sid.to_owned(),
        start: switchboard_twilio::media::Start {
            stream_sid: stream_sid.to_owned(),
            account_sid: ACCOUNT_SID.to_owned(),
            call_sid: call_sid.to_owned(),
            tracks: vec!["inbound".into()],
            custom_parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            media_format: Default::default(),
        },
    }
}

pub async fn send_json(ws: &mut Ws, msg: &TwilioMessage) -> anyhow::Result<()> {
    ws.send(WsMessage::Text(msg.to_json().into())).await?;
    Ok(())
}

pub async fn send_text(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    ws.send(WsMessage::Text(text.to_owned().into())).await?;
    Ok(())
}

/// The next inbound frame on `.in`.
pub async fn next_inbound(sub: &mut async_nats::Subscriber) -> anyhow::Result<InboundFrame> {
    let msg = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .context("no inbound frame in time")?
        .context("subscription ended")?;
    Ok(InboundFrame::decode(msg.payload)?)
}

/// The next non-control message from the gateway (text, binary or close).
pub async fn next_ws(ws: &mut Ws) -> anyhow::Result<WsMessage> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .context("nothing from the gateway in time")?
            .context("socket ended without a close frame")??;
        match msg {
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
            other => return Ok(other),
        }
    }
}

/// Reads until the close frame and returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> anyhow::Result<(u16, String)> {
    loop {
        match next_ws(ws).await? {
            WsMessage::Close(Some(frame)) => {
                // Keep reading so the library answers the close, as Twilio does.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, ws.next()).await {}
                return Ok((u16::from(frame.code), frame.reason.to_string()));
            }
            WsMessage::Close(None) => bail!("close frame without a code"),
            WsMessage::Text(_) => continue,
            other => bail!("unexpected message {other:?}"),
        }
    }
}

/// The next Twilio message the gateway wrote.
pub async fn next_server_message(
    ws: &mut Ws,
) -> anyhow::Result<switchboard_twilio::media::ServerMessage> {
    match next_ws(ws).await? {
        WsMessage::Text(text) => Ok(switchboard_twilio::media::ServerMessage::parse(&text)?),
        other => bail!("expected a text frame, got {other:?}"),
    }
}

/// Sends a raw HTTP/1.1 request head plus `body` over a fresh connection to `addr` and returns
/// the status code of the answer, without ever finishing the body when `finish` is false (the
/// connection then stays open, as a slow or endless upload would). Also returns how long the
/// answer took from the first byte written.
pub async fn raw_request(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    finish: bool,
) -> anyhow::Result<(u16, Duration)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(addr).await?;
    let started = tokio::time::Instant::now();
    tcp.write_all(head.as_bytes()).await?;
    // The server may answer (and stop reading) before all of the body is written.
    let write = async {
        let _ = tcp.write_all(body).await;
        if finish {
            let _ = tcp.flush().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
    let mut buf = vec![0u8; 1024];
    let mut read = 0;
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf[read..]))
            .await
            .context("no answer in time")??;
        if n == 0 {
            bail!("connection closed without an answer");
        }
        read += n;
        let text = String::from_utf8_lossy(&buf[..read]);
        if let Some(line) = text.lines().next().filter(|_| text.contains("\r\n")) {
            let status = line
                .split(' ')
                .nth(1)
                .context("no status")?
                .parse()
                .context("bad status")?;
            return Ok((status, started.elapsed()));
        }
        if read == buf.len() {
            bail!("no status line in {text}");
        }
    }
}
