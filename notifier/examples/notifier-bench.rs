//! Webhook deliveries per second, and the delay from a call's `ended` event to its end-of-call
//! report at the receiver, with many calls in progress at once.
//!
//! Method: a real nats-server and PostgreSQL (started here, as the tests do), the notifier
//! in-process with its production settings (the receivers are allowed the private network),
//! and four receivers on 127.0.0.1 that answer 200 at once:
//! - `reports`: `call.ended` (the end-of-call report);
//! - `crm`: `call.started`, `call.outcome`, `call.ended`;
//! - `analytics`: `call.transcript`, `call.tool`, `call.outcome`, `call.usage`;
//! - `live`: every type.
//!
//! `--calls` calls run at once. Each publishes the events of a real call, as a worker and the
//! gateway do (awaiting each JetStream ack, `Nats-Msg-Id` set): `owner`, `started`, per turn the
//! caller's and the agent's transcript entries, the turn's latency and usage, two tools
//! (`dispatched`, then `tool`), the outcome, `ended` with the whole call's usage, and Twilio's
//! `completed` status from the gateway right after `ended`. A call's events are spread over
//! `--call-seconds` (0: published as fast as the acks come, which measures the most the
//! notifier can deliver); the calls start within the first second.
//!
//! Measured: every delivery received once (by `webhook-id`); deliveries per second from the
//! first publish to the last delivery; per call, the time from the ack of its `ended` publish
//! to its report's arrival; and how many reports include the `completed` status published
//! after `ended`.
//!
//! `cargo build --release -p notifier --example notifier-bench`
//! `./target/release/examples/notifier-bench --calls 200 --call-seconds 60`
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use serde_json::Value;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{EndReason, GATEWAY_SEQ_BASE, OwnerReason, owner_seq};
use switchboard_proto::{
    CallEnded, CallEvent, CallOutcome, CallOwner, CallStarted, CallStatus, Direction, Message as _,
    Role, ToolDispatched, ToolInvocation, TranscriptEntry, TurnLatency, Usage, tool_invocation,
};
use switchboard_service::NatsArgs;
use switchboard_service::redact::Secret;
use switchboard_testkit::{NatsServer, Postgres, free_port};
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Measures webhook deliveries/s and the delay from `ended` to the report")]
struct Args {
    /// Calls in progress at once.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Turns (caller speaks, agent answers) per call.
    #[arg(long, default_value_t = 8)]
    turns: u32,
    /// How long each call lasts; 0 publishes every event as fast as the acks come.
    #[arg(long, default_value_t = 60)]
    call_seconds: u64,
    /// Give up waiting for the deliveries after this long.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

/// The receivers and what each asks for.
const ENDPOINTS: [(&str, &[&str]); 4] = [
    ("reports", &["call.ended"]),
    ("crm", &["call.started", "call.outcome", "call.ended"]),
    (
        "analytics",
        &["call.transcript", "call.tool", "call.outcome", "call.usage"],
    ),
    ("live", &notifier::endpoints::EVENT_TYPES),
];
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receivers saw.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    repeats: u64,
    last: Option<Instant>,
    /// Per call: when its report arrived, and whether it holds the `completed` status.
    reports: HashMap<String, (Instant, bool)>,
}

type Shared = Arc<Mutex<Seen>>;

async fn receive(
    State(seen): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let at = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let report = (path == "reports")
        .then(|| serde_json::from_str::<Value>(&body).ok())
        .flatten()
        .map(|body| {
            let data = &body["data"];
            let completed = data["twilio_statuses"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["status"] == "completed"));
            (
                data["call_sid"].as_str().unwrap_or_default().to_owned(),
                completed,
            )
        });
    let mut seen = seen.lock().await;
    if !seen.ids.insert(id) {
        seen.repeats += 1;
    }
    seen.last = Some(at);
    if let Some((sid, completed)) = report {
        seen.reports.insert(sid, (at, completed));
    }
    StatusCode::OK
}

fn event(sid: &str, seq: u64, body: Body) -> CallEvent {
    CallEvent {
        call_sid: sid.into(),
        seq,
        at_ms: switchboard_proto::now_ms(),
        body: Some(body),
    }
}

fn said(role: Role, text: String, offset_ms: u32) -> Body {
    Body::Transcript(TranscriptEntry {
        role: role as i32,
        item_id: format!("item_{offset_ms}_{}", role as i32),
        heard_ms: if role == Role::Assistant { 2400 } else { 0 },
        audio_end_ms: if role == Role::User {
            offset_ms + 1800
        } else {
            0
        },
        text,
        offset_ms,
        ..Default::default()
    })
}

