//! A persister running in-process against a real nats-server and Postgres, plus event builders.
#![allow(dead_code)]

use std::time::Duration;
use switchboard_testkit::in_process::InProcess;

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::Value;
use sqlx::PgPool;
use switchboard_proto::call_event::Body;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEnded, CallEvent, CallOutcome, CallStarted, Direction, Message as _, Role, ToolFailure,
    ToolInvocation, TranscriptEntry, TurnLatency, Usage, tool_invocation,
};
use switchboard_service::NatsArgs;
use switchboard_service::redact::Secret;
use switchboard_testkit::browser::Cdp;
use switchboard_testkit::{NatsServer, Postgres, eventually, free_port};

pub const TOKEN: &str = "test-admin-token";

pub struct Fixture {
    pub nats: NatsServer,
    pub pg: Postgres,
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub http: reqwest::Client,
    pub base: String,
    /// The persister's configuration, for starting replicas next to it.
    pub config: persister::Config,
    /// The recording store's directory (`RECORDINGS_URL`).
    pub recordings: tempfile::TempDir,
    service: InProcess<persister::RunError>,
}

/// Another persister replica on the fixture's database and NATS.
pub struct Replica {
    pub base: String,
    service: InProcess<persister::RunError>,
}

impl Replica {
    /// Stops the replica and checks it exited cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service
            .stop(Duration::from_secs(15))
            .await
            .context("the replica")
    }
}

/// Starts a second persister with the fixture's configuration on another port; waits until ready.
pub async fn persister_on(fx: &Fixture) -> anyhow::Result<Replica> {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut config = fx.config.clone();
    config.listen = listen.parse()?;
    let service = InProcess::start(|shutdown| persister::run(config, shutdown));
    let base = format!("http://{listen}");
    let url = format!("{base}/readyz");
    eventually(Duration::from_secs(30), "replica ready", || {
        let req = fx.http.get(&url);
        async move { (req.send().await.ok()?.status() == 200).then_some(()) }
    })
    .await?;
    Ok(Replica { base, service })
}

