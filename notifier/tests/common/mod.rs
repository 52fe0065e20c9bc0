//! What the notifier's tests share: the notifier in-process against a real nats-server and
//! Postgres, receivers on 127.0.0.1 that record every request and answer as scripted, and the
//! events of a short call.
#![allow(dead_code)]

pub use std::collections::HashMap;

pub use std::sync::Arc;
pub use std::time::Duration;
pub use switchboard_testkit::in_process::InProcess;

pub use anyhow::Context as _;
pub use async_nats::jetstream::{self, message::PublishMessage};
pub use axum::extract::{Path, State};
pub use axum::http::{HeaderMap, StatusCode};
pub use axum::response::{IntoResponse, Response};
pub use base64::Engine as _;
pub use base64::engine::general_purpose::STANDARD as BASE64;
pub use hmac::{Hmac, KeyInit as _, Mac as _};
pub use serde_json::Value;
pub use sha2::Sha256;
pub use switchboard_proto::call_event::Body;
pub use switchboard_proto::subject::Subjects;
pub use switchboard_proto::{
    CallEnded, CallEvent, CallOutcome, CallStarted, Direction, Message as _, Role, TranscriptEntry,
    Usage,
};
pub use switchboard_service::NatsArgs;
pub use switchboard_service::redact::Secret;
pub use switchboard_testkit::{NatsServer, Postgres, eventually, free_port};
pub use tokio::sync::{Mutex, Notify};
pub use tokio::time::Instant;

pub const TOKEN: &str = "test-admin-token";
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What a receiver answers next on a path.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    /// Never answers (until the receiver is dropped).
    Hang,
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<HashMap<String, Vec<Reply>>>>,
    pub hang: Arc<Notify>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<(Self, String)> {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, base))
    }

    /// The next replies on `path`, in order; then 200.
    pub async fn script(&self, path: &str, replies: Vec<Reply>) {
        self.script.lock().await.insert(path.to_owned(), replies);
    }

    pub async fn on(&self, path: &str) -> Vec<Received> {
        let received = self.received.lock().await;
        received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub async fn wait_for(
        &self,
        path: &str,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        eventually(within, &format!("{n} requests on /{path}"), || async move {
            let got = self.on(path).await;
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.received.lock().await.push(Received {
        path: path.clone(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signature: header("webhook-signature"),
        body,
        at: Instant::now(),
    });
    let reply = {
        let mut script = receiver.script.lock().await;
        script
            .get_mut(&path)
            .and_then(|replies| (!replies.is_empty()).then(|| replies.remove(0)))
    };
    match reply {
        None => StatusCode::OK.into_response(),
        Some(Reply::Status(s)) => StatusCode::from_u16(s).unwrap().into_response(),
        Some(Reply::RetryAfter(s, after)) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", after.to_string())],
        )
            .into_response(),
        Some(Reply::Hang) => {
            receiver.hang.notified().await;
            StatusCode::OK.into_response()
        }
    }
}

/// Verifies a delivery as the specification says a receiver must: the HMAC-SHA256 of
/// `id.timestamp.body` under the base64-decoded secret, compared with each `v1,` signature.
pub fn verify(secret: &str, r: &Received) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = BASE64.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

pub struct Notifier {
    pub base: String,
    service: InProcess<notifier::RunError>,
}

impl Notifier {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service
            .stop(Duration::from_secs(20))
            .await
            .context("the notifier")
    }
}

pub struct Fixture {
    pub nats: NatsServer,
    pub pg: Postgres,
    pub pool: sqlx::PgPool,
    pub js: jetstream::Context,
    pub http: reqwest::Client,
    pub config: notifier::Config,
    pub _file: tempfile::NamedTempFile,
}

impl Fixture {
    /// NATS, Postgres and a config for `webhooks` (the `WEBHOOKS_FILE` text).
    pub async fn new(
        webhooks: &str,
        configure: impl FnOnce(&mut notifier::Config),
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let db = pg.create_database("notifier").await?;
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), webhooks)?;
        let mut config = notifier::Config {
            listen: format!("127.0.0.1:{}", free_port()).parse()?,
            database_url: Secret::new(db.clone()),
            admin_token: Some(Secret::new(TOKEN)),
            webhooks_file: file.path().to_owned(),
            webhook_timeout_seconds: 15,
            webhook_max_attempts: 20,
            webhook_first_retry_ms: 200,
            webhook_max_retry_seconds: 36_000,
            webhook_max_payload_bytes: 20_000,
            public_url: Some("https://console.example.com".into()),
            prices: Default::default(),
            drain_seconds: 2,
            nats: NatsArgs::for_url(nats.url()),
        };
        configure(&mut config);
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        Ok(Self {
            nats,
            pg,
            pool: sqlx::PgPool::connect(&db).await?,
            js,
            http: reqwest::Client::new(),
            config,
            _file: file,
        })
    }

    pub async fn start(&self) -> anyhow::Result<Notifier> {
        let service = InProcess::start(|shutdown| notifier::run(self.config.clone(), shutdown));
        let base = format!("http://{}", self.config.listen);
        let url = format!("{base}/readyz");
        eventually(Duration::from_secs(30), "notifier ready", || {
            let req = self.http.get(&url);
            async move { (req.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await?;
        Ok(Notifier { base, service })
    }

    pub async fn publish(&self, event: &CallEvent) -> anyhow::Result<()> {
        let subject = Subjects::default().event(&event.call_sid, event.kind());
        let msg = PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .message_id(event.msg_id());
        self.js.send_publish(subject, msg).await?.await?;
        Ok(())
    }

    pub async fn log(&self, n: &Notifier, query: &str) -> anyhow::Result<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}/api/webhooks/deliveries{query}", n.base))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        let body: Value = resp.json().await?;
        Ok(body["deliveries"].as_array().cloned().unwrap_or_default())
    }
}

pub fn endpoint(url: &str, events: &[&str], private: bool) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[[endpoint]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [{}]\nallow_private_network = {private}\n\n",
        events.join(", ")
    )
}

pub fn event(sid: &str, seq: u64, body: Body) -> CallEvent {
    CallEvent {
        call_sid: sid.into(),
        seq,
        at_ms: 1_765_000_000_000 + seq as i64 * 1000,
        body: Some(body),
    }
}

pub fn said(role: Role, text: &str) -> Body {
    Body::Transcript(TranscriptEntry {
        role: role as i32,
        text: text.into(),
        item_id: format!("item-{text}"),
        ..Default::default()
    })
}

/// A short call: started, two transcript entries, an outcome, ended.
pub fn call(sid: &str) -> Vec<CallEvent> {
    vec![
        event(
            sid,
            1,
            Body::Started(CallStarted {
                agent_id: "support".into(),
                from: "+15550002222".into(),
                to: "+15550001111".into(),
                direction: Direction::Inbound as i32,
                worker_id: "worker-1".into(),
                model: "gpt-realtime".into(),
                vars: Default::default(),
            }),
        ),
        event(sid, 2, said(Role::Assistant, "Hello, how can I help?")),
        event(sid, 3, said(Role::User, "Where is my order?")),
        event(
            sid,
            4,
            Body::Outcome(CallOutcome {
                redacted: Vec::new(),
                outcome: "resolved".into(),
                detail: String::new(),
            }),
        ),
        event(
            sid,
            5,
            Body::Ended(CallEnded {
                reason: "caller_hung_up".into(),
                duration_ms: 4000,
                usage: Some(Box::new(Usage {
                    input_tokens: 100,
                    output_tokens: 50,
                    model: "gpt-realtime".into(),
                    ..Default::default()
                })),
                recording: None,
            }),
        ),
    ]
}
