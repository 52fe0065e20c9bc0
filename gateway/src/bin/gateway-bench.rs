//! `gateway-bench`: how much latency and memory the gateway adds per media stream.
//!
//! On loopback, against a running gateway, it plays both sides in one process: Twilio (N
//! concurrent signed media streams, a 20 ms frame every 20 ms) and the worker (accepts every
//! offer, echoes every inbound audio frame back on `.out`). Each audio payload carries the
//! moment it was sent (nanoseconds since the run began, in its first 8 bytes), so both hops are
//! timed on one clock:
//!
//! The worker side of each call runs in that call's task (its own `.in` subscription), over a
//! few NATS connections, so the bench's worker is not one task serialising 25,000 frames a
//! second: what is timed is the gateway's path, not a queue in the bench.
//!
//! - **in**: Twilio WebSocket send -> `InboundFrame` received on `voice.call.<sid>.in`;
//! - **out**: `OutboundFrame` published on `.out` -> `media` received on the WebSocket.
//!
//! Both include one NATS hop on loopback. With `--gateway-pid` it also reads the gateway's
//! resident memory (`VmRSS`) before and during the run and reports the growth per stream.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use switchboard_bench::cpu::{CpuWindow, print_cpu};
use switchboard_bench::{histogram, print, print_rss, rss_kib, since_stamp, stamp};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    InboundFrame, Message as _, OfferReply, OutboundAudio, OutboundFrame, inbound_frame,
    outbound_frame,
};
use switchboard_twilio::media::{ServerMessage, Start, TwilioMessage};
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml::{Instructions, Verb};
use switchboard_twilio::webhook::CallForm;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(
    name = "gateway-bench",
    about = "Latency and memory the gateway adds per stream"
)]
struct Args {
    /// The gateway's base URL.
    #[arg(long, env = "GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The gateway's PUBLIC_URL (signatures are computed over it; default: --gateway).
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// The gateway's TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
    /// The NATS server the gateway uses.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The gateway's NATS_SUBJECT_PREFIX.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "voice")]
    nats_subject_prefix: String,
    /// Concurrent media streams.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// How long every stream runs once all are open.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The gateway's process id, to report its memory per stream and CPU per call-minute.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// The nats-server's process id, to report its CPU per call-minute too.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// NATS connections the worker side spreads its calls over.
    #[arg(long, default_value_t = 4)]
    nats_connections: usize,
}

/// Client socket buffers sized for one audio stream (the library's 128 KiB defaults would be
/// zeroed on every read and cost the bench CPU it should not spend).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

const FRAME: Duration = Duration::from_millis(20);

/// The worker's offer side: accept every offer.
async fn accept_offers(
    nats: async_nats::Client,
    subjects: Subjects,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut offers = nats
        .queue_subscribe(
            subjects.offer(),
            switchboard_proto::WORKERS_QUEUE_GROUP.to_owned(),
        )
        .await?;
    let accept = OfferReply {
        accepted: true,
        worker_id: "gateway-bench".into(),
        agent_id: "bench".into(),
        reason: String::new(),
        epoch: 0,
    }
    .encode_to_vec();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            Some(offer) = offers.next() => {
                if let Some(reply) = offer.reply {
                    nats.publish(reply, accept.clone().into()).await?;
                }
            }
        }
    }
}

/// The worker side of one call: the echo of an `.in` audio frame on `.out` (re-stamped), and
/// the `in` time of that frame.
fn echo(msg: async_nats::Message, seq: &mut u64, epoch: Instant) -> Option<(u64, Vec<u8>)> {
    let Ok(InboundFrame {
        frame: Some(inbound_frame::Frame::Audio(audio)),
        ..
    }) = InboundFrame::decode(msg.payload)
    else {
        return None;
    };
    let us = since_stamp(&audio.payload, epoch)?;
    let mut payload = audio.payload.to_vec();
    stamp(&mut payload, epoch);
    *seq += 1;
    let out = OutboundFrame {
        seq: *seq,
        epoch: 0,
        frame: Some(outbound_frame::Frame::Audio(OutboundAudio {
            payload: payload.into(),
        })),
    };
    Some((us, out.encode_to_vec()))
}

/// Both histograms of one stream.
struct Timings {
    inbound: Histogram<u64>,
    outbound: Histogram<u64>,
}

