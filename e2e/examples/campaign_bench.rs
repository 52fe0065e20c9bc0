//! A large campaign against callsim's fake Twilio: how exactly the dialer keeps to the account's
//! calls per second, and what the dialer itself costs in CPU and memory.
//!
//! The whole system runs as real processes (nats-server with the production users, Postgres, the
//! gateway that receives the fake's signed status callbacks, one dialer). Every callee is busy,
//! so a call is over as soon as Twilio reports it: what is measured is the dialer's pacing and
//! bookkeeping, not the calls. The fake queues calls created faster than the account's CPS, as
//! Twilio does, and records when each call was created and when it left the queue.
//!
//! `cargo build --bins -p gateway -p call-worker -p persister -p realtime-sim -p tool-workers -p notifier -p dialer`
//! then `cargo run -p switchboard-e2e --example campaign_bench -- [contacts, default 10000] [calls per second, default 50]`.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::twilio_dialing::{Limits, Outcome};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript};
use serde_json::{Value, json};
use switchboard_e2e::{ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, System};
use switchboard_testkit::free_port;
use tokio::time::Instant;

/// User + system CPU time of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident memory of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let contacts: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let cps: f64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(50.0);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut system = System::start().await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str("[[step]]\nhangup = true\n")?,
    )
    .await?;
    twilio
        .dialing()
        .set_limits(Limits {
            calls_per_second: Some(cps),
            ..Default::default()
        })
        .await;
    let numbers: Vec<String> = (0..contacts).map(|i| format!("+1555{i:07}")).collect();
    for n in &numbers {
        twilio.dialing().set_outcomes(n, vec![Outcome::Busy]).await;
    }
    let dialer = system
        .start_dialer(&base, &[("TWILIO_CALLS_PER_SECOND", cps.to_string())])
        .await?;
    let pid = system.service_pid("dialer").context("the dialer's pid")?;
    let idle_rss = peak_rss_kib(pid).unwrap_or(0);
    let cpu_before = cpu_ticks(pid).unwrap_or(0);

    let client = reqwest::Client::new();
    let body = json!({
        "agent_id": "front-desk", "from": "+15550001111", "calls_per_second": cps,
        "max_concurrent": 200,
        "contacts": numbers.iter().map(|to| json!({"to": to})).collect::<Vec<_>>(),
    });
    let began = Instant::now();
    let created: Value = client
        .post(format!("{dialer}/api/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().context("id")?.to_owned();
    println!(
        "created a campaign of {contacts} contacts in {:?}",
        began.elapsed()
    );
    let url = format!("{dialer}/api/campaigns");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let list: Value = client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let campaign = list["campaigns"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == id.as_str()))
            .context("the campaign")?;
        if campaign["state"] == "completed" {
            break;
        }
        ensure!(
            began.elapsed() < Duration::from_secs_f64(contacts as f64 / cps * 3.0 + 60.0),
            "not done: {campaign}\n{}",
            system.logs()
        );
    }
    let took = began.elapsed();
    let cpu = cpu_ticks(pid).unwrap_or(0).saturating_sub(cpu_before);
    let peak_rss = peak_rss_kib(pid).unwrap_or(0);

    let placed = twilio.dialing().placed().await;
    ensure!(placed.len() == contacts, "{} calls placed", placed.len());
    let mut created: Vec<Instant> = placed.iter().map(|p| p.created_at).collect();
    created.sort();
    let span = (*created.last().context("calls")? - created[0]).as_secs_f64();
    let rate = (created.len() - 1) as f64 / span;
    let gaps: Vec<f64> = created
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    // The fake receives requests late and together when its own process is not scheduled:
    // the longest gap shows how long it went without receiving one.
    let max_gap = gaps.iter().copied().fold(0.0, f64::max);
    // The most calls created within any one second.
    let mut most_in_a_second = 0;
    let mut start = 0;
    for end in 0..created.len() {
        while created[end] - created[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most_in_a_second = most_in_a_second.max(end - start + 1);
    }
    let mut waits: Vec<f64> = placed
        .iter()
        .filter_map(|p| Some((p.dequeued_at? - p.created_at).as_secs_f64() * 1000.0))
        .collect();
    waits.sort_by(f64::total_cmp);
    let queued = waits.iter().filter(|w| **w > 5.0).count();
    println!(
        "{contacts} calls at a cap of {cps}/s: {rate:.2} calls/s over {span:.1} s ({:.2}% of the cap); \
         campaign done after {:.1} s",
        rate / cps * 100.0,
        took.as_secs_f64()
    );
    println!(
        "most calls created in any 1 s: {most_in_a_second}; shortest gap {min_gap:.1} ms, longest {max_gap:.1} ms (interval {:.1} ms)",
        1000.0 / cps
    );
    println!(
        "calls that waited over 5 ms in Twilio's queue: {queued}; longest wait {:.1} ms, p99 {:.1} ms",
        waits.last().copied().unwrap_or(0.0),
        waits
            .get(waits.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0.0)
    );
    println!(
        "dialer CPU: {:.1} s for the campaign ({:.1}% of one core); peak RSS {peak_rss} KiB ({idle_rss} KiB at start)",
        cpu as f64 / 100.0,
        cpu as f64 / 100.0 / took.as_secs_f64() * 100.0
    );
    Ok(())
}
