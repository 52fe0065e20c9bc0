//! The floor under the media path's CPU per call-minute: the same hops as a caller's audio
//! takes through Switchboard, with no work of Switchboard's own at any of them.
//!
//! Two relay processes built on the libraries the services use (tokio, tokio-tungstenite,
//! async-nats) and nats-server with the users and grants k8s/ ships:
//!
//! - `in` (where the gateway is): accepts one WebSocket per call and publishes every text
//!   message it reads, as it is, on the call's `voice.call.<sid>.in` (as the gateway's user);
//! - `out` (where the call-worker is): subscribes to each call's `.in` (as the call-worker's
//!   user) and writes every message, as it is, to that call's own WebSocket (as the call-worker
//!   writes caller audio to its Realtime socket), straight from the subscription: no hand-off.
//!
//! This process plays the callers (a Twilio `media` message every 20 ms per call, starts
//! spread over two seconds) and the model's sockets (read and discard), and measures `utime +
//! stime` of the two relays and nats-server over the window, as `media_cpu` does. Only the
//! caller-to-model direction is relayed (about 87 % of the frames at 100 calls), so the figure is
//! a lower bound for the whole path.
//!
//! ```sh
//! cargo build --release -p switchboard-e2e --example relay_floor
//! ulimit -n 20000
//! ./target/release/examples/relay_floor 100 40   # calls, measured seconds
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use switchboard_bench::cpu::{CpuSample, CpuWindow, print_frame_table};
use switchboard_e2e::{nats_password, secured_nats};
use switchboard_proto::permissions::Role;
use switchboard_proto::subject::Subjects;
use switchboard_testkit::free_port;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Caller audio per message: 20 ms of mu-law.
const FRAME_BYTES: usize = 160;

fn call_sid(i: u64) -> String {
    format!("CA{i:032x}")
}

async fn nats_as(url: &str, role: &Role<'_>) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::with_user_and_password(role.user().to_owned(), nats_password(role))
        .connect(url)
        .await
        .context("connecting to NATS")
}

/// The gateway's place: WebSocket text in, NATS publish out.
async fn relay_in(nats_url: &str, port: u16) -> anyhow::Result<()> {
    let nats = nats_as(nats_url, &Role::Gateway).await?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready");
    // Runs until the bench kills this process.
    let tasks = TaskTracker::new();
    loop {
        let (tcp, _) = listener.accept().await?;
        let nats = nats.clone();
        tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            // The first message names the call.
            let Some(Ok(Message::Text(sid))) = ws.next().await else {
                return;
            };
            let subject = async_nats::Subject::from(Subjects::default().call_in(sid.as_str()));
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    let _ = nats.publish(subject.clone(), text.into()).await;
                }
            }
        });
    }
}

/// The call-worker's place: NATS subscription in, WebSocket text out.
async fn relay_out(nats_url: &str, sink: u16, calls: u64) -> anyhow::Result<()> {
    let nats = nats_as(nats_url, &Role::CallWorker).await?;
    let tasks = TaskTracker::new();
    for i in 0..calls {
        let mut sub = nats
            .subscribe(Subjects::default().call_in(&call_sid(i)))
            .await?;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{sink}/"))
            .await
            .context("connecting to the sink")?;
        tasks.spawn(async move {
            while let Some(msg) = sub.next().await {
                let Ok(text) = Utf8Bytes::try_from(msg.payload) else {
                    continue;
                };
                if ws.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
        });
    }
    nats.flush().await?;
    println!("ready");
    // Runs until the bench kills this process.
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Starts this example as relay `role`; returns once it said it is ready.
async fn spawn_relay(args: &[String]) -> anyhow::Result<tokio::process::Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        other => bail!("relay {args:?} did not start: {other:?}"),
    }
}

/// A Twilio `media` message as Media Streams sends it.
fn media_message(stream_sid: &str, n: u64, payload: &str) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{n}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#,
        n + 2,
        n * 20
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("in") => return relay_in(&args[1], args[2].parse()?).await,
        Some("out") => return relay_out(&args[1], args[2].parse()?, args[3].parse()?).await,
        _ => {}
    }
    let calls: u64 = args.first().map_or(Ok(100), |a| a.parse())?;
    let seconds: u64 = args.get(1).map_or(Ok(40), |a| a.parse())?;
    let warmup = Duration::from_secs(5);

    let nats = secured_nats().await?;
    // The sink and the callers, stopped when the window is read.
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    // The model's sockets: read everything, count it.
    let delivered = Arc::new(AtomicU64::new(0));
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_port = sink.local_addr()?.port();
    {
        let (delivered, sockets, stop) = (delivered.clone(), tasks.clone(), stop.clone());
        tasks.spawn(stop.clone().run_until_cancelled_owned(async move {
            while let Ok((tcp, _)) = sink.accept().await {
                let delivered = delivered.clone();
                sockets.spawn(stop.clone().run_until_cancelled_owned(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(_)) = ws.next().await {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }));
    }
    let in_port = free_port();
    let _in = spawn_relay(&["in".into(), nats.url().to_owned(), in_port.to_string()]).await?;
    let _out = spawn_relay(&[
        "out".into(),
        nats.url().to_owned(),
        sink_port.to_string(),
        calls.to_string(),
    ])
    .await?;
    let pids = [
        ("relay in", _in.id().context("relay in exited")?),
        ("relay out", _out.id().context("relay out exited")?),
        ("nats-server", nats.pid().context("nats-server exited")?),
    ];

    // The callers.
    let sent = Arc::new(AtomicU64::new(0));
    let payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([0xffu8; FRAME_BYTES])
    };
    for i in 0..calls {
        let (sent, payload) = (sent.clone(), payload.clone());
        tasks.spawn(stop.clone().run_until_cancelled_owned(async move {
            // Starts spread over two seconds, as calls are not all answered in one instant.
            tokio::time::sleep(Duration::from_millis(i * 2000 / calls.max(1))).await;
            let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{in_port}/")).await
            else {
                return;
            };
            let sid = call_sid(i);
            if ws.send(Message::text(sid.clone())).await.is_err() {
                return;
            }
            let stream_sid = format!("MZ{i:032x}");
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for n in 0.. {
                tick.tick().await;
                let text = media_message(&stream_sid, n, &payload);
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    tokio::time::sleep(warmup).await;
    let cpu = CpuWindow::start(&pids);
    let (sent_before, delivered_before) = (
        sent.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let figures = cpu.finish(usize::try_from(calls)?);
    let frames_sent = sent.load(Ordering::Relaxed) - sent_before;
    let frames = (delivered.load(Ordering::Relaxed) - delivered_before) as f64;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    if figures.len() < pids.len() {
        bail!("a measured process exited: only {figures:?} were read");
    }
    let (window, call_minutes) = (figures[0].window.as_secs_f64(), figures[0].call_minutes);

    println!(
        "calls {calls}, window {window:.1} s, {call_minutes:.1} call-minutes; \
         frames in the window: {frames_sent} sent, {frames} delivered"
    );
    let used: Vec<(&str, CpuSample)> = figures.iter().map(|f| (f.name.as_str(), f.used)).collect();
    let per_call_minute = print_frame_table(&used, window, call_minutes, frames, "floor");
    println!("FLOOR_CPU_PER_CALL_MINUTE {per_call_minute:.4}");
    Ok(())
}
