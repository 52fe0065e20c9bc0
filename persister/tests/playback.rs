//! The call page's recording player in a real headless Chromium: a call whose two-channel WAV
//! was written to the recording store and whose `recording` event went through the persister's
//! own ingest; its stream started 600 ms after the worker accepted the call, so the player maps
//! the timeline's times onto the recording by the difference of the two lengths. The waveform
//! shows each channel where it has sound, playing moves the time and highlights the line being
//! spoken, a click on a line, an interruption, a tool call or the waveform moves the audio
//! there, and pause stops it; a call without a recording, one that has just ended, and one of
//! an agent with `record = false`, say so; all under the console's Content-Security-Policy.
//! Screenshot: `target/test-artifacts/playback.png`.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use switchboard_proto::CallRecording;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::recording_seq;
use switchboard_service::recordings::{RecordingStore, wav};
use switchboard_testkit::browser::{Browser, Cdp};

const T0: i64 = 1_767_225_600_000;
const RATE: usize = 8000;
/// The realistic call's length, on the worker's clock (from accepting the call).
const CALL_MS: usize = 14_000;
/// How long after the worker accepted the call its media stream started: the recording's zero.
const LEAD_MS: usize = 600;
/// The recording's length: the stream's, which ends with the call.
const DURATION_MS: usize = CALL_MS - LEAD_MS;

/// How far `audio.currentTime`, read in the same task as the click that seeked, may be from the
/// item's time. Setting `currentTime` makes the element report the new position at once, and a
/// PCM WAV held in memory seeks to the sample (0.125 ms at 8 kHz), so only a frame of playback
/// between the seek and the read could add to it: 25 ms is one 20 ms media frame and change.
const SEEK_TOLERANCE_S: f64 = 0.025;

/// When each side speaks in the realistic call (milliseconds on the call's clock): the caller's
/// two lines, and the agent's greeting and the answer the caller cut off after 1200 ms.
const CALLER_SPEAKS: [(usize, usize); 2] = [(3500, 6000), (9000, 10_500)];
const AGENT_SPEAKS: [(usize, usize); 2] = [(900, 3000), (7100, 8300)];

/// Where `call_ms` of the call is in the recording, in seconds.
fn recording_s(call_ms: usize) -> f64 {
    (call_ms - LEAD_MS) as f64 / 1000.0
}

/// A channel with a loud 440 Hz tone while its side speaks, silence otherwise.
fn channel(speaks: &[(usize, usize)]) -> Vec<i16> {
    (0..DURATION_MS * RATE / 1000)
        .map(|i| {
            let ms = i * 1000 / RATE + LEAD_MS;
            if speaks.iter().any(|&(from, to)| (from..to).contains(&ms)) {
                let phase = 2.0 * std::f64::consts::PI * 440.0 * i as f64 / RATE as f64;
                (phase.sin() * 20_000.0) as i16
            } else {
                0
            }
        })
        .collect()
}

