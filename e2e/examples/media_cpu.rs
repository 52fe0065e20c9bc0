//! CPU per call-minute of the media path: nats-server (production users and grants), gateway,
//! call-worker and realtime-sim as real processes, and `callsim load` placing N calls at once
//! that talk with the agent for the whole run (the caller speaks 2 s, the model answers, again).
//!
//! The calls start over the first half of a warm-up; after it (every call connected and
//! greeted), the bench reads `utime + stime` of the
//! gateway, the call-worker and nats-server from `/proc/<pid>/stat` (and their threads' context
//! switches from `/proc/<pid>/task/*/status`) at the start and the end of the measured window,
//! and counts call-minutes by sampling the gateway's `gateway_active_streams` every second. It
//! prints CPU-seconds per call-minute of each process and their sum, the share of it spent in
//! the kernel (`stime`: syscalls and the network stack), context switches and CPU per frame,
//! the gateway's own per-frame p99 (`gateway_frame_processing_seconds`), frames sent by the
//! callers against frames the gateway received (lost frames), the media path's drop counters,
//! and callsim's load report (failed calls, response latency, mark-echo lateness).
//!
//! The binaries come from `SWITCHBOARD_BIN_DIR` (default: this example's own target profile), so
//! two builds are measured with the same command:
//!
//! ```sh
//! cargo build --release -p gateway -p call-worker -p realtime-sim -p callsim --bins
//! ulimit -n 20000
//! SWITCHBOARD_BIN_DIR=$PWD/target/release \
//!   cargo run -q -p switchboard-e2e --example media_cpu -- 100 60
//! ```
//!
//! Arguments: concurrent calls (default 100), measured seconds (default 60), warm-up seconds
//! (default 10, plus 1 per 50 calls).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use switchboard_bench::cpu::{CpuSample, print_frame_table};
use switchboard_e2e::{ACCOUNT_SID, AUTH_TOKEN, metric_sum, nats_env, secured_nats};
use switchboard_proto::permissions::Role;
use switchboard_testkit::{Service, free_port, process::binary};
use tokio::process::Command;
use tokio::time::Instant;

/// One agent for every number, no tools: the load is the media path, not the tool path.
const AGENTS: &str = r#"
[[agent]]
id = "load"
numbers = ["*"]
instructions = "You are the front desk of a dental clinic."
greeting = "Thanks for calling Acme Dental, this is the front desk. How can I help you today?"
"#;

/// realtime-sim's defaults: every answer is its fallback line (about 2.3 s of audio).
const MODEL: &str = "hear = []\n";

/// Caller turns of the load: speak for 2 s, listen to the answer; repeated past any run length.
fn caller_script() -> String {
    let mut s = String::from("[[step]]\nlisten = { max_ms = 20000, silence_ms = 800 }\n");
    for _ in 0..400 {
        s.push_str(
            "[[step]]\nsay_ms = 2000\n[[step]]\nlisten = { max_ms = 20000, silence_ms = 800 }\n",
        );
    }
    s.push_str("[[step]]\nhangup = true\n");
    s
}