/// One Twilio media stream: webhook, signed socket, `start`, then a frame every 20 ms until
/// `until`; times the echoed audio.
async fn stream(
    args: &Args,
    http: &reqwest::Client,
    nats: &async_nats::Client,
    subjects: &Subjects,
    index: usize,
    epoch: Instant,
    until: Instant,
) -> anyhow::Result<Timings> {
    let gateway = args.gateway.trim_end_matches('/');
    let public = args.public_url.as_deref().unwrap_or(gateway);
    let validator = Validator::new(args.auth_token.clone(), public);
    let call_sid = format!("CA{:016x}{:016x}", rand::random::<u64>(), index);
    let stream_sid = format!("MZ{:016x}{:016x}", rand::random::<u64>(), index);
    let form = CallForm {
        call_sid: call_sid.clone(),
        account_sid: "ACbench".into(),
        from: "+15550001234".into(),
        to: "+15550001111".into(),
        call_status: "ringing".into(),
        direction: "inbound".into(),
        ..Default::default()
    }
    .to_pairs();
    let resp = http
        .post(format!("{gateway}/twilio-voice"))
        .header("X-Twilio-Signature", validator.sign("/twilio-voice", &form))
        .form(&form)
        .send()
        .await?;
    let Instructions(verbs) = Instructions::parse(&resp.text().await?)?;
    let Some(parameters) = verbs.into_iter().find_map(|v| match v {
        Verb::ConnectStream { parameters, .. } => Some(parameters),
        _ => None,
    }) else {
        bail!("call {index} was not connected (is a worker answering?)");
    };
    let ws_url = format!(
        "{}/media",
        gateway
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut req = ws_url.into_client_request()?;
    req.headers_mut()
        .insert("X-Twilio-Signature", validator.sign_ws("/media").parse()?);
    // The worker side of this call listens before the stream can start.
    let mut inbound = nats.subscribe(subjects.call_in(&call_sid)).await?;
    let out_subject = subjects.call_out(&call_sid);
    nats.flush().await?;
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true).await?;
    let (mut tx, mut rx) = ws.split();
    let send = |m: TwilioMessage| WsMessage::Text(m.to_json().into());
    tx.send(send(TwilioMessage::connected())).await?;
    tx.send(send(TwilioMessage::Start {
        sequence_number: "1".into(),
        stream_sid: stream_sid.clone(),
        start: Start {
            stream_sid: stream_sid.clone(),
            account_sid: "ACbench".into(),
            call_sid,
            tracks: vec!["inbound".into()],
            custom_parameters: parameters.into_iter().collect(),
            media_format: Default::default(),
        },
    }))
    .await?;
    let mut hist = histogram()?;
    let mut in_hist = histogram()?;
    let mut out_seq = 0u64;
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut chunk = 0u32;
    let mut audio = vec![0xffu8; 160];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= until {
                    break;
                }
                chunk += 1;
                stamp(&mut audio, epoch);
                let msg = TwilioMessage::media(
                    u64::from(chunk) + 1, &stream_sid, chunk, chunk * 20, &audio);
                tx.send(send(msg)).await?;
            }
            msg = rx.next() => match msg {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Ok(ServerMessage::Media { media, .. }) = serde_json::from_str(&text)
                        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&media.payload)
                        && let Some(us) = since_stamp(&bytes, epoch)
                    {
                        hist.record(us.max(1))?;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("stream {index}: {e}"),
                None => bail!("stream {index}: the gateway closed the socket"),
            },
            Some(msg) = inbound.next() => {
                if let Some((us, out)) = echo(msg, &mut out_seq, epoch) {
                    in_hist.record(us.max(1))?;
                    nats.publish(out_subject.clone(), out.into()).await?;
                }
            }
        }
    }
    tx.send(send(TwilioMessage::Stop {
        sequence_number: (u64::from(chunk) + 2).to_string(),
        stream_sid,
        stop: Default::default(),
    }))
    .await?;
    let _ = tx.close().await;
    Ok(Timings {
        inbound: in_hist,
        outbound: hist,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let epoch = Instant::now();
    let mut pool = Vec::new();
    for _ in 0..args.nats_connections.max(1) {
        pool.push(
            async_nats::connect(&args.nats_url)
                .await
                .context("connecting to NATS")?,
        );
    }
    let nats = pool[0].clone();
    let subjects = Subjects::new(args.nats_subject_prefix.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(accept_offers(nats.clone(), subjects.clone(), stop.clone()));
    nats.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let baseline = args.gateway_pid.and_then(rss_kib);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    // Streams open over about a second, then all run until the same moment.
    let until = Instant::now() + Duration::from_secs(1) + Duration::from_secs(args.seconds);
    let args = std::sync::Arc::new(args);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.streams {
        let (args, http, subjects) = (args.clone(), http.clone(), subjects.clone());
        let nats = pool[index % pool.len()].clone();
        tasks.spawn(async move {
            let delay = Duration::from_secs(1).mul_f64(index as f64 / args.streams.max(1) as f64);
            tokio::time::sleep(delay).await;
            stream(&args, &http, &nats, &subjects, index, epoch, until).await
        });
    }
    // CPU while every stream is open; memory in the middle of it.
    tokio::time::sleep_until(until - Duration::from_secs(args.seconds)).await;
    let processes: Vec<(&str, u32)> = [
        ("gateway", args.gateway_pid),
        ("nats-server", args.nats_pid),
    ]
    .into_iter()
    .filter_map(|(name, pid)| Some((name, pid?)))
    .collect();
    let cpu = CpuWindow::start(&processes);
    tokio::time::sleep_until(until - Duration::from_secs(args.seconds) / 2).await;
    let peak = args.gateway_pid.and_then(rss_kib);
    tokio::time::sleep_until(until - Duration::from_millis(100)).await;
    let cpu = cpu.finish(args.streams);

    let mut out = histogram()?;
    let mut inbound = histogram()?;
    let mut failed = 0usize;
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(t) => {
                out.add(&t.outbound)?;
                inbound.add(&t.inbound)?;
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    worker.await??;

    println!(
        "streams={} seconds={} failed={failed}",
        args.streams, args.seconds
    );
    print("in", &inbound);
    print("out", &out);
    print_rss(
        "gateway",
        "stream",
        args.streams,
        baseline.zip(peak),
        "pass --gateway-pid",
    );
    print_cpu(&cpu, "pass --gateway-pid and --nats-pid");
    if failed > 0 {
        bail!("{failed} streams failed");
    }
    Ok(())
}