#[tokio::test]
async fn the_call_page_plays_the_recording_and_seeks_from_the_transcript() -> anyhow::Result<()> {
    // The agents file: front-desk records its calls, private-line does not.
    let agents = tempfile::tempdir()?;
    let agents_file = agents.path().join("agents.toml");
    std::fs::write(
        &agents_file,
        "[[agent]]\nid = \"front-desk\"\nnumbers = [\"+15550001111\"]\ninstructions = \"Help.\"\n\n\
         [[agent]]\nid = \"private-line\"\nnumbers = [\"+15550003333\"]\ninstructions = \"Help.\"\n\
         record = false\n",
    )?;
    let fx = Fixture::start_with(|config| config.web_call.agents_file = Some(agents_file)).await?;
    let store = RecordingStore::open(fx.recordings.path().to_str().expect("utf-8"))?;
    let sid = "CA00000000000000000000000000000P01";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    // The recording as the gateway leaves it: the WAV in the store, then the `recording` event.
    let bytes = Bytes::from(wav::encode(
        &channel(&CALLER_SPEAKS),
        &channel(&AGENT_SPEAKS),
    ));
    let location = RecordingStore::location(sid, 1);
    store.put(&location, bytes.clone()).await?;
    let recording = Body::Recording(CallRecording {
        location,
        duration_ms: DURATION_MS as u64,
        channels: 2,
        bytes: bytes.len() as u64,
        stream: 1,
    });
    fx.publish(&event(sid, recording_seq(1), T0 + 15_000, recording))
        .await?;
    fx.wait_events(sid, events.len() as i64 + 1).await?;

    // A call without a recording.
    let unrecorded = "CA00000000000000000000000000000P02";
    let events = realistic_call(unrecorded, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(unrecorded, events.len() as i64).await?;

    // A call of an agent that does not record.
    let private = "CA00000000000000000000000000000P03";
    let mut events = realistic_call(private, T0);
    events[0] = event(private, 1, T0, started("private-line", "+15550001234"));
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(private, events.len() as i64).await?;

    // A call that ended just now, whose recording is not stored yet.
    let just_ended = "CA00000000000000000000000000000P04";
    let events = realistic_call(just_ended, switchboard_proto::now_ms() - CALL_MS as i64);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(just_ended, events.len() as i64).await?;

    let browser = Browser::launch(&["--autoplay-policy=no-user-gesture-required".into()])?;
    let mut cdp = browser.page().await?;
    let result = drive(&mut cdp, &fx, [sid, unrecorded, private, just_ended]).await;
    if result.is_err() {
        let _ = cdp.screenshot("playback-failure.png").await;
    }
    browser.kill().await;
    result?;
    fx.stop().await
}

/// `audio.currentTime` in seconds.
async fn position(cdp: &mut Cdp) -> anyhow::Result<f64> {
    let t = cdp
        .eval("document.getElementById('recording-audio').currentTime")
        .await?;
    t.as_f64()
        .ok_or_else(|| anyhow::anyhow!("no audio position: {t}"))
}

/// Clicks the element `selector` and returns the audio position read in the same task.
async fn click_and_read(cdp: &mut Cdp, selector: &str) -> anyhow::Result<f64> {
    let t = cdp
        .eval(&format!(
            "(() => {{ document.querySelector({}).click(); \
             return document.getElementById('recording-audio').currentTime; }})()",
            json!(selector)
        ))
        .await?;
    t.as_f64()
        .ok_or_else(|| anyhow::anyhow!("clicking {selector}: {t}"))
}

/// The painted pixels of the waveform's column at `ms` of the call, in the caller's (upper) and the
/// agent's (lower) half.
async fn painted(cdp: &mut Cdp, ms: usize) -> anyhow::Result<(u64, u64)> {
    let v = cdp
        .eval(&format!(
            "(() => {{ const c = document.getElementById('waveform'); \
             const x = Math.floor(({ms} - {LEAD_MS}) / {DURATION_MS} * c.width); \
             const px = c.getContext('2d').getImageData(x, 0, 1, c.height).data; \
             let up = 0, down = 0; \
             for (let y = 0; y < c.height; y++) if (px[y * 4 + 3] > 0) {{ if (y < c.height / 2) up++; else down++; }} \
             return [up, down]; }})()"
        ))
        .await?;
    let n = |i: usize| v[i].as_u64().unwrap_or_default();
    Ok((n(0), n(1)))
}

/// Opens the page of `sid`, a call without a player, and returns what its recording section says.
async fn recording_note(cdp: &mut Cdp, fx: &Fixture, sid: &str) -> anyhow::Result<String> {
    cdp.navigate(&format!("{}/sessions/{sid}", fx.base)).await?;
    cdp.wait_for(
        "the recording section's note",
        "document.getElementById('recording').dataset.state === 'none'",
    )
    .await?;
    let note = cdp
        .eval("document.getElementById('recording-note').textContent")
        .await?;
    Ok(note.as_str().unwrap_or_default().to_owned())
}

async fn drive(cdp: &mut Cdp, fx: &Fixture, calls: [&str; 4]) -> anyhow::Result<()> {
    let [sid, unrecorded, private, just_ended] = calls;
    record_csp_violations(cdp).await?;
    cdp.navigate(&format!("{}/login", fx.base)).await?;
    cdp.wait_for("the sign-in form", "!!document.getElementById('token')")
        .await?;
    submit_token(cdp).await?;
    cdp.wait_for("the calls list", "location.pathname === '/sessions'")
        .await?;

    cdp.navigate(&format!("{}/sessions/{sid}", fx.base)).await?;
    cdp.wait_for(
        "the player",
        "document.getElementById('recording').dataset.state === 'ready' \
         && document.getElementById('recording-audio').readyState >= 1",
    )
    .await?;
    let clock = cdp
        .eval("document.getElementById('clock').textContent")
        .await?;
    assert_eq!(clock, json!("0:00 / 0:13"));

    // The waveform: each channel drawn where its side speaks, flat where it is silent.
    let loud = 20;
    let flat = 3;
    let (caller, agent) = painted(cdp, 4500).await?;
    assert!(
        caller > loud && agent <= flat,
        "caller speaking: {caller} / {agent}"
    );
    let (caller, agent) = painted(cdp, 2000).await?;
    assert!(
        caller <= flat && agent > loud,
        "agent speaking: {caller} / {agent}"
    );
    let (caller, agent) = painted(cdp, 12_500).await?;
    assert!(
        caller <= flat && agent <= flat,
        "silence: {caller} / {agent}"
    );

    // Play: the time moves, and the greeting (0:00.9 to 0:03.5) is the line being spoken.
    cdp.eval("document.getElementById('play').click(); true")
        .await?;
    cdp.wait_for(
        "the greeting highlighted while playing",
        "(() => { const a = document.getElementById('recording-audio'); \
           const now = document.querySelector('#timeline .playing'); \
           return !a.paused && a.currentTime > 1.1 && !!now && now.dataset.t === '900' \
             && now.textContent.includes('Thanks for calling'); })()",
    )
    .await?;
    cdp.wait_for(
        "the clock to advance",
        "document.getElementById('clock').textContent.startsWith('0:01')",
    )
    .await?;
    assert_eq!(
        cdp.eval("document.getElementById('play').textContent")
            .await?,
        json!("Pause")
    );

    // A click on a later line plays from where it began.
    let never_mind = "#timeline li.user[data-t='9000']";
    let at = click_and_read(cdp, never_mind).await?;
    assert!(
        (at - recording_s(9000)).abs() <= SEEK_TOLERANCE_S,
        "the line at 9.0 s of the call: {at}"
    );
    cdp.wait_for(
        "the clicked line highlighted",
        "(() => { const now = document.querySelector('#timeline .playing'); \
           return !!now && now.textContent.includes('Actually, never mind.') \
             && document.getElementById('recording-audio').currentTime > 8.4; })()",
    )
    .await?;

    // The interruption: where the caller cut the agent off (7100 + 1200 ms heard).
    let at = click_and_read(cdp, "#timeline .interrupted").await?;
    assert!(
        (at - recording_s(8300)).abs() <= SEEK_TOLERANCE_S,
        "the interruption at 8.3 s of the call: {at}"
    );

    // A tool call: when it was dispatched (6400 ms less its 42 ms).
    let at = click_and_read(cdp, "#timeline li.tool[data-tool='lookup_customer']").await?;
    assert!(
        (at - recording_s(6358)).abs() <= SEEK_TOLERANCE_S,
        "the tool call at 6.358 s of the call: {at}"
    );

    // Pause: the position stays.
    cdp.eval("document.getElementById('play').click(); true")
        .await?;
    cdp.wait_for(
        "paused",
        "document.getElementById('recording-audio').paused \
         && document.getElementById('play').textContent === 'Play'",
    )
    .await?;
    let paused_at = position(cdp).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(position(cdp).await?, paused_at);

    // A click on the waveform, 27 % of the way in, seeks to 3.618 s of the recording: 4.218 s
    // of the call, into the caller's first line (which begins at 3.5 s).
    let box_ = cdp
        .eval(
            "(() => { const r = document.getElementById('waveform').getBoundingClientRect(); \
             window.scrollTo(0, 0); return [r.left, r.top + window.scrollY, r.width, r.height]; })()",
        )
        .await?;
    let f = |i: usize| box_[i].as_f64().unwrap_or_default();
    let (left, top, width, height) = (f(0), f(1), f(2), f(3));
    let (x, y) = (left + width * 0.27, top + height / 2.0);
    for kind in ["mousePressed", "mouseReleased"] {
        cdp.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
        )
        .await?;
    }
    // One CSS pixel of waveform is 14 s / width.
    let pixel = DURATION_MS as f64 / 1000.0 / width;
    let at = position(cdp).await?;
    assert!(
        (at - 0.27 * DURATION_MS as f64 / 1000.0).abs() <= pixel,
        "27 % of the waveform: {at} (pixel {pixel})"
    );
    cdp.wait_for(
        "the caller's first line highlighted",
        "(() => { const now = document.querySelector('#timeline .playing'); \
           return !!now && now.textContent.includes('look up my account'); })()",
    )
    .await?;
    let clock = cdp
        .eval("document.getElementById('clock').textContent")
        .await?;
    assert_eq!(clock, json!("0:03 / 0:13"));

    no_violations(cdp, "the call page with its recording").await?;
    cdp.screenshot("playback.png").await?;

    // A call without a recording says so.
    let note = recording_note(cdp, fx, unrecorded).await?;
    assert!(note.starts_with("No recording"), "{note}");
    assert_eq!(
        cdp.eval("!!document.getElementById('recording-audio')")
            .await?,
        Value::Bool(false)
    );
    no_violations(cdp, "the call page without a recording").await?;

    // A call that has just ended: its recording is on its way.
    let note = recording_note(cdp, fx, just_ended).await?;
    assert!(note.contains("is being stored"), "{note}");

    // An agent with `record = false`: not recorded, and the page says so.
    assert_eq!(
        recording_note(cdp, fx, private).await?,
        "Not recorded: the agent private-line does not record its calls (record = false)."
    );
    no_violations(cdp, "the call page of an agent that does not record").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}