fn usage(turns: u64) -> Usage {
    Usage {
        input_tokens: 900 * turns,
        output_tokens: 240 * turns,
        input_audio_tokens: 600 * turns,
        output_audio_tokens: 200 * turns,
        input_text_tokens: 300 * turns,
        output_text_tokens: 40 * turns,
        cached_tokens: 256 * turns,
        cached_text_tokens: 256 * turns,
        model: "gpt-realtime".into(),
        ..Default::default()
    }
}

/// The events of one call, as its worker (epoch 0) and the gateway publish them.
fn call_events(sid: &str, turns: u32) -> Vec<CallEvent> {
    let mut n = 0;
    let mut next = || {
        n += 1;
        owner_seq(0, n)
    };
    let mut events = vec![
        event(
            sid,
            next(),
            Body::Owner(CallOwner {
                epoch: 0,
                worker_id: "worker-1".into(),
                reason: OwnerReason::Offer.as_str().into(),
                agent_id: "front-desk".into(),
                ..Default::default()
            }),
        ),
        event(
            sid,
            next(),
            Body::Started(CallStarted {
                agent_id: "front-desk".into(),
                from: "+15550001234".into(),
                to: "+15550001111".into(),
                direction: Direction::Inbound as i32,
                worker_id: "worker-1".into(),
                model: "gpt-realtime".into(),
                vars: Default::default(),
            }),
        ),
    ];
    for turn in 0..turns {
        let offset = turn * 6000;
        events.push(event(
            sid,
            next(),
            said(
                Role::User,
                format!("I'd like to move my appointment, turn {turn}."),
                offset,
            ),
        ));
        if turn == 2 || turn == 5 {
            let call_id = format!("call_{turn}");
            let name = if turn == 2 {
                "lookup_customer"
            } else {
                "book_appointment"
            };
            let arguments = r#"{"phone":"+15550001234"}"#.to_owned();
            events.push(event(
                sid,
                next(),
                Body::Dispatched(ToolDispatched {
                    audio_end_ms: 0,
                    redacted: Vec::new(),
                    call_id: call_id.clone(),
                    name: name.into(),
                    arguments: arguments.clone(),
                }),
            ));
            events.push(event(
                sid,
                next(),
                Body::Tool(ToolInvocation {
                    redacted: Vec::new(),
                    call_id,
                    name: name.into(),
                    arguments,
                    result: Some(tool_invocation::Result::Output(
                        r#"{"customer":"Maria Garcia","slot":"2026-01-05T10:00"}"#.into(),
                    )),
                    latency_ms: 45,
                }),
            ));
        }
        events.push(event(
            sid,
            next(),
            said(
                Role::Assistant,
                format!(
                    "Of course. I can offer you Monday at ten or Tuesday at two; which suits \
                     you better? (turn {turn})"
                ),
                offset + 2500,
            ),
        ));
        events.push(event(
            sid,
            next(),
            Body::Turn(TurnLatency {
                kind: "response".into(),
                latency_ms: 620,
                response_id: format!("resp_{turn}"),
            }),
        ));
        events.push(event(sid, next(), Body::Usage(usage(1))));
    }
    events.push(event(
        sid,
        next(),
        Body::Outcome(CallOutcome {
            redacted: Vec::new(),
            outcome: "booked".into(),
            detail: "Monday 10:00".into(),
        }),
    ));
    events.push(event(
        sid,
        next(),
        Body::Ended(CallEnded {
            reason: EndReason::CallerHungUp.as_str().into(),
            duration_ms: u64::from(turns) * 6000,
            usage: Some(Box::new(usage(u64::from(turns)))),
            recording: None,
        }),
    ));
    // Twilio's status callback reaches the gateway after the media stream has ended.
    events.push(event(
        sid,
        GATEWAY_SEQ_BASE + 1 + 3,
        Body::Status(CallStatus {
            status: "completed".into(),
            sequence_number: 3,
            duration_seconds: turns * 6,
            ..Default::default()
        }),
    ));
    events
}

