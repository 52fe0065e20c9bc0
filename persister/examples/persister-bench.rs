//! Throughput of the persister: how many call events per second go from JetStream into Postgres.
//!
//! Method: start the real persister once (so the schema exists and the durable consumer is
//! created), stop it, publish a backlog of N synthetic events of many calls to `VOICE_EVENTS`,
//! start the persister again and time until every event is in the `call_events` ledger. The
//! figure is end-to-end: pull, decode, batched transaction, commit and ack.
//!
//! By default it starts its own nats-server and PostgreSQL (as the tests do); pass `--nats-url`
//! and `--database-url` to measure against existing ones (the database must be dedicated).
//!
//! `cargo build --release -p persister --example persister-bench`
//! `./target/release/examples/persister-bench --events 100000 --calls 1000`
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use switchboard_proto::call_event::Body;
use switchboard_proto::{
    CallEnded, CallEvent, CallStarted, Direction, Message as _, Role, ToolInvocation,
    TranscriptEntry, TurnLatency, Usage, tool_invocation,
};
use switchboard_service::NatsArgs;
use switchboard_testkit::{NatsServer, Postgres, free_port};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Measures persister throughput (events/s from JetStream into Postgres)")]
struct Args {
    /// Events to publish in total.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Calls the events belong to (events are spread evenly, each call started and ended).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Use this NATS server instead of starting one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Use this (dedicated) database instead of starting a PostgreSQL cluster.
    #[arg(long)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.calls > 0 && args.events >= 2 * args.calls,
        "need >= 2 events per call"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();

    let (_nats, nats_url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let n = NatsServer::start().await?;
            let url = n.url().to_owned();
            (Some(n), url)
        }
    };
    let (_pg, db_url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let pg = Postgres::start().await?;
            let url = pg.create_database("switchboard").await?;
            (Some(pg), url)
        }
    };

    // 1. Schema and durable consumer.
    let persister = start_persister(&nats_url, &db_url).await?;
    persister.stop().await?;
    let pool = sqlx::PgPool::connect(&db_url).await?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&pool)
        .await?;

    // 2. The backlog.
    let client = async_nats::connect(&nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let subjects = NatsArgs::for_url(&nats_url).subjects();
    switchboard_service::events::ensure_stream(&js, &subjects).await?;
    let run = switchboard_proto::now_ms() % 100_000_000;
    let per_call = args.events / args.calls;
    let total = per_call * args.calls;
    let publish_start = Instant::now();
    let mut acks = Vec::with_capacity(4096);
    for c in 0..args.calls {
        let sid = format!("CA{run:08}{c:024}");
        for seq in 1..=per_call as u64 {
            let ev = synthetic(&sid, seq, per_call as u64);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", ev.msg_id().as_str());
            acks.push(
                js.publish_with_headers(
                    subjects.event(&sid, ev.kind()),
                    headers,
                    ev.encode_to_vec().into(),
                )
                .await?,
            );
            if acks.len() >= 4096 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    println!(
        "published {total} events of {} calls in {:.2?}",
        args.calls,
        publish_start.elapsed()
    );

    // 3. Drain and time it.
    let target = before + i64::try_from(total)?;
    let started = Instant::now();
    let persister = start_persister(&nats_url, &db_url).await?;
    // Done = the durable consumer has nothing pending or unacknowledged (the persister acks only
    // after the commit), confirmed by counting the ledger once. Asking JetStream is cheap; a
    // `count(*)` of the growing ledger every 20 ms would take a good share of the CPU the
    // measured system needs.
    let stream = js.get_stream(switchboard_proto::EVENTS_STREAM).await?;
    loop {
        let info = stream
            .consumer_info(persister::consumer::DURABLE_NAME)
            .await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
                .fetch_one(&pool)
                .await?;
            if n >= target {
                break;
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not all of {total} events written after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    persister.stop().await?;
    println!(
        "persisted {total} events in {elapsed:.2?}: {:.0} events/s (including persister start-up)",
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// A call of `n` events: started, then transcript / turn / tool in turn, then ended.
fn synthetic(sid: &str, seq: u64, n: u64) -> CallEvent {
    let at_ms = 1_767_225_600_000 + i64::try_from(seq).unwrap_or(0) * 100;
    let body = if seq == 1 {
        Body::Started(CallStarted {
            agent_id: "bench".into(),
            from: "+15550001234".into(),
            to: "+15550001111".into(),
            direction: Direction::Inbound as i32,
            worker_id: "bench-worker".into(),
            model: "gpt-realtime".into(),
            vars: Default::default(),
        })
    } else if seq == n {
        Body::Ended(CallEnded {
            reason: "caller_hung_up".into(),
            duration_ms: n * 100,
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
    } else {
        match seq % 4 {
            0 => Body::Turn(TurnLatency {
                kind: "response".into(),
                latency_ms: 640,
                response_id: format!("resp_{seq}"),
            }),
            1 => Body::Tool(ToolInvocation {
                redacted: Vec::new(),
                call_id: format!("call_{seq}"),
                name: "lookup_customer".into(),
                arguments: r#"{"phone":"+15550001234"}"#.into(),
                result: Some(tool_invocation::Result::Output(
                    r#"{"found":true,"name":"Maria Garcia"}"#.into(),
                )),
                latency_ms: 42,
            }),
            r => Body::Transcript(TranscriptEntry {
                redacted: Vec::new(),
                audio_end_ms: 0,
                role: if r == 2 { Role::User } else { Role::Assistant } as i32,
                text: "I would like to book an appointment for tomorrow morning, please.".into(),
                item_id: format!("item_{seq}"),
                interrupted: false,
                heard_ms: 0,
                offset_ms: u32::try_from(seq * 100).unwrap_or(0),
            }),
        }
    };
    CallEvent {
        call_sid: sid.to_owned(),
        seq,
        at_ms,
        body: Some(body),
    }
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), persister::RunError>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?.context("persister failed")?;
        Ok(())
    }
}

/// The real persister, in-process, waited on until ready.
async fn start_persister(nats_url: &str, db_url: &str) -> anyhow::Result<Running> {
    let listen = format!("127.0.0.1:{}", free_port());
    let config = persister::Config {
        listen: listen.parse()?,
        database_url: switchboard_service::redact::Secret::new(db_url),
        admin_token: Some(switchboard_service::redact::Secret::new("bench")),
        public_url: None,
        session_ttl_seconds: persister::console_sessions::DEFAULT_TTL.as_secs(),
        prices: Default::default(),
        live_client_buffer: persister::live::DEFAULT_CLIENT_BUFFER,
        drain_seconds: 30,
        web_call: Default::default(),
        webhook_log: Default::default(),
        dialer: Default::default(),
        // No gateway records here: an empty store outside the source tree.
        recordings: switchboard_service::recordings::RecordingsArgs {
            recordings_url: std::env::temp_dir()
                .join("switchboard-test-recordings")
                .display()
                .to_string(),
        },
        recordings_retention_days: 0,
        nats: NatsArgs::for_url(nats_url),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(persister::run(config, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(Running { stop, task });
        }
        anyhow::ensure!(Instant::now() < deadline, "persister not ready after 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
