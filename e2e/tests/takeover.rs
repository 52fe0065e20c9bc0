//! A call outlives the call-worker serving it, with every part a real process: the owner of a
//! call in progress is killed (kill -9) or paused (SIGSTOP), and another call-worker takes the
//! call over; with no other worker, the caller hears the agent's apology and is transferred, and
//! the record is closed with `worker_lost` under the gateway's fencing claim.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallReport, CallerScript, EndedBy};
use futures::StreamExt as _;
use serde_json::Value;
use switchboard_e2e::{AUTH_TOKEN, CALLS_TOKEN, System, get_session};
use switchboard_proto::Role as Speaker;
use switchboard_proto::event::{EndReason, GATEWAY_SEQ_BASE, epoch_of};
use switchboard_proto::permissions::Role;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, EVENTS_STREAM, Message as _, call_event};
use switchboard_twilio::twiml::{Instructions, Verb};

/// Greeting, a question asked while the owner dies, the answer (from the new owner), goodbye.
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

const SCRIPT: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
say_ms = 1800

[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
say_ms = 1000

[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
hangup = true
"#;

fn call_sid(n: u8) -> String {
    format!("CA{:032x}", 0xfeed_0000_u128 + u128::from(n))
}

/// Watches calls' events as they are published (core subscription, the persister's user).
struct Watch {
    sub: async_nats::Subscriber,
}

impl Watch {
    /// Watches `call_sid`'s events (`*`: every call's).
    async fn start(system: &System, call_sid: &str) -> anyhow::Result<Self> {
        let nats = system.connect_as(&Role::Persister).await?;
        let sub = nats
            .subscribe(Subjects::default().call_events(call_sid))
            .await?;
        nats.flush().await?;
        Ok(Self { sub })
    }

    /// The next event matching `pick`.
    async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&CallEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.sub.next())
                .await
                .context("no matching event in time")?
                .context("event subscription ended")?;
            let event = CallEvent::decode(msg.payload)?;
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
    }

    /// The worker that claimed the call (its first `owner` event).
    async fn owner(&mut self) -> anyhow::Result<String> {
        self.until(|e| match &e.body {
            Some(call_event::Body::Owner(o)) => Some(o.worker_id.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the assistant's first transcript entry (the greeting has been said).
    async fn greeted(&mut self) -> anyhow::Result<()> {
        self.until(|e| match &e.body {
            Some(call_event::Body::Transcript(t)) if t.role() == Speaker::Assistant => Some(()),
            _ => None,
        })
        .await
    }
}

/// The call's events as stored in VOICE_EVENTS, with their stream sequences.
async fn stored_events(system: &System, call_sid: &str) -> anyhow::Result<Vec<(u64, CallEvent)>> {
    // The broker runs with production users: the call-worker's may read the events stream
    // message by message (as a taking-over worker does).
    let nats = system.connect_as(&Role::CallWorker).await?;
    let js = async_nats::jetstream::new(nats);
    let stream = js.get_stream(EVENTS_STREAM).await?;
    let mut events = Vec::new();
    let last = stream.cached_info().state.last_sequence;
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let event = CallEvent::decode(msg.payload)?;
        if event.call_sid == call_sid {
            events.push((msg.sequence, event));
        }
    }
    Ok(events)
}

fn assert_completed(report: &CallReport, logs: &dyn Fn() -> String) -> anyhow::Result<()> {
    ensure!(report.connected, "never connected: {report:#?}\n{}", logs());
    ensure!(
        report.ended_by == EndedBy::Caller,
        "the call did not complete its script: {report:#?}\n{}",
        logs()
    );
    ensure!(report.step_errors.is_empty(), "{report:#?}\n{}", logs());
    Ok(())
}

fn transcript(session: &Value) -> Vec<(String, String)> {
    session["transcript"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["role"].as_str().unwrap_or_default().to_owned(),
                        e["text"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// When in the call the owner is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// The caller is asking its question.
    CallerSpeaks,
    /// The agent is saying its greeting.
    AgentSpeaks,
    /// The caller has asked its question and the model's tool call is written ahead: the
    /// caller waits for the answer while the tool runs.
    ToolRuns,
}

/// Places a call with two call-workers, kills its owner at `moment`, and checks that the caller
/// hears the agent again, the call completes its script, and the record is one complete call.
async fn kill_9_of_the_owner(n: u8, moment: Moment) -> anyhow::Result<()> {
    let system = System::start_with_workers(2, &[]).await?;
    let sid = call_sid(n);
    let mut watch = Watch::start(&system, &sid).await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.call_sid = Some(sid.clone());
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script = CallerScript::from_toml_str(SCRIPT)?;
    let began = tokio::time::Instant::now();
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    let owner = watch.owner().await?;
    match moment {
        Moment::CallerSpeaks => {
            watch.greeted().await?;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // The greeting is about 3.5 s of audio.
        Moment::AgentSpeaks => tokio::time::sleep(Duration::from_millis(1500)).await,
        Moment::ToolRuns => {
            // The tool call is written ahead and the caller's question is in the record (a
            // turn whose transcript had not arrived when its owner died stays out of the
            // record: docs/architecture.md, section 8).
            let (mut dispatched, mut asked) = (false, false);
            watch
                .until(|e| {
                    match &e.body {
                        Some(call_event::Body::Dispatched(_)) => dispatched = true,
                        Some(call_event::Body::Transcript(t)) if t.role() == Speaker::User => {
                            asked = true
                        }
                        _ => {}
                    }
                    (dispatched && asked).then_some(())
                })
                .await?
        }
    }
    system.signal_worker(&owner, "KILL").await?;
    let killed_ms = began.elapsed().as_millis() as u64;
    let successor = watch.owner().await?;
    ensure!(
        successor != owner,
        "the dead worker cannot take its call back"
    );

    let report = call.await??;
    let logs = || system.logs();
    assert_completed(&report, &logs)?;
    ensure!(
        report.heard_segments.iter().any(|s| s.start_ms > killed_ms),
        "the caller heard the agent again after the takeover: {report:#?}"
    );

    let session = get_session(&system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == "caller_hung_up",
        "{session:#}\n{}",
        logs()
    );
    ensure!(session["takeovers"] == 1, "{session:#}");
    let lines = transcript(&session);
    ensure!(
        lines.iter().filter(|(who, _)| who == "assistant").count() >= 2
            && lines.iter().filter(|(who, _)| who == "user").count() >= 2,
        "both owners' parts of the conversation are in one record: {session:#}"
    );
    let tools = session["tools"].as_array().context("tools")?;
    ensure!(
        tools.len() == 1 && tools[0]["name"] == "lookup_customer",
        "the caller's question looked the caller up once: {session:#}"
    );
    // The tool's handler ran once, whichever owner asked for it: a request sent again is
    // answered from the stored result and counted as a duplicate.
    let (runs, metrics) = system.tool_runs("lookup_customer").await?;
    ensure!(runs == 1.0, "lookup_customer ran {runs} times\n{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_while_the_caller_speaks_is_taken_over() -> anyhow::Result<()> {
    kill_9_of_the_owner(1, Moment::CallerSpeaks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_while_the_agent_speaks_is_taken_over() -> anyhow::Result<()> {
    kill_9_of_the_owner(5, Moment::AgentSpeaks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_while_a_tool_runs_is_taken_over_and_the_tool_runs_once()
-> anyhow::Result<()> {
    kill_9_of_the_owner(6, Moment::ToolRuns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_never_speaks_again_after_the_takeover() -> anyhow::Result<()> {
    // Three workers: the paused one stays in the offer queue group, so a takeover offer may
    // reach it and go unanswered (then the gateway offers again); two others can take the call.
    let system = System::start_with_workers(3, &[]).await?;
    let sid = call_sid(2);
    let mut watch = Watch::start(&system, &sid).await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.call_sid = Some(sid.clone());
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script = CallerScript::from_toml_str(SCRIPT)?;
    let began = tokio::time::Instant::now();
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    let owner = watch.owner().await?;
    watch.greeted().await?;
    system.signal_worker(&owner, "STOP").await?;
    let paused_ms = began.elapsed().as_millis() as u64;
    let successor = watch.owner().await?;
    ensure!(successor != owner);
    ensure!(
        system.worker_ids.contains(&successor),
        "another worker took the call, not the gateway closing it: {successor}"
    );
    // The paused worker wakes up after it was replaced.
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.signal_worker(&owner, "CONT").await?;

    // The call goes on with the new owner to the end of its script, and its record is one
    // complete call.
    let report = call.await??;
    let logs = || system.logs();
    assert_completed(&report, &logs)?;
    ensure!(report.protocol_errors.is_empty(), "{report:#?}");
    ensure!(
        report.heard_segments.iter().any(|s| s.start_ms > paused_ms),
        "the caller heard the agent again after the takeover: {report:#?}"
    );
    let session = get_session(&system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == "caller_hung_up" && session["takeovers"] == 1,
        "{session:#}\n{}",
        logs()
    );

    // None of the paused worker's events was stored after the claim that replaced it.
    let events = stored_events(&system, &sid).await?;
    let takeover_at = events
        .iter()
        .find_map(|(seq, e)| match &e.body {
            Some(call_event::Body::Owner(o)) if o.epoch == 1 => Some(*seq),
            _ => None,
        })
        .context("no epoch-1 claim stored")?;
    let late: Vec<_> = events
        .iter()
        .filter(|(seq, e)| *seq > takeover_at && e.seq < GATEWAY_SEQ_BASE && epoch_of(e.seq) == 0)
        .collect();
    ensure!(
        late.is_empty(),
        "the replaced owner's events were accepted: {late:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_worker_left_the_caller_hears_the_apology_and_the_record_is_closed_worker_lost()
-> anyhow::Result<()> {
    // Twilio's REST API is callsim's fake, which places the call and follows the gateway's
    // update of it as Twilio does.
    let port = switchboard_testkit::free_port();
    let system = System::start_with_workers(
        1,
        &[
            ("TAKEOVER_TIMEOUT_MS", "1500".into()),
            ("TWILIO_API_BASE", format!("http://127.0.0.1:{port}")),
        ],
    )
    .await?;
    let mut watch = Watch::start(&system, "*").await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(SCRIPT)?,
    )
    .await?;
    let created: Value = reqwest::Client::new()
        .post(format!("{}/calls", system.gateway))
        .bearer_auth(CALLS_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"to":"+15550003333","from":"+15550001111"}"#)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let sid = created["call_sid"].as_str().context("call_sid")?.to_owned();

    let owner = watch.owner().await?;
    watch.greeted().await?;
    system.signal_worker(&owner, "KILL").await?;

    // The gateway fences the call and closes its record ...
    let claimer = watch.owner().await?;
    ensure!(claimer != owner, "the gateway's own claim");
    let ended = watch
        .until(|e| match &e.body {
            Some(call_event::Body::Ended(end)) => Some(end.reason.clone()),
            _ => None,
        })
        .await?;
    ensure!(ended == EndReason::WorkerLost.as_str(), "{ended}");
    let session = get_session(&system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == EndReason::WorkerLost.as_str(),
        "{session:#}\n{}",
        system.logs()
    );
    // ... and the caller hears the agent's apology, then the transfer to its number.
    let call = switchboard_testkit::eventually(Duration::from_secs(10), "the apology", || {
        let twilio = &twilio;
        let sid = sid.clone();
        async move {
            let calls = twilio.calls().await;
            calls.get(&sid).filter(|c| !c.twiml.is_empty()).cloned()
        }
    })
    .await?;
    let Instructions(verbs) = Instructions::parse(&call.twiml[0])?;
    ensure!(
        verbs
            == vec![
                Verb::Say(switchboard_agents::DEFAULT_APOLOGY.into()),
                Verb::dial("+15550002222")
            ],
        "{verbs:?}"
    );
    ensure!(call.transferred_to.as_deref() == Some("+15550002222"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_hands_its_call_over() -> anyhow::Result<()> {
    let system = System::start_with_workers(2, &[("DRAIN_SECONDS", "2".into())]).await?;
    let sid = call_sid(4);
    let mut watch = Watch::start(&system, &sid).await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.call_sid = Some(sid.clone());
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script = CallerScript::from_toml_str(SCRIPT)?;
    let call = tokio::spawn(async move { callsim::place_call(&cfg, &script).await });

    let owner = watch.owner().await?;
    watch.greeted().await?;
    system.signal_worker(&owner, "TERM").await?;
    let (successor, reason) = watch
        .until(|e| match &e.body {
            Some(call_event::Body::Owner(o)) => Some((o.worker_id.clone(), o.reason.clone())),
            _ => None,
        })
        .await?;
    ensure!(successor != owner, "{successor}");
    ensure!(reason == "hand_over", "{reason}");

    let report = call.await??;
    let logs = || system.logs();
    assert_completed(&report, &logs)?;
    let session = get_session(&system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == "caller_hung_up",
        "no worker_shutdown cut while another worker has room: {session:#}\n{}",
        logs()
    );
    Ok(())
}
