//! `worker-bench`: how much latency and memory the call-worker adds per call.
//!
//! It runs against a real call-worker process (started by the bench with `--worker-bin`, or by
//! the operator with `--worker-pid`) and plays both of the worker's peers in one process, so
//! every latency is measured on one clock:
//!
//! - **the gateway**, over NATS: N calls offered on `voice.calls.offer` (request/reply, as the
//!   gateway does), then for each call `start` and a 160-byte mu-law frame every 20 ms on
//!   `voice.call.<sid>.in` (absolute deadlines), `.out` received, every mark echoed at once, and
//!   `stop` at the end;
//! - **the model**: a minimal Realtime GA WebSocket server (the worker's `REALTIME_URL`) that
//!   answers `session.update` with `session.updated`, consumes `input_audio_buffer.append`, and
//!   once the caller's audio flows speaks like an agent: a response of `--speak-ms` of
//!   `response.output_audio.delta`s at real-time pace, a pause of `--pause-ms`, again.
//!
//! Every audio payload carries the moment it was sent (nanoseconds since the run began, in its
//! first 8 bytes). The worker passes mu-law through untouched: an inbound frame becomes exactly
//! one append, and a delta of at most [`OUT_CHUNK_BYTES`] becomes exactly one outbound audio
//! frame (followed by a mark), so the stamp arrives intact:
//!
//! - **in**: `InboundFrame` published on `.in` -> its `input_audio_buffer.append` read by the
//!   model server (one NATS hop, one WebSocket hop);
//! - **out**: `response.output_audio.delta` written by the model server -> its `OutboundFrame`
//!   received on `.out` (one WebSocket hop, one NATS hop).
//!
//! The worker's resident memory (`VmRSS`) is read before the calls and while all run; the
//! growth per call is reported.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use call_worker::call::machine::OUT_CHUNK_BYTES;
use call_worker::playback::BYTES_PER_MS;
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use switchboard_bench::cpu::{CpuWindow, print_cpu};
use switchboard_bench::{histogram, print, print_rss, rss_kib, since_stamp, stamp};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallOffer, Direction, InboundAudio, InboundFrame, MarkEcho, Message as _, OfferReply,
    OutboundFrame, StreamStart, StreamStop, inbound_frame, now_ms, outbound_frame,
};
use switchboard_realtime::server::Response;
use switchboard_realtime::{ClientEvent, ContentPart, Item, ServerEvent, Session};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "worker-bench",
    about = "Latency and memory the call-worker adds per call"
)]
struct Args {
    /// The NATS server the worker uses.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The worker's NATS_SUBJECT_PREFIX.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "voice")]
    nats_subject_prefix: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// How long every call runs once all have started.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Calls start spread evenly over this many seconds.
    #[arg(long, default_value_t = 5.0)]
    ramp_seconds: f64,
    /// Start this call-worker binary (with MAX_CALLS = --calls, a generated agents file and
    /// REALTIME_URL pointing at the bench); otherwise a worker must already be running.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// The process id of an already running worker, to report its memory per call and CPU per
    /// call-minute.
    #[arg(long)]
    worker_pid: Option<u32>,
    /// The nats-server's process id, to report its CPU per call-minute too.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Where the bench's Realtime server listens; a worker started by the operator must have
    /// `REALTIME_URL=ws://<this address>/v1/realtime`.
    #[arg(long, default_value = "127.0.0.1:0")]
    realtime_listen: SocketAddr,
    /// Milliseconds of audio per `response.output_audio.delta` (at most one outbound chunk).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100))]
    delta_ms: u64,
    /// Length of each response of the model, in milliseconds of audio.
    #[arg(long, default_value_t = 4000)]
    speak_ms: u64,
    /// Silence between two responses, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
}

