//! The call's end carries its recording: for a call the caller hangs up and one the agent
//! hangs up (`end_call`), the worker's `ended` event in VOICE_EVENTS, the persister's record
//! (`GET /api/sessions/{call_sid}`) and the `call.ended` webhook (verified by the official
//! Standard Webhooks library) name the same recording, with the same duration.

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::{CallReport, CallerScript, EndedBy};
use common::WebhookReceiver;
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, System};
use switchboard_proto::permissions::Role;
use switchboard_proto::{CallEnded, CallEvent, EVENTS_STREAM, Message as _, call_event};
use switchboard_testkit::{eventually, workspace_root};

/// The call's `ended` event as stored in VOICE_EVENTS (read as a taking-over worker reads it).
async fn ended_event(system: &System, call_sid: &str) -> anyhow::Result<CallEnded> {
    let js = async_nats::jetstream::new(system.connect_as(&Role::CallWorker).await?);
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut ended = None;
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let event = CallEvent::decode(msg.payload)?;
        if event.call_sid == call_sid
            && let Some(call_event::Body::Ended(e)) = event.body
        {
            ended = Some(e);
        }
    }
    ended.context("no ended event")
}

/// The persister's record of the call once it carries its recording.
async fn session_with_recording(system: &System, call_sid: &str) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let url = format!("{}/api/sessions/{call_sid}", system.persister);
    eventually(Duration::from_secs(30), "the call's recording", || {
        let req = http.get(&url).bearer_auth(ADMIN_TOKEN).send();
        async move {
            let body: Value = req.await.ok()?.error_for_status().ok()?.json().await.ok()?;
            (!body["recording"].is_null() && !body["ended_at"].is_null()).then_some(body)
        }
    })
    .await
    .with_context(|| system.logs())
}

/// Runs the call and checks that `ended`, the record and the webhook agree on its recording.
async fn check_call(
    system: &System,
    receiver: &mut WebhookReceiver,
    script: &CallerScript,
    ended_by: EndedBy,
    end_reason: &str,
) -> anyhow::Result<()> {
    let mut cfg = callsim::CallConfig::new(&system.gateway, switchboard_e2e::AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let report: CallReport = callsim::place_call(&cfg, script)
        .await
        .with_context(|| system.logs())?;
    ensure!(
        report.connected && report.ended_by == ended_by,
        "{report:#?}\n{}",
        system.logs()
    );
    let sid = report.call_sid.as_str();

    let session = session_with_recording(system, sid).await?;
    ensure!(session["end_reason"] == end_reason, "{session:#}");
    let ended = ended_event(system, sid).await?;
    ensure!(ended.reason == end_reason, "{ended:?}");
    let recording = ended
        .recording
        .clone()
        .with_context(|| format!("ended carries no recording: {ended:?}\n{}", system.logs()))?;
    ensure!(
        recording.location == format!("{sid}/1.wav") && recording.channels == 2,
        "{recording:?}"
    );
    ensure!(
        session["recording"]["duration_ms"] == recording.duration_ms
            && session["recording"]["channels"] == recording.channels,
        "record {:#} vs ended {recording:?}",
        session["recording"]
    );
    // The recording covers the call as the caller had it.
    ensure!(
        recording.duration_ms.abs_diff(report.duration_ms) < 500,
        "recording of {} ms for a call of {} ms",
        recording.duration_ms,
        report.duration_ms
    );

    let (kind, body) = receiver
        .next(Duration::from_secs(30))
        .await
        .with_context(|| system.logs())?;
    ensure!(
        kind == "call.ended" && body["data"]["call_sid"] == sid,
        "{body:#}"
    );
    let data = &body["data"];
    let hooked = &data["recording"];
    ensure!(
        hooked["location"] == recording.location.as_str()
            && hooked["duration_ms"] == recording.duration_ms
            && hooked["channels"] == recording.channels,
        "webhook {hooked:#} vs ended {recording:?}"
    );
    // The URL is the persister's, where the record's points.
    let url = session["recording"]["url"].as_str().context("url")?;
    ensure!(
        hooked["url"].as_str().is_some_and(|u| u.ends_with(url))
            && data["recording_url"] == hooked["url"],
        "webhook {data:#} vs record {url}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_the_record_and_the_webhook_carry_the_same_recording() -> anyhow::Result<()> {
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    // The same conversation, but the agent ends it: `end_call` before its goodbye.
    let model = dir.path().join("model.toml");
    let script = std::fs::read_to_string(root.join("sims/scenarios/dental.model.toml"))?;
    let goodbye = "# Turn 3: the caller says goodbye.\n[[response]]\n";
    ensure!(
        script.contains(goodbye),
        "the dental model script's goodbye"
    );
    let agent_ends = script.replacen(
        goodbye,
        "[[response]]\ncall = { name = \"end_call\", arguments = '{\"reason\":\"goodbye\"}' }\n\n\
         [[response]]\n",
        1,
    );
    std::fs::write(&model, agent_ends)?;
    let mut receiver = WebhookReceiver::start()?;
    let system = System::start_custom(
        &root.join("agents/agents.toml"),
        &model,
        &[],
        &receiver.webhooks_file(&["call.ended"]),
    )
    .await?;

    // The agent hangs up: the caller listens on after its goodbye until the line closes.
    let caller = std::fs::read_to_string(root.join("sims/scenarios/dental.caller.toml"))?;
    let hangup = "[[step]]\nhangup = true";
    ensure!(
        caller.trim_end().ends_with(hangup),
        "the dental caller hangs up last"
    );
    let listens = caller.trim_end().trim_end_matches(hangup).to_owned()
        + "[[step]]\nlisten = { max_ms = 30000, silence_ms = 20000 }\n";
    let agent_hangs_up = CallerScript::from_toml_str(&listens)?;
    check_call(
        &system,
        &mut receiver,
        &agent_hangs_up,
        EndedBy::Agent,
        "end_call",
    )
    .await
    .context("the agent hangs up")?;

    // The caller hangs up in the middle of the agent's long answer.
    let caller_hangs_up = CallerScript::from_toml_str(
        "[[step]]\nlisten = { max_ms = 20000, silence_ms = 800 }\n\
         [[step]]\nsay_ms = 1800\n\
         [[step]]\npause_ms = 2500\n\
         [[step]]\nhangup = true\n",
    )?;
    check_call(
        &system,
        &mut receiver,
        &caller_hangs_up,
        EndedBy::Caller,
        "caller_hung_up",
    )
    .await
    .context("the caller hangs up")
}
