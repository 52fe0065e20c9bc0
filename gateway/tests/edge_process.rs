//! The real `gateway` binary under megabyte webhook bodies: every one is refused with 413 and the
//! process's peak memory stays flat, because no body is buffered beyond the webhook limit.

mod common;

use anyhow::Context as _;
use common::*;
use switchboard_testkit::{NatsServer, Service};

/// `VmHWM` (peak resident memory) or `VmRSS` of process `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

/// How much the peak may grow over the whole run: a few buffers of the webhook limit per
/// concurrent request and allocator slack, far below one buffered megabyte per request.
const ALLOWED_GROWTH_KIB: u64 = 2 * 1024;
const ROUNDS: usize = 5;
const CONCURRENT: usize = 10;

#[tokio::test]
async fn megabyte_webhooks_leave_memory_flat() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats_server = NatsServer::start().await?;
    let port = switchboard_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut gateway = Service::spawn(
        "gateway",
        &[
            ("LISTEN", addr.clone()),
            ("PUBLIC_URL", PUBLIC_URL.to_owned()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
            ("NATS_URL", nats_server.url().to_owned()),
        ],
    )?;
    gateway.wait_ready(&addr).await?;
    let pid = gateway.pid().context("no pid")?;
    let socket = addr.parse()?;

    // What the issue measured: `a&a&...`, a megabyte of it, signed or not, declared or chunked.
    let megabyte = "a&".repeat(512 * 1024);
    let chunked = format!("{:x}\r\n{megabyte}\r\n0\r\n\r\n", megabyte.len());
    let request = |n: usize| {
        let signature = if n.is_multiple_of(3) {
            ""
        } else {
            "x-twilio-signature: bm9wZQ==\r\n"
        };
        let path = if n.is_multiple_of(2) {
            "/twilio-voice"
        } else {
            "/twilio-status"
        };
        let (framing, body) = if n % 4 < 2 {
            (
                format!("content-length: {}\r\n", megabyte.len()),
                megabyte.as_bytes(),
            )
        } else {
            (
                "transfer-encoding: chunked\r\n".to_owned(),
                chunked.as_bytes(),
            )
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: gw.example.com\r\n\
             content-type: application/x-www-form-urlencoded\r\n{signature}{framing}\r\n"
        );
        let expected = if signature.is_empty() { 403 } else { 413 };
        (head, body, expected)
    };

    // One round to warm the allocator and the runtime up, then the baseline.
    let run_round = |round: usize| {
        let request = &request;
        async move {
            let answers = futures::future::join_all((0..CONCURRENT).map(|i| async move {
                let (head, body, expected) = request(round * CONCURRENT + i);
                let (status, _) = raw_request(socket, &head, body, true).await?;
                anyhow::ensure!(status == expected, "got {status}, expected {expected}");
                anyhow::Ok(())
            }))
            .await;
            answers.into_iter().collect::<anyhow::Result<Vec<()>>>()
        }
    };
    run_round(0).await?;
    let before_peak = memory_kib(pid, "VmHWM:")?;
    let before_rss = memory_kib(pid, "VmRSS:")?;
    for round in 1..=ROUNDS {
        run_round(round).await?;
    }
    let after_peak = memory_kib(pid, "VmHWM:")?;
    let after_rss = memory_kib(pid, "VmRSS:")?;
    eprintln!(
        "gateway memory over {} one-megabyte webhooks ({CONCURRENT} at a time): \
         peak {before_peak} -> {after_peak} KiB, resident {before_rss} -> {after_rss} KiB",
        ROUNDS * CONCURRENT
    );
    assert!(
        after_peak <= before_peak + ALLOWED_GROWTH_KIB,
        "peak memory grew from {before_peak} KiB to {after_peak} KiB"
    );
    // Still serving.
    let health = reqwest::get(format!("http://{addr}/healthz")).await?;
    assert!(health.status().is_success());
    Ok(())
}