impl Fixture {
    /// Starts NATS, Postgres (database `switchboard`) and the persister; waits until ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_live_buffer(persister::live::DEFAULT_CLIENT_BUFFER).await
    }

    /// [`Fixture::start`] with `live_client_buffer` events of room per live client.
    pub async fn start_with_live_buffer(live_client_buffer: usize) -> anyhow::Result<Self> {
        Self::start_with(|config| config.live_client_buffer = live_client_buffer).await
    }

    /// [`Fixture::start`] with the configuration changed by `configure`.
    pub async fn start_with(
        configure: impl FnOnce(&mut persister::Config),
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let db = pg.create_database("switchboard").await?;
        let listen = format!("127.0.0.1:{}", free_port());
        let recordings = tempfile::tempdir()?;
        let mut config = persister::Config {
            listen: listen.parse()?,
            database_url: Secret::new(db.clone()),
            admin_token: Some(Secret::new(TOKEN)),
            public_url: None,
            session_ttl_seconds: persister::console_sessions::DEFAULT_TTL.as_secs(),
            prices: Default::default(),
            live_client_buffer: persister::live::DEFAULT_CLIENT_BUFFER,
            drain_seconds: 10,
            web_call: Default::default(),
            webhook_log: Default::default(),
            dialer: Default::default(),
            recordings: switchboard_service::recordings::RecordingsArgs {
                recordings_url: recordings.path().display().to_string(),
            },
            recordings_retention_days: 90,
            nats: NatsArgs::for_url(nats.url()),
        };
        configure(&mut config);
        let service = InProcess::start(|shutdown| persister::run(config.clone(), shutdown));
        let client = async_nats::connect(nats.url()).await?;
        let js = jetstream::new(client);
        let http = reqwest::Client::new();
        let base = format!("http://{listen}");
        let fixture = Self {
            nats,
            pg,
            pool: PgPool::connect(&db).await?,
            js,
            http,
            base,
            config,
            recordings,
            service,
        };
        fixture.wait_ready(true).await?;
        Ok(fixture)
    }

    /// Waits until `/readyz` says `ready`.
    pub async fn wait_ready(&self, ready: bool) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.base);
        let want = if ready { 200 } else { 503 };
        eventually(Duration::from_secs(30), &format!("/readyz {want}"), || {
            let req = self.http.get(&url);
            async move { (req.send().await.ok()?.status().as_u16() == want).then_some(()) }
        })
        .await
    }

    /// Publishes with `Nats-Msg-Id: <call_sid>:<seq>`, as producers do.
    pub async fn publish(&self, event: &CallEvent) -> anyhow::Result<()> {
        self.publish_with_id(event, &event.msg_id()).await
    }

    /// Publishes with any message id (a producer retrying under a new id).
    pub async fn publish_with_id(&self, event: &CallEvent, id: &str) -> anyhow::Result<()> {
        let subject = Subjects::default().event(&event.call_sid, event.kind());
        let msg = PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .message_id(id);
        self.js.send_publish(subject, msg).await?.await?;
        Ok(())
    }

    /// Publishes raw bytes to an event subject.
    pub async fn publish_raw(&self, subject: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.js
            .publish(subject.to_owned(), payload.into())
            .await?
            .await?;
        Ok(())
    }

    /// An authenticated GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await?)
    }

    /// `GET /api/sessions/{sid}` as JSON (must be 200).
    pub async fn session(&self, sid: &str) -> anyhow::Result<Value> {
        let resp = self.get(&format!("/api/sessions/{sid}")).await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        Ok(resp.json().await?)
    }

    /// Waits until `n` events of `sid` are in the ledger.
    pub async fn wait_events(&self, sid: &str, n: i64) -> anyhow::Result<()> {
        eventually(
            Duration::from_secs(30),
            &format!("{n} events of {sid}"),
            || async move {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM call_events WHERE call_sid = $1")
                        .bind(sid)
                        .fetch_one(&self.pool)
                        .await
                        .ok()?;
                (count == n).then_some(())
            },
        )
        .await
    }

    /// Row counts of every table, in a fixed order.
    pub async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for table in [
            "calls",
            "call_events",
            "transcript_entries",
            "tool_invocations",
            "turns",
        ] {
            let sql = format!("SELECT count(*) FROM {table}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            out.push((table.to_owned(), n));
        }
        Ok(out)
    }

    /// Stops the persister and checks it exited cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service
            .stop(Duration::from_secs(15))
            .await
            .context("the persister")
    }
}

pub fn event(sid: &str, seq: u64, at_ms: i64, body: Body) -> CallEvent {
    CallEvent {
        call_sid: sid.to_owned(),
        seq,
        at_ms,
        body: Some(body),
    }
}

pub fn started(agent: &str, from: &str) -> Body {
    Body::Started(CallStarted {
        agent_id: agent.into(),
        from: from.into(),
        to: "+15550001111".into(),
        direction: Direction::Inbound as i32,
        worker_id: "worker-1".into(),
        model: "gpt-realtime".into(),
        vars: Default::default(),
    })
}

pub fn said(role: Role, text: &str, item: &str, offset_ms: u32) -> TranscriptEntry {
    TranscriptEntry {
        redacted: Vec::new(),
        audio_end_ms: 0,
        role: role as i32,
        text: text.into(),
        item_id: item.into(),
        interrupted: false,
        heard_ms: 0,
        offset_ms,
    }
}

pub fn outcome(outcome: &str, detail: &str) -> Body {
    Body::Outcome(CallOutcome {
        redacted: Vec::new(),
        outcome: outcome.into(),
        detail: detail.into(),
    })
}

pub fn ended(reason: &str, duration_ms: u64) -> Body {
    Body::Ended(CallEnded {
        reason: reason.into(),
        duration_ms,
        usage: Some(Box::new(Usage {
            input_tokens: 1200,
            output_tokens: 800,
            input_audio_tokens: 1000,
            output_audio_tokens: 700,
            input_text_tokens: 200,
            output_text_tokens: 100,
            cached_tokens: 64,
            ..Default::default()
        })),
        recording: None,
    })
}

