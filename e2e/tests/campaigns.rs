//! Outbound campaigns end to end: two dialer replicas under their production NATS user place
//! the calls through callsim's fake Twilio, which connects them through the gateway to a
//! call-worker like any outbound call and reports busy, no-answer, failed and voicemail
//! callees, answering-machine verdicts and the account's calls-per-second queue as Twilio does.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::twilio_dialing::{Limits, Outcome};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript};
use serde_json::{Value, json};
use switchboard_e2e::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, CALLEE_LISTENS_THEN_HANGS_UP, CAMPAIGN_FROM, System,
};
use switchboard_testkit::{eventually, free_port};

const BUSY: &str = "+15550100001";
const NO_ANSWER: &str = "+15550100002";
const VOICEMAIL: &str = "+15550100003";
const FAILED: &str = "+15550100004";
const DNC: &str = "+15550100005";
const CLOSED: &str = "+15550100006";

/// The system, the fake Twilio it dials through, and its API base.
async fn setup(limits: Limits) -> anyhow::Result<(System, FakeTwilio, String)> {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Enough call capacity for every call the campaigns place at once.
    let system = System::start_with(&[("MAX_CALLS", "8".into())]).await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(CALLEE_LISTENS_THEN_HANGS_UP)?,
    )
    .await?;
    twilio.dialing().set_limits(limits).await;
    Ok((system, twilio, base))
}

async fn post(url: &str, body: Value) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    ensure!(status.is_success(), "{url}: {status} {body}");
    Ok(body)
}