async fn metrics(client: &reqwest::Client, addr: &str) -> String {
    let url = format!("http://{addr}/metrics");
    match client.get(&url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first sample of `name` whose line contains `label`.
fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers"))
        .collect::<anyhow::Result<_>>()?;
    let calls = args.first().copied().unwrap_or(100);
    let seconds = args.get(1).copied().unwrap_or(60);
    let warmup = args.get(2).copied().unwrap_or(10 + calls / 50);

    let dir = tempfile::tempdir()?;
    let agents = dir.path().join("agents.toml");
    let model = dir.path().join("model.toml");
    let caller = dir.path().join("caller.toml");
    std::fs::write(&agents, AGENTS)?;
    std::fs::write(&model, MODEL)?;
    std::fs::write(&caller, caller_script())?;
    let path = |p: &Path| p.display().to_string();

    let nats = secured_nats().await?;
    let [sim, worker, gateway] = [(); 3].map(|_| free_port());
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let quiet = [("RUST_LOG", "warn".to_owned())];
    // The services start with a cleared environment; a runtime setting to compare is passed on.
    let runtime: Vec<(&str, String)> = ["TOKIO_WORKER_THREADS"]
        .into_iter()
        .filter_map(|k| Some((k, std::env::var(k).ok()?)))
        .collect();

    let sim_proc = Service::spawn(
        "realtime-sim",
        &[
            ("LISTEN", addr(sim)),
            ("REALTIME_SIM_SCRIPT", path(&model)),
            quiet[0].clone(),
        ],
    )?;
    let mut worker_env = nats_env(&Role::CallWorker);
    worker_env.extend([
        ("LISTEN", addr(worker)),
        ("NATS_URL", nats.url().to_owned()),
        ("AGENTS_FILE", path(&agents)),
        ("REALTIME_URL", format!("ws://{}/v1/realtime", addr(sim))),
        ("MAX_CALLS", (calls + 10).to_string()),
        ("WORKER_ID", "call-worker-0".to_owned()),
        quiet[0].clone(),
    ]);
    worker_env.extend(runtime.iter().cloned());
    let mut worker_proc = Service::spawn("call-worker", &worker_env)?;
    worker_proc.wait_ready(&addr(worker)).await?;
    let mut gateway_env = nats_env(&Role::Gateway);
    gateway_env.extend([
        ("LISTEN", addr(gateway)),
        ("NATS_URL", nats.url().to_owned()),
        ("PUBLIC_URL", format!("http://{}", addr(gateway))),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_owned()),
        ("AGENTS_FILE", path(&agents)),
        ("MAX_STREAMS", (calls + 10).to_string()),
        quiet[0].clone(),
    ]);
    gateway_env.extend(runtime.iter().cloned());
    let mut gateway_proc = Service::spawn("gateway", &gateway_env)?;
    gateway_proc.wait_ready(&addr(gateway)).await?;

    let pids: Vec<(&'static str, u32)> = vec![
        ("gateway", gateway_proc.pid().context("gateway exited")?),
        ("call-worker", worker_proc.pid().context("worker exited")?),
        ("nats-server", nats.pid().context("nats-server exited")?),
    ];
    let total = warmup + seconds + 3;
    let mut load = Command::new(binary("callsim")?);
    load.args(["load", "--json", "--gateway"])
        .arg(format!("http://{}", addr(gateway)))
        .args(["--account-sid", ACCOUNT_SID, "--script"])
        .arg(&caller)
        .args(["--calls", &calls.to_string()])
        .args(["--concurrency", &calls.to_string()])
        .args(["--duration-s", &total.to_string()])
        // Calls arrive over the first half of the warm-up, not all in one instant.
        .args(["--ramp-s", &(warmup as f64 / 2.0).to_string()])
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn")
        // The load generator keeps its own defaults whatever the services are given.
        .env_remove("TOKIO_WORKER_THREADS")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let load = load.spawn().context("starting callsim")?;
    let load = tokio::spawn(load.wait_with_output());

    let client = reqwest::Client::new();
    let gw = addr(gateway);
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let sample =
        |pids: &[(&'static str, u32)]| -> anyhow::Result<HashMap<&'static str, CpuSample>> {
            pids.iter()
                .map(|(n, p)| {
                    Ok((
                        *n,
                        CpuSample::read(*p).with_context(|| format!("{n} exited"))?,
                    ))
                })
                .collect()
        };
    let before = sample(&pids)?;
    let gw_before = metrics(&client, &gw).await;
    let started = Instant::now();
    let mut stream_seconds = 0.0;
    let mut last = started;
    let mut active = metric_value(&gw_before, "gateway_active_streams", "").unwrap_or(0.0);
    let load_before = std::fs::read_to_string("/proc/loadavg")?;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let text = metrics(&client, &gw).await;
        let next = metric_value(&text, "gateway_active_streams", "").unwrap_or(0.0);
        stream_seconds += (active + next) / 2.0 * (now - last).as_secs_f64();
        active = next;
        last = now;
    }
    let after = sample(&pids)?;
    let window = started.elapsed().as_secs_f64();
    let gw_after = metrics(&client, &gw).await;
    let load_after = std::fs::read_to_string("/proc/loadavg")?;

    let output = load.await??;
    let gw_end = metrics(&client, &gw).await;
    let wk_end = metrics(&client, &addr(worker)).await;
    let report: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "callsim's report: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;

    let call_minutes = stream_seconds / 60.0;
    if call_minutes <= 0.0 {
        bail!("no call was in progress during the window");
    }
    let delta = |name: &str, metric: &str| {
        metric_sum(&gw_after, name, metric) - metric_sum(&gw_before, name, metric)
    };
    let frames_in = delta("gateway_frames_in_total", "");
    let frames_out = delta("gateway_frames_out_total", "");
    let frames = frames_in + frames_out;
    println!(
        "calls {calls}, window {window:.1} s, {:.1} calls in progress on average, {call_minutes:.1} call-minutes",
        stream_seconds / window
    );
    println!(
        "load average: {} at start, {} at end",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("frames in the window: {frames_in} in, {frames_out} out");
    let used: Vec<(&str, CpuSample)> = pids
        .iter()
        .map(|(name, _)| (*name, after[name].since(&before[name])))
        .collect();
    let per_call_minute = print_frame_table(&used, window, call_minutes, frames, "media path");
    println!("CPU_PER_CALL_MINUTE {per_call_minute:.4}");
    for dir in ["in", "out"] {
        let label = format!("direction=\"{dir}\",quantile=\"0.99\"");
        let p99 = metric_value(&gw_end, "gateway_frame_processing_seconds", &label);
        println!(
            "gateway own frame processing p99 {dir}: {:.3} ms",
            p99.unwrap_or(f64::NAN) * 1e3
        );
    }
    let sent = report["frames_sent"].as_f64().unwrap_or(0.0);
    let received = metric_sum(&gw_end, "gateway_frames_in_total", "event=\"media\"");
    println!(
        "caller frames: {sent} sent, {received} received by the gateway ({} lost)",
        sent - received
    );
    for (name, text) in [
        ("gateway_audio_dropped_total", &gw_end),
        ("worker_audio_dropped_total", &wk_end),
        ("worker_outbound_dropped_total", &wk_end),
        ("worker_unconfirmed_audio_dropped_total", &wk_end),
    ] {
        println!("{name}: {}", metric_sum(text, name, "") + 0.0);
    }
    println!(
        "callsim: {} started, {} ok, {} failed, {} rejected; response latency p50/p99 {}/{} ms; \
         mark-echo lateness p99 {} ms; greeting p99 {} ms",
        report["calls_started"],
        report["ok"],
        report["failed"],
        report["rejected"],
        report["response_latency_ms"]["p50"],
        report["response_latency_ms"]["p99"],
        report["mark_echo_lateness_ms"]["p99"],
        report["greeting_latency_ms"]["p99"],
    );
    if let Some(failures) = report["failures"].as_array() {
        for f in failures {
            println!("  failure: {f}");
        }
    }
    drop(sim_proc);
    Ok(())
}