/// Twilio's frame: 20 ms of mu-law.
const FRAME: Duration = Duration::from_millis(20);
const FRAME_BYTES: usize = 160;
/// How long a call waits for the worker's answer to its offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the bench waits for a worker to answer offers at all.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The agents file of a worker started by the bench: one default agent, no greeting and no
/// tools, so the worker asks the model for nothing and the model speaks on its own (as after a
/// caller turn detected by server VAD).
const AGENTS_TOML: &str = r#"[[agent]]
id = "bench"
numbers = ["*"]
instructions = "You are a benchmark agent."
"#;

// ------------------------------------------------------------------------- the model side

/// What the model server saw.
struct ModelReport {
    /// Inbound latency (frame published on `.in` -> append read here), microseconds.
    inbound: Histogram<u64>,
    sessions: usize,
    /// Sessions that ended in an error (e.g. the worker closed the socket mid-write); their
    /// samples are not counted.
    failed: usize,
    appends: u64,
    deltas: u64,
}

impl ModelReport {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            inbound: histogram()?,
            sessions: 0,
            failed: 0,
            appends: 0,
            deltas: 0,
        })
    }

    fn add(&mut self, other: &Self) -> anyhow::Result<()> {
        self.inbound.add(&other.inbound)?;
        self.sessions += other.sessions;
        self.failed += other.failed;
        self.appends += other.appends;
        self.deltas += other.deltas;
        Ok(())
    }
}

/// How the model speaks.
#[derive(Clone, Copy)]
struct Speech {
    delta: Duration,
    delta_bytes: usize,
    deltas_per_response: u64,
    pause: Duration,
}

/// Accepts Realtime sessions until `stop`; returns what all of them saw.
async fn model_server(
    listener: TcpListener,
    speech: Speech,
    epoch: Instant,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> anyhow::Result<ModelReport> {
    let mut total = ModelReport::new()?;
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                let _ = tcp.set_nodelay(true);
                let (open, stop) = (open.clone(), stop.clone());
                sessions.spawn(async move {
                    open.fetch_add(1, Ordering::Relaxed);
                    let report = model_session(tcp, speech, epoch, stop).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    report
                });
            }
            Some(done) = sessions.join_next() => record(&mut total, done?)?,
        }
    }
    while let Some(done) = sessions.join_next().await {
        record(&mut total, done?)?;
    }
    Ok(total)
}

/// Adds a finished session to the total; a failed session is counted and reported, not fatal:
/// an overloaded worker may drop sessions, and that is a result to show.
fn record(total: &mut ModelReport, session: anyhow::Result<ModelReport>) -> anyhow::Result<()> {
    match session {
        Ok(report) => total.add(&report),
        Err(error) => {
            if total.failed == 0 {
                eprintln!("worker-bench: a Realtime session failed: {error:#}");
            }
            total.failed += 1;
            Ok(())
        }
    }
}

/// Where a session's speech is.
enum Phase {
    /// No caller audio yet (the stream has not started at the worker).
    Waiting,
    /// Streaming a response; the next delta is due at `next`.
    Speaking {
        response_id: String,
        item_id: String,
        next: Instant,
        left: u64,
    },
    /// Silent until `until`.
    Pausing { until: Instant },
}