async fn get(url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::Client::new()
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The campaign once `done` says it is where the test wants it.
async fn wait_for(
    dialer: &str,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let url = format!("{dialer}/api/campaigns/{id}");
    eventually(within, what, || {
        let url = url.clone();
        let done = &done;
        async move { get(&url).await.ok().filter(|c| done(c)) }
    })
    .await
}

fn contacts_of(campaign: &Value) -> HashMap<String, Value> {
    campaign["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["to"].as_str().unwrap_or_default().to_owned(), c.clone()))
        .collect()
}

fn results(contact: &Value) -> Vec<String> {
    contact["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["result"].as_str().unwrap_or("open").to_owned())
        .collect()
}

/// `HH:MM` of now + `hours` in UTC.
fn utc_clock(hours: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
    format!("{:02}:{:02}", at.hour(), at.minute())
}

async fn placed_total(dialer: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{dialer}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("dialer_calls_placed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_dial_a_campaign_at_its_caps_with_retries_dnc_and_calling_hours()
-> anyhow::Result<()> {
    // The account's CPS in the fake is the campaign's: a call the dialer placed too early
    // would wait in Twilio's queue.
    let (mut system, twilio, base) = setup(Limits {
        calls_per_second: Some(2.0),
        ..Default::default()
    })
    .await?;
    let dialing = twilio.dialing();
    dialing
        .set_outcomes(BUSY, vec![Outcome::Busy, Outcome::Human])
        .await;
    dialing
        .set_outcomes(NO_ANSWER, vec![Outcome::NoAnswer])
        .await;
    dialing
        .set_outcomes(VOICEMAIL, vec![Outcome::Machine, Outcome::Human])
        .await;
    dialing.set_outcomes(FAILED, vec![Outcome::Failed]).await;
    let env = [("TWILIO_CALLS_PER_SECOND", "2".to_owned())];
    let a = system.start_dialer(&base, &env).await?;
    let b = system.start_dialer(&base, &env).await?;

    post(
        &format!("{a}/api/dnc"),
        json!({"numbers": [DNC], "reason": "asked"}),
    )
    .await?;
    let mut contacts: Vec<Value> = (0..14)
        .map(|i| json!({"to": format!("+1555020{i:04}"), "vars": {"name": format!("Caller {i}")}}))
        .collect();
    for to in [BUSY, NO_ANSWER, VOICEMAIL, FAILED, DNC] {
        contacts.push(json!({"to": to}));
    }
    // Twelve hours ahead of UTC: far outside a window around UTC's now.
    contacts.push(json!({"to": CLOSED, "time_zone": "Etc/GMT-12"}));
    let created = post(
        &format!("{a}/api/campaigns"),
        json!({
            "agent_id": "front-desk",
            "from": CAMPAIGN_FROM,
            "calls_per_second": 2,
            "max_concurrent": 5,
            "contacts": contacts,
            "retry": {
                "busy": {"max_attempts": 3, "delay_seconds": 2},
                "no_answer": {"max_attempts": 2, "delay_seconds": 1},
                "voicemail": {"max_attempts": 2, "delay_seconds": 1},
            },
            "calling_hours": {"start": utc_clock(-2), "end": utc_clock(2)},
        }),
    )
    .await?;
    let id = created["id"].as_str().context("id")?.to_owned();

    let campaign = wait_for(
        &b,
        &id,
        Duration::from_secs(180),
        "every contact but the closed-hours one done",
        |c| {
            contacts_of(c)
                .values()
                .filter(|c| c["to"] != CLOSED)
                .all(|c| c["state"] == "done" || c["state"] == "dnc")
        },
    )
    .await
    .with_context(|| system.logs())?;
    let by_to = contacts_of(&campaign);
    ensure!(by_to.len() == 20, "{campaign:#}");
    // Every answered call ran its whole script through the gateway and a call-worker.
    for (sid, call) in twilio.calls().await {
        ensure!(
            call.error.is_none(),
            "{sid}: {:?}\n{}",
            call.error,
            system.logs()
        );
    }

    // Results and retries per policy.
    let expect: [(&str, &[&str], &str); 4] = [
        (BUSY, &["busy", "answered"], "answered"),
        (NO_ANSWER, &["no_answer", "no_answer"], "no_answer"),
        (VOICEMAIL, &["voicemail", "answered"], "answered"),
        (FAILED, &["failed"], "failed"),
    ];
    for (to, attempts, result) in expect {
        let c = &by_to[to];
        ensure!(results(c) == attempts, "{to}: {c:#}");
        ensure!(c["result"] == result, "{to}: {c:#}");
    }
    ensure!(
        by_to[VOICEMAIL]["attempts"][0]["answered_by"] == "machine_end_beep",
        "{:#}",
        by_to[VOICEMAIL]
    );
    let busy = &by_to[BUSY]["attempts"];
    let at = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
    };
    let waited = at(&busy[1]["dial_at"])? - at(&busy[0]["finished_at"])?;
    ensure!(
        waited >= time::Duration::seconds(2),
        "busy retried after {waited}"
    );
    for i in 0..14 {
        let c = &by_to[&format!("+1555020{i:04}")];
        ensure!(results(c) == ["answered"], "{c:#}");
    }
    // The do-not-call contact and the one outside its calling hours were never dialed.
    ensure!(by_to[DNC]["state"] == "dnc" && results(&by_to[DNC]).is_empty());
    ensure!(by_to[CLOSED]["state"] == "pending" && results(&by_to[CLOSED]).is_empty());
    ensure!(campaign["state"] == "running", "{campaign:#}");

    // What Twilio saw: one call per attempt (no contact dialed twice by the two replicas),
    // never more than 5 at once, never faster than the account's CPS (nothing waited in its
    // queue), and calls from both replicas.
    let placed = dialing.placed().await;
    let mut per_number: HashMap<&str, usize> = HashMap::new();
    for p in &placed {
        *per_number.entry(p.to.as_str()).or_default() += 1;
    }
    for (to, c) in &by_to {
        let attempts = c["attempts"].as_array().map_or(0, Vec::len);
        ensure!(
            per_number.get(to.as_str()).copied().unwrap_or(0) == attempts,
            "{to}: Twilio placed {:?}, the dialer recorded {attempts}",
            per_number.get(to.as_str())
        );
    }
    ensure!(placed.len() == 14 + 2 + 2 + 2 + 1, "{}", placed.len());
    ensure!(
        dialing.max_active().await <= 5,
        "{}",
        dialing.max_active().await
    );
    // A create that reaches Twilio late (the machine is busy), or a late claim making up the
    // calls it missed (docs/campaigns.md, the pacing model), can bring the next one closer than
    // an interval: it then waits, at most that interval (500 ms here). Most calls wait not at
    // all, so the mean stays under a quarter of an interval.
    let waits: Vec<Duration> = placed
        .iter()
        .filter_map(|p| Some(p.dequeued_at? - p.created_at))
        .collect();
    let longest = waits.iter().max().copied().unwrap_or_default();
    let mean = waits.iter().sum::<Duration>() / waits.len().max(1) as u32;
    ensure!(
        longest < Duration::from_millis(500) && mean < Duration::from_millis(125),
        "calls waited in Twilio's queue: longest {longest:?}, mean {mean:?}"
    );
    let mut created: Vec<_> = placed.iter().map(|p| p.created_at).collect();
    created.sort();
    let span = *created.last().context("calls")? - created[0];
    ensure!(
        span >= Duration::from_millis(500 * (created.len() as u64 - 1) - 200),
        "{} calls within {span:?}",
        created.len()
    );
    let (from_a, from_b) = (placed_total(&a).await?, placed_total(&b).await?);
    ensure!(
        from_a + from_b == placed.len() as u64,
        "{from_a} + {from_b}"
    );
    ensure!(
        from_a > 0 && from_b > 0,
        "one replica placed everything: {from_a} / {from_b}"
    );

    // The export has every contact with its attempts.
    let csv = reqwest::Client::new()
        .get(format!("{a}/api/campaigns/{id}/contacts.csv"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    ensure!(csv.lines().count() == 21, "{csv}");
    ensure!(
        csv.lines()
            .any(|l| l.contains(VOICEMAIL) && l.contains("voicemail answered")),
        "{csv}"
    );
    ensure!(
        !system.nats_log().contains("Violation"),
        "permissions violation:\n{}",
        system.nats_log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_dials_nothing_until_resumed_and_20429s_never_fail_a_contact()
-> anyhow::Result<()> {
    // One REST request at a time, each taking longer than the pace: some creates meet 20429.
    let (mut system, twilio, base) = setup(Limits {
        max_concurrent_requests: Some(1),
        request_latency: Duration::from_millis(700),
        ..Default::default()
    })
    .await?;
    let dialer = system
        .start_dialer(&base, &[("TWILIO_CALLS_PER_SECOND", "5".to_owned())])
        .await?;
    let contacts: Vec<Value> = (0..6)
        .map(|i| json!({"to": format!("+1555030{i:04}")}))
        .collect();
    let created = post(
        &format!("{dialer}/api/campaigns"),
        json!({
            "agent_id": "front-desk", "from": CAMPAIGN_FROM, "calls_per_second": 5,
            "max_concurrent": 6, "contacts": contacts, "paused": true,
        }),
    )
    .await?;
    let id = created["id"].as_str().context("id")?.to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let campaign = get(&format!("{dialer}/api/campaigns/{id}")).await?;
    ensure!(campaign["state"] == "paused", "{campaign:#}");
    ensure!(
        twilio.dialing().placed().await.is_empty(),
        "a paused campaign dialed"
    );

    post(&format!("{dialer}/api/campaigns/{id}/resume"), json!({})).await?;
    eventually(Duration::from_secs(20), "two calls placed", || async {
        (twilio.dialing().placed().await.len() >= 2).then_some(())
    })
    .await?;
    post(&format!("{dialer}/api/campaigns/{id}/pause"), json!({})).await?;
    // Requests already sent may still be answered; nothing more is dialed after that.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_pause = twilio.dialing().placed().await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        twilio.dialing().placed().await.len() == at_pause,
        "dialed while paused"
    );
    ensure!(
        at_pause < 6,
        "everything was dialed before the pause took effect"
    );

    post(&format!("{dialer}/api/campaigns/{id}/resume"), json!({})).await?;
    let campaign = wait_for(
        &dialer,
        &id,
        Duration::from_secs(120),
        "the campaign completed",
        |c| c["state"] == "completed",
    )
    .await
    .with_context(|| system.logs())?;
    for c in contacts_of(&campaign).values() {
        ensure!(results(c) == ["answered"], "{c:#}");
    }
    ensure!(twilio.dialing().placed().await.len() == 6);
    ensure!(
        twilio.dialing().refused_20429() > 0,
        "no request met the concurrent-request limit"
    );
    Ok(())
}
