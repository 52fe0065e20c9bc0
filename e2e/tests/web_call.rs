//! A test call from the console in a real headless Chromium with a fake microphone, against the
//! whole system (every service a process, realtime-sim as the model): sign in, start a web call
//! with the demo agent, hear the greeting, speak (a WAV file Chromium plays as the microphone),
//! the model hears it and answers, hang up, and find the call in the list with direction `web`
//! and both sides of its transcript. Keeps a screenshot, `target/test-artifacts/test-call.png`.

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::{ADMIN_TOKEN, System, get_session};
use switchboard_testkit::browser::Browser;

/// The microphone: 4 s of silence, then a burst of a voiced sound (a 140 Hz buzz with harmonics,
/// its loudness moving like syllables), 16-bit mono at 16 kHz. realtime-sim's energy VAD hears
/// each burst as a caller turn; Chromium loops the file from the moment the page opens the
/// microphone. The silence comes first so the caller waits for the greeting, as callers do: a
/// burst at once would barge in before the greeting's first audio (the model cancels it, as
/// OpenAI's server VAD does) and the call would have no greeting to check.
fn speech_like_wav() -> Vec<u8> {
    const RATE: u32 = 16_000;
    let burst = RATE as usize * 3 / 2;
    let silence = RATE as usize * 4;
    let mut samples = vec![0i16; silence];
    samples.reserve(burst);
    for i in 0..burst {
        let t = i as f64 / f64::from(RATE);
        let voice: f64 = (1..=8)
            .map(|h| (2.0 * std::f64::consts::PI * 140.0 * f64::from(h) * t).sin() / f64::from(h))
            .sum();
        let syllables = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * t).sin().abs();
        samples.push((voice * syllables * 0.35 * f64::from(i16::MAX)) as i16);
    }
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    wav
}

#[tokio::test]
async fn a_test_call_from_the_console_in_a_real_browser() -> anyhow::Result<()> {
    let system = System::start().await?;
    let dir = tempfile::tempdir()?;
    let wav = dir.path().join("caller.wav");
    std::fs::write(&wav, speech_like_wav())?;
    let browser = Browser::launch(&[
        "--use-fake-device-for-media-stream".into(),
        "--use-fake-ui-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", wav.display()),
        "--autoplay-policy=no-user-gesture-required".into(),
    ])?;
    let result = drive(&system, &browser).await;
    browser.kill().await;
    if let Err(error) = &result {
        eprintln!("{error:#}\n{}", system.logs());
    }
    let call_sid = result?;
    // The record, as the API gives it.
    let session = get_session(&system.persister, &call_sid).await?;
    assert_eq!(session["direction"], "web", "{session}");
    assert_eq!(session["agent_id"], "front-desk", "{session}");
    assert_eq!(session["from"], "browser", "{session}");
    let greeting = session["turns"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "greeting"));
    assert!(greeting.is_some(), "no greeting turn: {session}");
    Ok(())
}

/// Drives the page; returns the web call's id.
async fn drive(system: &System, browser: &Browser) -> anyhow::Result<String> {
    let base = &system.persister;
    let mut cdp = browser.page().await?;
    // Every document records the Content-Security-Policy violations it sees.
    cdp.record_csp_violations().await?;
    cdp.sign_in(base, ADMIN_TOKEN).await?;

    // The test-call page, with the demo agent picked.
    cdp.navigate(&format!("{base}/test-call")).await?;
    cdp.wait_for(
        "the agents list",
        "!!document.querySelector('#agent option[value=\"front-desk\"]')",
    )
    .await?;
    cdp.eval(
        "document.getElementById('agent').value = 'front-desk'; \
         document.getElementById('start').click(); true",
    )
    .await?;
    cdp.wait_for(
        "the call to connect",
        "document.body.dataset.callState === 'live'",
    )
    .await?;
    let call_sid = cdp
        .eval("document.body.dataset.callSid")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(call_sid.starts_with("WB"), "call id {call_sid:?}");

    // The greeting plays: its audio arrives, and its mark comes back once it has played.
    cdp.wait_for_within(
        Duration::from_secs(30),
        "the greeting's audio played",
        "Number(document.body.dataset.agentAudioMs || 0) > 1000 \
         && Number(document.body.dataset.marksPlayed || 0) > 0",
    )
    .await?;
    // The caller speaks (the fake microphone); the model hears it and answers.
    cdp.wait_for_within(
        Duration::from_secs(60),
        "the caller's words and the model's answer",
        "(() => { const lines = [...document.querySelectorAll('#transcript li.line')]; \
           const heard = lines.findIndex((l) => l.classList.contains('user') \
             && l.innerText.includes('this is Maria')); \
           return heard >= 0 && lines.slice(heard + 1).some((l) => l.classList.contains('assistant')); })()",
    )
    .await?;
    cdp.screenshot("test-call.png").await?;
    // The worklet, the socket to the gateway and the audio all work under the console's policy.
    cdp.no_csp_violations().await?;

    // Hang up; the call is in the list as a web call.
    cdp.eval("document.getElementById('hangup').click(); true")
        .await?;
    cdp.wait_for(
        "the call to end",
        "document.body.dataset.callState === 'ended'",
    )
    .await?;
    get_session(&system.persister, &call_sid).await?;
    cdp.navigate(&format!("{base}/sessions")).await?;
    let row = format!("tr[data-call-sid=\"{call_sid}\"]");
    cdp.wait_for(
        "the web call in the list",
        &format!(
            "!!document.querySelector({0}) && document.querySelector({0}).innerText.includes('web')",
            json!(row)
        ),
    )
    .await?;
    cdp.eval(&format!(
        "document.querySelector({}).click(); true",
        json!(format!("{row} a"))
    ))
    .await?;
    cdp.wait_for(
        "both sides of the transcript",
        "document.body.innerText.includes('this is Maria') \
         && document.body.innerText.includes('I found your account')",
    )
    .await?;
    cdp.screenshot("test-call-record.png").await?;
    Ok(call_sid)
}
