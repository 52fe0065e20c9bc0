//! Call recordings through every service: the gateway records the call, the recording store
//! (a directory, or an S3-compatible server) keeps the WAV, the persister serves it.
//!
//! What callsim sent and what it heard (with times on the stream's clock) is compared with the
//! two channels of the WAV: each stretch of speech must be in the recording within 20 ms at both
//! ends, the caller's on channel 0 and the agent's on channel 1, and the answer a barge-in cut
//! off must stop where the caller stopped hearing it.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::{CallReport, EndedBy, Segment};
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, System, get_session};
use switchboard_service::recordings::wav;
use switchboard_testkit::s3::S3Server;
use switchboard_testkit::{eventually, workspace_root};

/// Alignment the recording must keep with what the caller said and heard.
const TOLERANCE_MS: u64 = 20;
/// Stretches shorter than this are not compared (a word's tail, a frame of jitter).
const MIN_STRETCH_MS: u64 = 100;
/// The windows sound is measured over.
const WINDOW_MS: u64 = 5;
const SAMPLES_PER_MS: u64 = 8;

/// Places the dental demo call (greeting, a tool, a barge-in, goodbye); it must go as
/// scripted.
async fn dental_call(system: &System) -> anyhow::Result<CallReport> {
    let report = place_dental_call(system).await?;
    ensure!(
        report.ended_by == EndedBy::Caller && report.step_errors.is_empty(),
        "{report:#?}\n{}",
        system.logs()
    );
    Ok(report)
}

/// Places the dental demo call, however the conversation goes.
async fn place_dental_call(system: &System) -> anyhow::Result<CallReport> {
    let report = switchboard_e2e::place_dental_call(system).await?;
    ensure!(report.connected, "{report:#?}\n{}", system.logs());
    Ok(report)
}

/// Waits for the call's record to carry its recording, and downloads the WAV.
async fn recording(system: &System, call_sid: &str) -> anyhow::Result<(Value, Vec<u8>)> {
    let http = reqwest::Client::new();
    let url = format!("{}/api/sessions/{call_sid}", system.persister);
    let session: Value = eventually(Duration::from_secs(30), "the call's recording", || {
        let req = http.get(&url).bearer_auth(ADMIN_TOKEN).send();
        async move {
            let body: Value = req.await.ok()?.error_for_status().ok()?.json().await.ok()?;
            (!body["recording"].is_null()).then_some(body)
        }
    })
    .await
    .with_context(|| system.logs())?;
    let path = session["recording"]["url"]
        .as_str()
        .context("recording url")?;
    let wav_url = format!("{}{path}", system.persister);
    let unauthenticated = http.get(&wav_url).send().await?;
    ensure!(
        unauthenticated.status() == 401,
        "{}",
        unauthenticated.status()
    );
    let resp = http.get(&wav_url).bearer_auth(ADMIN_TOKEN).send().await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    ensure!(resp.headers()["content-type"] == "audio/wav");
    Ok((session, resp.bytes().await?.to_vec()))
}

/// The stretches of `channel` that hold sound, in ms, from [`WINDOW_MS`] windows; silences
/// shorter than 30 ms are bridged.
fn sounding(channel: &[i16]) -> Vec<Segment> {
    let window = (WINDOW_MS * SAMPLES_PER_MS) as usize;
    let mut out: Vec<Segment> = Vec::new();
    for (i, w) in channel.chunks(window).enumerate() {
        let energy = w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64;
        if energy.sqrt() < 1000.0 {
            continue;
        }
        let start_ms = i as u64 * WINDOW_MS;
        let end_ms = start_ms + WINDOW_MS;
        match out.last_mut() {
            Some(last) if start_ms <= last.end_ms + 30 => last.end_ms = end_ms,
            _ => out.push(Segment { start_ms, end_ms }),
        }
    }
    out.retain(|s| s.end_ms - s.start_ms >= MIN_STRETCH_MS);
    out
}

/// Every stretch the caller said or heard (`expected`) is in the channel (`recorded`) within
/// [`TOLERANCE_MS`] at both ends, and the channel holds nothing else.
fn check_channel(what: &str, expected: &[Segment], recorded: &[Segment]) -> anyhow::Result<()> {
    let mut expected: Vec<Segment> = expected.to_vec();
    // Joined like the recording's stretches are.
    expected.dedup_by(|next, last| {
        let join = next.start_ms <= last.end_ms + 30;
        if join {
            last.end_ms = next.end_ms;
        }
        join
    });
    expected.retain(|s| s.end_ms - s.start_ms >= MIN_STRETCH_MS);
    ensure!(
        expected.len() == recorded.len(),
        "{what}: expected stretches {expected:?}, recorded {recorded:?}"
    );
    for (e, r) in expected.iter().zip(recorded) {
        ensure!(
            e.start_ms.abs_diff(r.start_ms) <= TOLERANCE_MS
                && e.end_ms.abs_diff(r.end_ms) <= TOLERANCE_MS,
            "{what}: {e:?} was recorded as {r:?} (all: expected {expected:?}, recorded {recorded:?})"
        );
    }
    Ok(())
}