/// Publishes one call's events spread over `length`; returns when its `ended` was acked.
async fn run_call(
    js: async_nats::jetstream::Context,
    subjects: switchboard_proto::subject::Subjects,
    events: Vec<CallEvent>,
    start_in: Duration,
    length: Duration,
) -> anyhow::Result<Instant> {
    tokio::time::sleep(start_in).await;
    let gap = length / u32::try_from(events.len())?;
    let mut ended = None;
    for mut ev in events {
        ev.at_ms = switchboard_proto::now_ms();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", ev.msg_id().as_str());
        js.publish_with_headers(
            subjects.event(&ev.call_sid, ev.kind()),
            headers,
            ev.encode_to_vec().into(),
        )
        .await?
        .await?;
        if ev.kind() == "ended" {
            // Twilio's final status follows at once: the stream and the call end together.
            ended = Some(Instant::now());
            continue;
        }
        tokio::time::sleep(gap).await;
    }
    ended.context("a call without ended")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats = NatsServer::start().await?;
    let pg = Postgres::start().await?;
    let db = pg.create_database("notifier").await?;

    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let file = tempfile::NamedTempFile::new()?;
    let mut toml = String::new();
    for (path, events) in ENDPOINTS {
        let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        toml.push_str(&format!(
            "[[endpoint]]\nurl = \"{base}/{path}\"\nsecret = \"{SECRET}\"\nevents = [{}]\n\
             allow_private_network = true\n\n",
            events.join(", ")
        ));
    }
    std::fs::write(file.path(), toml)?;
    let listen = format!("127.0.0.1:{}", free_port());
    let config = notifier::Config {
        listen: listen.parse()?,
        database_url: Secret::new(db),
        admin_token: Some(Secret::new("bench-admin-token")),
        webhooks_file: file.path().to_owned(),
        webhook_timeout_seconds: 15,
        webhook_max_attempts: 20,
        webhook_first_retry_ms: 5000,
        webhook_max_retry_seconds: 36_000,
        webhook_max_payload_bytes: 20_000,
        public_url: None,
        prices: Default::default(),
        drain_seconds: 10,
        nats: NatsArgs::for_url(nats.url()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let notifier = tokio::spawn(notifier::run(config, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let ready = Instant::now();
    while !http
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "notifier not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    let subjects = NatsArgs::for_url(nats.url()).subjects();
    let run = switchboard_proto::now_ms() % 100_000_000;
    let calls: Vec<(String, Vec<CallEvent>)> = (0..args.calls)
        .map(|c| {
            let sid = format!("CA{run:08}{c:024}");
            let events = call_events(&sid, args.turns);
            (sid, events)
        })
        .collect();
    let expected: usize = calls
        .iter()
        .flat_map(|(_, events)| events)
        .map(|ev| {
            let Some(t) = notifier::endpoints::event_type(ev.kind()) else {
                return 0;
            };
            ENDPOINTS.iter().filter(|(_, e)| e.contains(&t)).count()
        })
        .sum();
    let events: usize = calls.iter().map(|(_, e)| e.len()).sum();
    println!(
        "{} calls at once, {events} events ({} per call) over {} s each; {expected} deliveries expected",
        args.calls,
        events / args.calls,
        args.call_seconds
    );

    let started = Instant::now();
    let length = Duration::from_secs(args.call_seconds);
    let mut tasks = Vec::new();
    for (c, (sid, events)) in calls.into_iter().enumerate() {
        let start_in = Duration::from_secs(1) * u32::try_from(c)? / u32::try_from(args.calls)?;
        let task = tokio::spawn(run_call(
            js.clone(),
            subjects.clone(),
            events,
            start_in,
            length,
        ));
        tasks.push((sid, task));
    }
    let mut ended_at = HashMap::new();
    for (sid, task) in tasks {
        ended_at.insert(sid, task.await??);
    }
    let published = started.elapsed();
    let deadline = Duration::from_secs(args.timeout_seconds);
    loop {
        let got = seen.lock().await.ids.len();
        if got >= expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "only {got} of {expected} deliveries after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().await;
    let last = seen.last.context("no delivery")?;
    let elapsed = last - started;
    println!(
        "published in {published:.2?}; {} deliveries ({} repeated) in {elapsed:.2?}: {:.0} deliveries/s",
        seen.ids.len(),
        seen.repeats,
        seen.ids.len() as f64 / elapsed.as_secs_f64()
    );
    let mut delays = switchboard_bench::histogram()?;
    let mut complete = 0;
    for (sid, (arrived, completed)) in &seen.reports {
        let ended = ended_at.get(sid).context("a report of an unknown call")?;
        delays.saturating_record(u64::try_from((*arrived - *ended).as_micros())?.max(1));
        complete += usize::from(*completed);
    }
    switchboard_bench::print("ended -> report", &delays);
    println!(
        "reports with the status published after ended: {complete} of {}",
        seen.reports.len()
    );
    let _ = stop.send(());
    notifier.await??;
    Ok(())
}