/// One Realtime session: the worker's connection for one call.
async fn model_session(
    tcp: TcpStream,
    speech: Speech,
    epoch: Instant,
    stop: CancellationToken,
) -> anyhow::Result<ModelReport> {
    let mut report = ModelReport::new()?;
    report.sessions = 1;
    // A small read buffer: tungstenite zero-fills all of it before every read, and the bench
    // shares the machine with the worker it measures.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return Ok(report);
    };
    let (mut tx, mut rx) = ws.split();
    let session_id = format!("sess_{}", uuid::Uuid::new_v4().simple());
    let text = |ev: ServerEvent| WsMessage::Text(ev.to_json().into());
    tx.send(text(ServerEvent::SessionCreated {
        event_id: String::new(),
        session: Session {
            kind: "realtime".into(),
            id: Some(session_id.clone()),
            ..Default::default()
        },
    }))
    .await?;
    let mut phase = Phase::Waiting;
    let mut responses = 0u64;
    let mut audio = vec![0xffu8; speech.delta_bytes];
    loop {
        let due = match &phase {
            Phase::Waiting => None,
            Phase::Speaking { next, .. } => Some(*next),
            Phase::Pausing { until } => Some(*until),
        };
        tokio::select! {
            () = stop.cancelled() => break,
            msg = rx.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => match ClientEvent::parse(&t) {
                    Ok(ClientEvent::InputAudioBufferAppend { audio: b64, .. }) => {
                        report.appends += 1;
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
                            && let Some(us) = since_stamp(&bytes, epoch)
                        {
                            report.inbound.record(us.max(1))?;
                        }
                        if matches!(phase, Phase::Waiting) {
                            responses += 1;
                            phase = begin_response(&mut tx, responses, speech).await?;
                        }
                    }
                    Ok(ClientEvent::SessionUpdate { mut session, .. }) => {
                        session.id = Some(session_id.clone());
                        session.object = Some("realtime.session".into());
                        tx.send(text(ServerEvent::SessionUpdated {
                            event_id: String::new(),
                            session,
                        }))
                        .await?;
                    }
                    // No greeting and no tools: nothing else needs an answer.
                    Ok(_) | Err(_) => {}
                },
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            () = sleep_until(due) => match &mut phase {
                Phase::Waiting => {}
                Phase::Pausing { .. } => {
                    responses += 1;
                    phase = begin_response(&mut tx, responses, speech).await?;
                }
                Phase::Speaking { response_id, item_id, next, left } => {
                    stamp(&mut audio, epoch);
                    let delta = base64::engine::general_purpose::STANDARD.encode(&audio);
                    tx.send(text(ServerEvent::OutputAudioDelta {
                        event_id: String::new(),
                        response_id: response_id.clone(),
                        item_id: item_id.clone(),
                        output_index: 0,
                        content_index: 0,
                        delta,
                    }))
                    .await?;
                    report.deltas += 1;
                    *left -= 1;
                    *next += speech.delta;
                    if *left == 0 {
                        let until = *next + speech.pause;
                        end_response(&mut tx, response_id, item_id).await?;
                        phase = Phase::Pausing { until };
                    }
                }
            },
        }
    }
    Ok(report)
}

type WsSink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<TcpStream>,
    tokio_tungstenite::tungstenite::Message,
>;

async fn begin_response(tx: &mut WsSink, n: u64, speech: Speech) -> anyhow::Result<Phase> {
    let response_id = format!("resp_{n}");
    let item_id = format!("item_{n}");
    let created = ServerEvent::ResponseCreated {
        event_id: String::new(),
        response: Response {
            id: response_id.clone(),
            object: Some("realtime.response".into()),
            status: "in_progress".into(),
            ..Default::default()
        },
    };
    tx.send(WsMessage::Text(created.to_json().into())).await?;
    Ok(Phase::Speaking {
        response_id,
        item_id,
        next: Instant::now(),
        left: speech.deltas_per_response.max(1),
    })
}