/// The WAV holds what `report` says the caller said (channel 0) and heard (channel 1).
fn check_recording(report: &CallReport, session: &Value, wav_bytes: &[u8]) -> anyhow::Result<()> {
    let (caller, agent) = wav::decode(wav_bytes)?;
    ensure!(session["recording"]["channels"] == 2, "{session:#}");
    let duration_ms = session["recording"]["duration_ms"]
        .as_u64()
        .context("duration")?;
    ensure!(
        caller.len() as u64 / SAMPLES_PER_MS == duration_ms,
        "{} samples for {duration_ms} ms",
        caller.len()
    );
    // The recording runs from the stream's start to its end, as the caller's call did.
    ensure!(
        duration_ms.abs_diff(report.duration_ms) < 500,
        "recording of {duration_ms} ms for a call of {} ms",
        report.duration_ms
    );
    check_channel(
        "caller (channel 0)",
        &report.said_segments,
        &sounding(&caller),
    )?;
    check_channel(
        "agent (channel 1)",
        &report.heard_segments,
        &sounding(&agent),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_recorded_as_the_caller_said_and_heard_it_with_the_barge_in_cut()
-> anyhow::Result<()> {
    let system = System::start().await?;
    let report = dental_call(&system).await?;
    ensure!(report.clears == 1, "one barge-in: {report:#?}");
    let (session, wav_bytes) = recording(&system, &report.call_sid).await?;
    check_recording(&report, &session, &wav_bytes).with_context(|| format!("{report:#?}"))?;

    // The interrupted answer was much longer than what was heard, and the recording holds only
    // what was heard.
    let (_, agent) = wav::decode(&wav_bytes)?;
    let recorded_agent_ms: u64 = sounding(&agent).iter().map(|s| s.end_ms - s.start_ms).sum();
    ensure!(
        recorded_agent_ms + 5_000 < report.audio_received_ms,
        "recorded {recorded_agent_ms} ms of agent audio of {} ms sent",
        report.audio_received_ms
    );
    ensure!(
        recorded_agent_ms.abs_diff(report.heard_ms) <= 4 * TOLERANCE_MS,
        "recorded {recorded_agent_ms} ms of agent audio, the caller heard {} ms",
        report.heard_ms
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_model_session_reconnects_is_recorded_whole() -> anyhow::Result<()> {
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model.toml");
    // The model session expires a few seconds into the call; the worker opens another.
    let script = std::fs::read_to_string(root.join("sims/scenarios/dental.model.toml"))?.replacen(
        "[session]\n",
        "[session]\nmax_seconds = 10\n",
        1,
    );
    std::fs::write(&model, script)?;
    let system = System::start_custom(&root.join("agents/agents.toml"), &model, &[], "").await?;
    // The simulated model starts its script again in the new session, so the conversation
    // need not go as scripted; the recording must hold whatever was said and heard.
    let report = place_dental_call(&system).await?;
    let (session, wav_bytes) = recording(&system, &report.call_sid).await?;
    let worker_log = system.service_log("call-worker").unwrap_or_default();
    ensure!(
        worker_log.contains("new realtime session"),
        "the model session did not reconnect:\n{}",
        system.logs()
    );
    check_recording(&report, &session, &wav_bytes).with_context(|| format!("{report:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_record_false_leaves_no_recording() -> anyhow::Result<()> {
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    // The agents directory (instruction files too), with the front desk not recording.
    for entry in std::fs::read_dir(root.join("agents"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
    }
    let agents = dir.path().join("agents.toml");
    let text = std::fs::read_to_string(&agents)?;
    let off = text.replacen(
        "id = \"front-desk\"\n",
        "id = \"front-desk\"\nrecord = false\n",
        1,
    );
    ensure!(off != text, "the front desk agent is in agents/agents.toml");
    std::fs::write(&agents, off)?;
    let system = System::start_custom(
        &agents,
        &root.join("sims/scenarios/dental.model.toml"),
        &[],
        "",
    )
    .await?;
    let report = dental_call(&system).await?;
    let session = get_session(&system.persister, &report.call_sid).await?;
    ensure!(session["recording"].is_null(), "{session:#}");
    let stored: Vec<_> = std::fs::read_dir(system.recordings.path())?.collect();
    ensure!(stored.is_empty(), "recordings stored: {stored:?}");
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/sessions/{}/recording",
            system.persister, report.call_sid
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(resp.status() == 404, "{}", resp.status());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_go_to_s3_compatible_storage() -> anyhow::Result<()> {
    let s3 = S3Server::start("switchboard-recordings").await?;
    let mut env = s3.env();
    env.push(("RECORDINGS_URL", s3.url("calls")));
    let system = System::start_with(&env).await?;
    let report = dental_call(&system).await?;
    let (session, wav_bytes) = recording(&system, &report.call_sid).await?;
    check_recording(&report, &session, &wav_bytes).with_context(|| format!("{report:#?}"))?;
    let keys = s3.keys("calls/").await?;
    ensure!(
        keys == [format!("calls/{}/1.wav", report.call_sid)],
        "bucket holds {keys:?}"
    );
    ensure!(
        std::fs::read_dir(system.recordings.path())?
            .next()
            .is_none(),
        "nothing in the directory store"
    );
    Ok(())
}
