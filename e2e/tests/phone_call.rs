//! One phone call through the whole system: gateway, NATS, call-worker, tool-worker, persister.
//!
//! The caller hears the greeting, asks about their account, the model looks them up with
//! `lookup_customer` (a real tool service reading Postgres), the caller interrupts the long answer,
//! asks one more thing, says goodbye and hangs up. Then the persister's API must hold the whole
//! record: both sides of the transcript in order, the interruption, the tool call with its output,
//! and the end reason.

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript, EndedBy};
use serde_json::Value;
use switchboard_e2e::{ADMIN_TOKEN, AUTH_TOKEN, System, get_session};
use switchboard_testkit::workspace_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_call_is_answered_uses_a_tool_survives_barge_in_and_is_recorded()
-> anyhow::Result<()> {
    let system = System::start().await?;
    // The console's live view follows the call as it happens (a core subscription to the
    // events subjects, which the persister's NATS user must be granted).
    let mut live = reqwest::Client::new()
        .get(format!("{}/api/live", system.persister))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?;
    let live_feed = tokio::spawn(async move {
        let mut seen = String::new();
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(std::time::Duration::from_secs(60), live.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("\"ended\"") {
                break;
            }
        }
        seen
    });
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;

    let report = callsim::place_call(&cfg, &script)
        .await
        .with_context(|| system.logs())?;
    let context = || format!("{report:#?}\n{}", system.logs());

    // What the caller experienced.
    ensure!(report.connected, "stream never connected: {}", context());
    ensure!(report.ended_by == EndedBy::Caller, "{}", context());
    ensure!(report.step_errors.is_empty(), "{}", context());
    ensure!(report.protocol_errors.is_empty(), "{}", context());
    ensure!(
        report.greeting_latency_ms.is_some(),
        "no greeting audio: {}",
        context()
    );
    ensure!(
        report.clears == 1,
        "expected exactly one barge-in clear: {}",
        context()
    );
    // Greeting (~3.5 s) + the interrupted answer (2 s heard) + two short answers.
    ensure!(report.heard_ms > 6_000, "{}", context());
    // The interrupted answer is ~15 s of audio; the caller must not have heard most of it.
    ensure!(
        report.audio_received_ms > report.heard_ms + 5_000,
        "clear did not drop the rest of the answer: {}",
        context()
    );

    // What the record says.
    let session = get_session(&system.persister, &report.call_sid)
        .await
        .with_context(context)?;
    let ctx = || format!("{session:#}\n{}", context());
    ensure!(session["agent_id"] == "front-desk", "{}", ctx());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    ensure!(session["from"] == "+15550001234", "{}", ctx());

    let transcript = session["transcript"].as_array().context("transcript")?;
    let lines: Vec<(&str, &str, bool)> = transcript
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default(),
                t["text"].as_str().unwrap_or_default(),
                t["interrupted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let expected: [(&str, &str, bool); 7] = [
        ("assistant", "Thanks for calling Acme Dental", false),
        ("user", "Can you look up my account?", false),
        ("assistant", "I found your account, Maria Garcia.", true),
        ("user", "never mind", false),
        (
            "assistant",
            "No problem. Yes, we are open on Saturdays",
            false,
        ),
        ("user", "Great, thank you. Bye!", false),
        ("assistant", "have a great day", false),
    ];
    ensure!(
        lines.len() == expected.len(),
        "transcript {lines:#?}\n{}",
        ctx()
    );
    for ((role, text, interrupted), (want_role, want_text, want_cut)) in
        lines.iter().zip(expected.iter())
    {
        ensure!(
            role == want_role && text.contains(want_text) && interrupted == want_cut,
            "transcript line {role}: {text:?} (interrupted {interrupted}) should be \
             {want_role}: ..{want_text:?}.. (interrupted {want_cut})\n{lines:#?}"
        );
    }
    let cut = &transcript[2];
    let heard = cut["heard_ms"].as_u64().unwrap_or_default();
    ensure!(
        (1_500..=4_000).contains(&heard),
        "the interrupted answer should record ~2 s heard, got {heard}"
    );

    let tools = session["tools"].as_array().context("tools")?;
    ensure!(tools.len() == 1, "{}", ctx());
    ensure!(tools[0]["name"] == "lookup_customer", "{}", ctx());
    // No number in the arguments: the tool found the caller by the number the call came from.
    ensure!(tools[0]["arguments"] == serde_json::json!({}), "{}", ctx());
    ensure!(tools[0]["output"]["name"] == "Maria Garcia", "{}", ctx());
    ensure!(tools[0]["output"]["phone"] == "+15550001234", "{}", ctx());
    ensure!(tools[0]["error"].is_null(), "{}", ctx());

    ensure!(
        session["usage"]["output_tokens"]
            .as_u64()
            .unwrap_or_default()
            > 0,
        "{}",
        ctx()
    );
    // The cost, itemised: the model the worker used and the caller's transcription.
    let breakdown = &session["cost"]["breakdown"];
    ensure!(breakdown["model"] == "gpt-realtime", "{}", ctx());
    ensure!(
        breakdown["transcription_model"] == "gpt-4o-mini-transcribe",
        "{}",
        ctx()
    );
    ensure!(
        breakdown["transcription_usd"].as_f64().unwrap_or_default() > 0.0
            && session["cost_usd"].as_f64().unwrap_or_default() > 0.0,
        "{}",
        ctx()
    );
    let greeting_turn = session["turns"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "greeting"));
    ensure!(greeting_turn.is_some(), "no greeting latency: {}", ctx());

    let live_seen = tokio::time::timeout(std::time::Duration::from_secs(10), live_feed)
        .await
        .context("the live view never showed the call's end")??;
    ensure!(
        live_seen.contains(&report.call_sid) && live_seen.contains("lookup_customer"),
        "the live view should have shown the call and its tool: {live_seen}"
    );
    // Every service ran under production's NATS grants; none was refused anything.
    let nats_log = system.nats_log();
    ensure!(
        !nats_log.contains("Violation"),
        "a service lacks a NATS grant:\n{nats_log}"
    );

    // The list shows it too, and nothing is visible without the token.
    let client = reqwest::Client::new();
    let list: Value = client
        .get(format!("{}/api/sessions", system.persister))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        list["sessions"][0]["call_sid"] == report.call_sid.as_str(),
        "{list:#}"
    );
    let denied = client
        .get(format!("{}/api/sessions", system.persister))
        .send()
        .await?;
    ensure!(denied.status() == 401);
    Ok(())
}