async fn end_response(tx: &mut WsSink, response_id: &str, item_id: &str) -> anyhow::Result<()> {
    let transcript = "Benchmark speech.".to_owned();
    let events = [
        ServerEvent::OutputAudioDone {
            event_id: String::new(),
            response_id: response_id.to_owned(),
            item_id: item_id.to_owned(),
            output_index: 0,
            content_index: 0,
        },
        ServerEvent::OutputAudioTranscriptDone {
            event_id: String::new(),
            response_id: response_id.to_owned(),
            item_id: item_id.to_owned(),
            output_index: 0,
            content_index: 0,
            transcript: transcript.clone(),
        },
        ServerEvent::ResponseDone {
            event_id: String::new(),
            response: Response {
                id: response_id.to_owned(),
                object: Some("realtime.response".into()),
                status: "completed".into(),
                output: vec![Item::Message {
                    id: Some(item_id.to_owned()),
                    role: "assistant".into(),
                    content: vec![ContentPart::OutputAudio {
                        transcript: Some(transcript),
                    }],
                    status: Some("completed".into()),
                }],
                ..Default::default()
            },
        },
    ];
    for ev in events {
        tx.send(WsMessage::Text(ev.to_json().into())).await?;
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ----------------------------------------------------------------------- the gateway side

/// What one call saw on the gateway side.
struct CallReport {
    /// Outbound latency (delta written by the model -> frame on `.out`), microseconds.
    outbound: Histogram<u64>,
    frames_sent: u64,
    audio_received: u64,
    marks_echoed: u64,
}

/// One call as the gateway plays it: offer, `start`, a frame every 20 ms until `until`,
/// `.out` timed and marks echoed at once, `stop`.
async fn call(
    nats: async_nats::Client,
    subjects: Arc<Subjects>,
    index: usize,
    epoch: Instant,
    until: Instant,
) -> anyhow::Result<CallReport> {
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    // As the gateway: listen on `.out` before the first `.in` frame.
    let mut out = nats.subscribe(subjects.call_out(&call_sid)).await?;
    let offer = CallOffer {
        call_sid: call_sid.clone(),
        account_sid: "ACbench".into(),
        from: "+15550001234".into(),
        to: "+15550001111".into(),
        direction: Direction::Inbound as i32,
        gateway_id: "worker-bench".into(),
        offered_at_ms: now_ms(),
        agent_id: String::new(),
        ..Default::default()
    };
    let request = async_nats::client::Request::new()
        .payload(offer.encode_to_vec().into())
        .timeout(Some(OFFER_TIMEOUT));
    let reply = nats
        .send_request(subjects.offer(), request)
        .await
        .with_context(|| format!("call {index}: offer"))?;
    let reply = OfferReply::decode(reply.payload)?;
    if !reply.accepted {
        bail!("call {index}: declined ({})", reply.reason);
    }

    let in_subject = subjects.call_in(&call_sid);
    let mut seq = 0u64;
    let mut publish = async |frame: inbound_frame::Frame| -> anyhow::Result<()> {
        seq += 1;
        let msg = InboundFrame {
            seq,
            frame: Some(frame),
        };
        nats.publish(in_subject.clone(), msg.encode_to_vec().into())
            .await?;
        Ok(())
    };
    publish(inbound_frame::Frame::Start(StreamStart {
        attach: 1,
        epoch: 0,
        resumed: false,
        stream_sid: format!("MZ{}", uuid::Uuid::new_v4().simple()),
        call_sid: call_sid.clone(),
        account_sid: "ACbench".into(),
        custom_parameters: Default::default(),
        gateway_id: "worker-bench".into(),
        started_at_ms: now_ms(),
        recorded: false,
    }))
    .await?;

    let mut report = CallReport {
        outbound: histogram()?,
        frames_sent: 0,
        audio_received: 0,
        marks_echoed: 0,
    };
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut chunk = 0u32;
    let mut audio = [0xffu8; FRAME_BYTES];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= until {
                    break;
                }
                chunk += 1;
                stamp(&mut audio, epoch);
                publish(inbound_frame::Frame::Audio(InboundAudio { replayed: false,
                    payload: Bytes::copy_from_slice(&audio),
                    timestamp_ms: (chunk - 1) * 20,
                    chunk,
                }))
                .await?;
                report.frames_sent += 1;
            }
            msg = out.next() => {
                let Some(msg) = msg else { bail!("call {index}: `.out` subscription ended") };
                let Ok(OutboundFrame { frame: Some(frame), .. }) = OutboundFrame::decode(msg.payload) else {
                    bail!("call {index}: undecodable outbound frame");
                };
                match frame {
                    outbound_frame::Frame::Audio(a) => {
                        report.audio_received += 1;
                        if let Some(us) = since_stamp(&a.payload, epoch) {
                            report.outbound.record(us.max(1))?;
                        }
                    }
                    // Echoed at once, as if Twilio had played it already.
                    outbound_frame::Frame::Mark(m) => {
                        publish(inbound_frame::Frame::Mark(MarkEcho { name: m.name })).await?;
                        report.marks_echoed += 1;
                    }
                    outbound_frame::Frame::Hangup(h) => {
                        bail!("call {index}: the worker hung up ({})", h.reason);
                    }
                    outbound_frame::Frame::Transfer(_) => bail!("call {index}: unexpected transfer"),
                    outbound_frame::Frame::SendDigits(_) => bail!("call {index}: unexpected keys"),
                    outbound_frame::Frame::Clear(_)
                    | outbound_frame::Frame::Heartbeat(_)
                    | outbound_frame::Frame::Owner(_)
                    | outbound_frame::Frame::HandOver(_) => {}
                }
            }
        }
    }
    publish(inbound_frame::Frame::Stop(StreamStop {
        reason: "stop".into(),
    }))
    .await?;
    let _ = out.unsubscribe().await;
    if report.audio_received == 0 {
        bail!("call {index}: no assistant audio arrived");
    }
    Ok(report)
}