/// A whole call as a worker publishes it. The user's "never mind" (seq 8) is published before
/// the assistant answer it interrupted (seq 9), which began earlier (offset 7100 < 9000).
pub fn realistic_call(sid: &str, t0: i64) -> Vec<CallEvent> {
    let mut interrupted = said(
        Role::Assistant,
        "I found your account, Maria Garcia. You are a gold member and",
        "item_a2",
        7100,
    );
    interrupted.interrupted = true;
    interrupted.heard_ms = 1200;
    vec![
        event(sid, 1, t0, started("front-desk", "+15550001234")),
        event(
            sid,
            2,
            t0 + 900,
            Body::Turn(TurnLatency {
                kind: "greeting".into(),
                latency_ms: 850,
                response_id: "resp_1".into(),
            }),
        ),
        event(
            sid,
            3,
            t0 + 3000,
            Body::Transcript(said(
                Role::Assistant,
                "Thanks for calling Acme Dental, how can I help?",
                "item_a1",
                900,
            )),
        ),
        event(
            sid,
            4,
            t0 + 6200,
            Body::Transcript(said(
                Role::User,
                "Hi, this is Maria. Can you look up my account?",
                "item_u1",
                3500,
            )),
        ),
        event(
            sid,
            5,
            t0 + 6400,
            Body::Tool(ToolInvocation {
                redacted: Vec::new(),
                call_id: "call_1".into(),
                name: "lookup_customer".into(),
                arguments: r#"{"phone":"+15550001234"}"#.into(),
                result: Some(tool_invocation::Result::Output(
                    r#"{"found":true,"name":"Maria Garcia","tier":"gold"}"#.into(),
                )),
                latency_ms: 42,
            }),
        ),
        event(
            sid,
            6,
            t0 + 6500,
            Body::Tool(ToolInvocation {
                redacted: Vec::new(),
                call_id: "call_2".into(),
                name: "book_appointment".into(),
                arguments: "tomorrow at 9".into(),
                result: Some(tool_invocation::Result::Error(ToolFailure {
                    code: "invalid_arguments".into(),
                    message: "the arguments are not valid JSON".into(),
                })),
                latency_ms: 3,
            }),
        ),
        event(
            sid,
            7,
            t0 + 7100,
            Body::Turn(TurnLatency {
                kind: "response".into(),
                latency_ms: 640,
                response_id: "resp_2".into(),
            }),
        ),
        event(
            sid,
            8,
            t0 + 10_500,
            Body::Transcript(said(Role::User, "Actually, never mind.", "item_u2", 9000)),
        ),
        event(sid, 9, t0 + 10_600, Body::Transcript(interrupted)),
        event(
            sid,
            10,
            t0 + 12_000,
            outcome("resolved", "account looked up"),
        ),
        event(sid, 11, t0 + 14_000, ended("caller_hung_up", 14_000)),
    ]
}

/// Makes every document the page opens record the Content-Security-Policy violations it sees
/// (in `window.__csp`), for [`no_violations`].
pub async fn record_csp_violations(cdp: &mut Cdp) -> anyhow::Result<()> {
    cdp.record_csp_violations().await
}

/// Fails if the current page saw any Content-Security-Policy violation.
pub async fn no_violations(cdp: &mut Cdp, page: &str) -> anyhow::Result<()> {
    let seen = cdp.eval("window.__csp").await?;
    anyhow::ensure!(
        seen == serde_json::json!([]),
        "{page} violated the Content-Security-Policy: {seen}"
    );
    Ok(())
}

/// Signs in on the sign-in form the page shows, with the admin token.
pub async fn submit_token(cdp: &mut Cdp) -> anyhow::Result<()> {
    cdp.eval(&format!(
        "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
        serde_json::json!(TOKEN)
    ))
    .await?;
    Ok(())
}