// ------------------------------------------------------------------------------- the run

/// A worker process started by the bench.
struct SpawnedWorker {
    child: tokio::process::Child,
    dir: PathBuf,
}

async fn spawn_worker(
    bin: &PathBuf,
    args: &Args,
    realtime: SocketAddr,
) -> anyhow::Result<SpawnedWorker> {
    let dir = std::env::temp_dir().join(format!("worker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let agents = dir.join("agents.toml");
    std::fs::write(&agents, AGENTS_TOML)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = tokio::process::Command::new(bin)
        .env_remove("OPENAI_API_KEY")
        .env("NATS_URL", &args.nats_url)
        .env("NATS_SUBJECT_PREFIX", &args.nats_subject_prefix)
        .env("REALTIME_URL", format!("ws://{realtime}/v1/realtime"))
        .env("AGENTS_FILE", &agents)
        .env("MAX_CALLS", args.calls.max(1).to_string())
        .env("LISTEN", listen.to_string())
        .env("WORKER_ID", "worker-bench")
        .env("DRAIN_SECONDS", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(SpawnedWorker { child, dir })
}

/// Waits until a worker answers offers (an empty offer is declined as `bad_offer`).
async fn wait_for_worker(
    nats: &async_nats::Client,
    subjects: &Subjects,
    worker: Option<&mut SpawnedWorker>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WORKER_START_TIMEOUT;
    let mut worker = worker;
    loop {
        let probe = async_nats::client::Request::new()
            .payload(Bytes::new())
            .timeout(Some(Duration::from_secs(1)));
        if nats.send_request(subjects.offer(), probe).await.is_ok() {
            return Ok(());
        }
        if let Some(w) = worker.as_deref_mut()
            && let Some(status) = w.child.try_wait()?
        {
            bail!("the call-worker exited: {status}");
        }
        if Instant::now() >= deadline {
            bail!("no call-worker answers on {}", subjects.offer());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let epoch = Instant::now();
    let subjects = Arc::new(Subjects::new(args.nats_subject_prefix.clone()));
    if args.worker_bin.is_none() && args.realtime_listen.port() == 0 {
        bail!(
            "without --worker-bin, pass --realtime-listen with the address of the running worker's REALTIME_URL"
        );
    }

    // The model side first: a worker connects to it as soon as it takes a call.
    let listener = TcpListener::bind(args.realtime_listen)
        .await
        .with_context(|| format!("listening on {}", args.realtime_listen))?;
    let realtime_addr = listener.local_addr()?;
    let delta_bytes = usize::try_from(args.delta_ms * BYTES_PER_MS)?;
    if delta_bytes > OUT_CHUNK_BYTES {
        bail!("--delta-ms must be at most one outbound chunk of the worker");
    }
    let speech = Speech {
        delta: Duration::from_millis(args.delta_ms),
        delta_bytes,
        deltas_per_response: args.speak_ms / args.delta_ms,
        pause: Duration::from_millis(args.pause_ms),
    };
    let open_sessions = Arc::new(AtomicUsize::new(0));
    let stop_model = CancellationToken::new();
    let model = tokio::spawn(model_server(
        listener,
        speech,
        epoch,
        open_sessions.clone(),
        stop_model.clone(),
    ));

    let mut spawned = match &args.worker_bin {
        Some(bin) => Some(spawn_worker(bin, &args, realtime_addr).await?),
        None => None,
    };
    let worker_pid = args
        .worker_pid
        .or_else(|| spawned.as_ref().and_then(|w| w.child.id()));

    let nats = async_nats::connect(&args.nats_url)
        .await
        .context("connecting to NATS")?;
    wait_for_worker(&nats, &subjects, spawned.as_mut()).await?;
    // Let the freshly started worker settle before its idle memory is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = worker_pid.and_then(rss_kib);

    let ramp = Duration::from_secs_f64(args.ramp_seconds.max(0.0));
    let steady = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let until = start + ramp + steady;
    let mut calls = JoinSet::new();
    for index in 0..args.calls {
        let (nats, subjects) = (nats.clone(), subjects.clone());
        let at = start + ramp.mul_f64(index as f64 / args.calls.max(1) as f64);
        calls.spawn(async move {
            tokio::time::sleep_until(at).await;
            call(nats, subjects, index, epoch, until).await
        });
    }
    // CPU while every call runs; memory and sessions in the middle of it.
    tokio::time::sleep_until(start + ramp).await;
    let processes: Vec<(&str, u32)> = [("call-worker", worker_pid), ("nats-server", args.nats_pid)]
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .collect();
    let cpu = CpuWindow::start(&processes);
    tokio::time::sleep_until(start + ramp + steady / 2).await;
    let peak = worker_pid.and_then(rss_kib);
    let sessions_mid = open_sessions.load(Ordering::Relaxed);
    tokio::time::sleep_until(until - Duration::from_millis(100)).await;
    let cpu = cpu.finish(args.calls);

    let mut outbound = histogram()?;
    let (mut failed, mut frames_sent, mut audio_received, mut marks) = (0usize, 0u64, 0u64, 0u64);
    while let Some(result) = calls.join_next().await {
        match result? {
            Ok(r) => {
                outbound.add(&r.outbound)?;
                frames_sent += r.frames_sent;
                audio_received += r.audio_received;
                marks += r.marks_echoed;
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    // The worker closes each Realtime session when its call stops; give it a moment.
    let closing = Instant::now() + Duration::from_secs(5);
    while open_sessions.load(Ordering::Relaxed) > 0 && Instant::now() < closing {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still_open = open_sessions.load(Ordering::Relaxed);
    stop_model.cancel();
    let model = model.await??;
    if let Some(mut w) = spawned.take() {
        let _ = w.child.kill().await;
        let _ = std::fs::remove_dir_all(&w.dir);
    }

    println!(
        "calls={} seconds={} ramp={}s delta={}ms speak={}ms pause={}ms failed={failed}",
        args.calls, args.seconds, args.ramp_seconds, args.delta_ms, args.speak_ms, args.pause_ms
    );
    print("in", &model.inbound);
    print("out", &outbound);
    println!(
        "frames: in {frames_sent} published, {} appended ({} lost); out {} deltas, {audio_received} received; {marks} marks echoed",
        model.appends,
        frames_sent.saturating_sub(model.appends),
        model.deltas
    );
    println!(
        "realtime sessions: {} completed, {} failed, {sessions_mid} open mid-run, {still_open} still open after the calls stopped",
        model.sessions, model.failed
    );
    print_rss(
        "worker",
        "call",
        args.calls,
        baseline.zip(peak),
        "pass --worker-bin or --worker-pid",
    );
    print_cpu(&cpu, "pass --worker-bin or --worker-pid, and --nats-pid");
    if failed > 0 {
        bail!("{failed} calls failed");
    }
    Ok(())
}
