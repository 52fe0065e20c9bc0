//! callsim against a fake gateway: signatures, the start message, frame pacing, mark echoes,
//! clear, barge-in, busy TwiML and Twilio's checks of outbound frames. Real time, kept short.

mod fake;

use std::collections::HashMap;
use std::time::Duration;

use callsim::{CallConfig, CallError, CallerScript, EndedBy, Step};
use fake::{Action, FakeGateway, PUBLIC_URL, Seen, TOKEN, echoes, frames, sent_at};
use switchboard_twilio::media::{MediaFormat, TwilioMessage};
use switchboard_twilio::mulaw;
use switchboard_twilio::twiml::Verb;
use tokio::time::Instant;

fn config(gw: &FakeGateway) -> CallConfig {
    let mut cfg = CallConfig::new(&gw.url, TOKEN);
    cfg.public_url = Some(PUBLIC_URL.to_owned());
    cfg
}

fn script(steps: Vec<Step>) -> CallerScript {
    CallerScript { steps }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn after(later: Instant, earlier: Instant) -> u64 {
    ms(later.saturating_duration_since(earlier))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_requests_sends_start_with_parameters_and_paces_frames() {
    let mut gw = FakeGateway::start(&[("token", "tok-123"), ("agent", "dental")], vec![]).await;
    let cfg = config(&gw);
    let report = callsim::place_call(
        &cfg,
        &script(vec![
            Step::PauseMs(600),
            Step::Dtmf("1".into()),
            Step::PauseMs(100),
            Step::Hangup(true),
        ]),
    )
    .await
    .expect("call");
    let seen = gw.collect(Duration::from_secs(5)).await;

    assert_eq!(report.ended_by, EndedBy::Caller, "{report:#?}");
    assert!(report.connected);
    assert_eq!(report.webhook_status, 200);
    assert!(report.protocol_errors.is_empty(), "{report:#?}");
    assert!(matches!(
        &report.twiml[..],
        [Verb::ConnectStream { url, .. }] if url == "wss://agent.example.com/media"
    ));

    // Both requests are signed over the public URL.
    let Some(Seen::Webhook {
        pairs,
        signature_ok,
    }) = seen.first()
    else {
        panic!("no webhook first: {seen:#?}");
    };
    assert!(signature_ok);
    let form: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(form["CallSid"], report.call_sid);
    assert_eq!(form["AccountSid"], cfg.account_sid);
    assert_eq!(form["From"], "+15550001234");
    assert_eq!(form["To"], "+15550001111");
    assert_eq!(form["CallStatus"], "ringing");
    assert_eq!(form["Direction"], "inbound");
    assert_eq!(form["ApiVersion"], "2010-04-01");
    assert!(report.call_sid.starts_with("CA") && report.call_sid.len() == 34);
    let Some(&Seen::Upgrade {
        at: upgraded,
        signature_ok: true,
    }) = seen.get(1)
    else {
        panic!("no signed upgrade: {seen:#?}");
    };

    let frames = frames(&seen);
    assert!(matches!(frames[0].1, TwilioMessage::Connected { .. }));
    let TwilioMessage::Start {
        sequence_number,
        stream_sid,
        start,
    } = &frames[1].1
    else {
        panic!("second frame is not start: {:?}", frames[1]);
    };
    assert_eq!(sequence_number, "1");
    assert!(stream_sid.starts_with("MZ") && stream_sid.len() == 34);
    assert_eq!(Some(stream_sid), report.stream_sid.as_ref());
    assert_eq!(&start.stream_sid, stream_sid);
    assert_eq!(start.call_sid, report.call_sid);
    assert_eq!(start.account_sid, cfg.account_sid);
    assert_eq!(start.tracks, vec!["inbound".to_owned()]);
    assert_eq!(start.media_format, MediaFormat::default());
    let params: HashMap<String, String> = [("token", "tok-123"), ("agent", "dental")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(start.custom_parameters, params);

    // Every message after `connected` carries the next sequence number.
    let mut media = Vec::new();
    for (i, (at, msg)) in frames[1..].iter().enumerate() {
        let seq = match msg {
            TwilioMessage::Start {
                sequence_number, ..
            }
            | TwilioMessage::Dtmf {
                sequence_number, ..
            }
            | TwilioMessage::Stop {
                sequence_number, ..
            } => sequence_number,
            TwilioMessage::Media {
                sequence_number,
                media: m,
                stream_sid: sid,
            } => {
                assert_eq!(sid, stream_sid);
                media.push((*at, m.clone()));
                sequence_number
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(seq, &(i + 1).to_string());
    }
    assert_eq!(media.len() as u64, report.frames_sent);
    // ~600 + 20 + 100 ms of frames.
    assert!((34..=40).contains(&media.len()), "{}", media.len());
    for (i, (at, m)) in media.iter().enumerate() {
        assert_eq!(m.track, "inbound");
        assert_eq!(m.chunk, (i + 1).to_string());
        assert_eq!(m.timestamp, (i * 20).to_string());
        let audio = m.audio().expect("base64");
        assert_eq!(audio, vec![mulaw::SILENCE; 160]);
        // Frame k goes out 20 k ms after the stream started (which is after the upgrade):
        // never faster than real time.
        assert!(
            after(*at, upgraded) >= 20 * (i as u64 + 1),
            "frame {} at {} ms",
            i + 1,
            after(*at, upgraded)
        );
    }
    // ... and not slower either: absolute deadlines, no drift.
    let last = after(media[media.len() - 1].0, upgraded);
    let expected = 20 * media.len() as u64;
    assert!(
        last <= expected + 200,
        "last frame at {last} ms, due at {expected} ms"
    );

    let dtmf: Vec<&TwilioMessage> = frames
        .iter()
        .map(|(_, m)| m)
        .filter(|m| matches!(m, TwilioMessage::Dtmf { .. }))
        .collect();
    assert!(matches!(
        dtmf[..],
        [TwilioMessage::Dtmf { dtmf, .. }] if dtmf.track == "inbound_track" && dtmf.digit == "1"
    ));
    let Some((_, TwilioMessage::Stop { stop, .. })) = frames.last() else {
        panic!("last frame is not stop: {:?}", frames.last());
    };
    assert_eq!(stop.call_sid, report.call_sid);
    assert_eq!(stop.account_sid, cfg.account_sid);
    let junk: Vec<&str> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Junk(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(junk.is_empty(), "{junk:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_is_echoed_only_after_its_audio_has_played() {
    let mut gw = FakeGateway::start(&[], vec![Action::Audio(1000), Action::Mark("m1")]).await;
    let report = callsim::place_call(
        &config(&gw),
        &script(vec![
            Step::Listen {
                max_ms: 5000,
                silence_ms: 300,
            },
            Step::Hangup(true),
        ]),
    )
    .await
    .expect("call");
    let seen = gw.collect(Duration::from_secs(5)).await;

    let audio_sent = sent_at(&seen, "Audio", 0);
    let echo = echoes(&seen, "m1");
    assert_eq!(echo.len(), 1, "{seen:#?}");
    // Not when the mark arrived (right after the audio), but once the second of audio before it
    // had played.
    let echoed = after(echo[0], audio_sent);
    assert!((1000..=1400).contains(&echoed), "echoed after {echoed} ms");

    assert_eq!(report.ended_by, EndedBy::Caller, "{report:#?}");
    assert_eq!(report.marks_sent_back, 1);
    assert_eq!(report.audio_received_ms, 1000);
    assert_eq!(report.heard_ms, 1000);
    assert_eq!(report.heard_segments.len(), 1);
    let seg = report.heard_segments[0];
    assert_eq!(seg.end_ms - seg.start_ms, 1000);
    assert!(report.greeting_latency_ms.is_some_and(|ms| ms < 1000));
    assert_eq!(report.mark_lateness_ms.len(), 1);
    assert!(report.protocol_errors.is_empty(), "{report:#?}");
    assert!(report.is_clean());
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["ended_by"], "caller");
    assert_eq!(json["heard_ms"], 1000);
    assert_eq!(
        json["twiml"][0]["connect_stream"]["url"],
        "wss://agent.example.com/media"
    );
    let summary = report.to_string();
    assert!(summary.contains("caller hung up"), "{summary}");
    assert!(
        summary.contains("heard 1.0 s of 1.0 s received"),
        "{summary}"
    );
    // The listen step ended 300 ms after the audio; the call hung up then.
    let stop_at = frames(&seen)
        .iter()
        .find(|(_, m)| matches!(m, TwilioMessage::Stop { .. }))
        .map(|(at, _)| *at)
        .expect("stop");
    assert!(
        after(stop_at, echo[0]) >= 280,
        "{}",
        after(stop_at, echo[0])
    );
}

async fn clear_scenario(echo_marks_on_clear: bool) {
    let mut gw = FakeGateway::start(
        &[],
        vec![
            Action::Audio(2000),
            Action::Mark("tail"),
            Action::Sleep(500),
            Action::Clear,
            Action::Sleep(300),
            Action::Audio(200),
            Action::Mark("after"),
        ],
    )
    .await;
    let mut cfg = config(&gw);
    cfg.echo_marks_on_clear = echo_marks_on_clear;
    let report = callsim::place_call(
        &cfg,
        &script(vec![
            Step::Listen {
                max_ms: 5000,
                silence_ms: 400,
            },
            Step::Hangup(true),
        ]),
    )
    .await
    .expect("call");
    let seen = gw.collect(Duration::from_secs(5)).await;

    let clear_sent = sent_at(&seen, "Clear", 0);
    let tail = echoes(&seen, "tail");
    if echo_marks_on_clear {
        // Pending marks come back at once on clear, long before their audio would have ended.
        assert_eq!(tail.len(), 1, "{seen:#?}");
        assert!(
            after(tail[0], clear_sent) < 500,
            "{}",
            after(tail[0], clear_sent)
        );
        assert_eq!(report.marks_sent_back, 2);
    } else {
        assert!(tail.is_empty(), "{seen:#?}");
        assert_eq!(report.marks_sent_back, 1);
    }
    let after_echo = echoes(&seen, "after");
    assert_eq!(after_echo.len(), 1);
    let second_audio = sent_at(&seen, "Audio", 1);
    assert!(after(after_echo[0], second_audio) >= 195);

    assert_eq!(report.clears, 1);
    assert_eq!(report.audio_received_ms, 2200);
    // What played before the clear (~500 ms, by the fake's clock) plus the 200 ms after it.
    let before_clear = after(clear_sent, sent_at(&seen, "Audio", 0));
    assert!(
        report.heard_ms.abs_diff(before_clear + 200) <= 60,
        "heard {} ms, clear came {before_clear} ms into the audio: {report:#?}",
        report.heard_ms
    );
    assert!(report.heard_ms < 1000);
    let last = report.heard_segments.last().expect("segments");
    assert_eq!(last.end_ms - last.start_ms, 200, "{report:#?}");
    assert_eq!(report.ended_by, EndedBy::Caller);
    assert!(report.protocol_errors.is_empty(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_drops_queued_audio_and_echoes_pending_marks() {
    clear_scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_can_drop_pending_marks_like_twilio_look_alikes() {
    clear_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_speaks_over_the_assistant_and_latencies_are_measured() {
    let mut gw = FakeGateway::start(
        &[],
        vec![
            Action::WaitSpeechEnd,
            Action::Sleep(100),
            Action::Audio(3000),
            Action::Mark("answer"),
            Action::WaitSpeech,
            Action::Clear,
            Action::Sleep(500),
            Action::Audio(300),
        ],
    )
    .await;
    let report = callsim::place_call(
        &config(&gw),
        &script(vec![
            Step::SayMs(400),
            Step::BargeIn {
                after_ms: 500,
                say_ms: 300,
            },
            Step::Listen {
                max_ms: 3000,
                silence_ms: 300,
            },
            Step::Hangup(true),
        ]),
    )
    .await
    .expect("call");
    let seen = gw.collect(Duration::from_secs(5)).await;
    assert_eq!(report.ended_by, EndedBy::Caller, "{report:#?}");

    // The caller's speech is voice-level audio.
    let speech: Vec<(Instant, f32)> = frames(&seen)
        .into_iter()
        .filter_map(|(at, m)| match m {
            TwilioMessage::Media { media, .. } => {
                Some((at, mulaw::rms(&media.audio().expect("base64"))))
            }
            _ => None,
        })
        .filter(|(_, level)| *level > 0.0)
        .collect();
    assert_eq!(speech.len(), 20 + 15, "400 ms + 300 ms of speech");
    assert!(speech.iter().all(|(_, level)| *level > 0.12));
    // The barge-in started once the answer had played for 500 ms.
    let answer_sent = sent_at(&seen, "Audio", 0);
    let barge_start = speech[20].0;
    let waited = after(barge_start, answer_sent);
    assert!((500..=800).contains(&waited), "barged in after {waited} ms");

    // Latencies: the fake answers ~120 ms after the first say ends (it needs one silent frame,
    // then sleeps 100 ms) and ~200 ms after the barge-in's 300 ms of speech.
    let latencies = &report.response_latencies_ms;
    assert_eq!(latencies.len(), 2, "{report:#?}");
    assert!((100..=400).contains(&latencies[0]), "{latencies:?}");
    assert!((150..=600).contains(&latencies[1]), "{latencies:?}");
    // Heard: the answer until the clear, then the 300 ms reply.
    assert_eq!(report.clears, 1);
    let before_clear = after(sent_at(&seen, "Clear", 0), answer_sent);
    assert!(
        report.heard_ms.abs_diff(before_clear + 300) <= 60,
        "heard {}, clear came {before_clear} ms into the answer: {report:#?}",
        report.heard_ms
    );
    assert_eq!(report.audio_received_ms, 3300);
    assert_eq!(echoes(&seen, "answer").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_twiml_means_rejected_with_the_message() {
    let mut gw = FakeGateway::busy("All our agents are busy. Please call again later.").await;
    let report = callsim::place_call(&config(&gw), &CallerScript::demo())
        .await
        .expect("call");
    assert_eq!(report.ended_by, EndedBy::Rejected);
    assert_eq!(
        report.rejected_message.as_deref(),
        Some("All our agents are busy. Please call again later.")
    );
    assert!(!report.connected);
    assert_eq!(report.frames_sent, 0);
    assert!(!report.is_clean());
    let seen = gw.drain();
    assert_eq!(seen.len(), 1, "only the webhook: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_frames_are_checked_like_twilio_checks_them() {
    let mut gw = FakeGateway::start(
        &[],
        vec![
            Action::Raw(r#"{"event":"media","streamSid":"MZwrong","media":{"payload":"//8="}}"#),
            Action::Raw(r#"{"event":"mark","streamSid":"{sid}","mark":{}}"#),
            Action::Binary,
            Action::Raw("not json"),
            Action::Raw(r#"{"event":"hello","streamSid":"{sid}"}"#),
            Action::Raw(r#"{"event":"media","streamSid":"{sid}","media":{"payload":""}}"#),
            Action::Audio(200),
            Action::Sleep(400),
            Action::Close,
        ],
    )
    .await;
    let report = callsim::place_call(
        &config(&gw),
        &script(vec![
            Step::Listen {
                max_ms: 5000,
                silence_ms: 2000,
            },
            Step::Hangup(true),
        ]),
    )
    .await
    .expect("call");
    let _ = gw.collect(Duration::from_secs(5)).await;

    let errors = &report.protocol_errors;
    assert_eq!(errors.len(), 6, "{errors:#?}");
    for (error, expect) in errors.iter().zip([
        "streamSid `MZwrong`",
        "without `mark.name`",
        "31950: binary frame",
        "invalid JSON",
        "unknown event `hello`",
        "empty `media.payload`",
    ]) {
        assert!(error.contains(expect), "{error:?} lacks {expect:?}");
    }
    // Frames that fail the checks are not applied.
    assert_eq!(report.audio_received_ms, 200);
    assert_eq!(report.heard_ms, 200);
    // The gateway closed the socket: the agent ended the call.
    assert_eq!(report.ended_by, EndedBy::Agent, "{report:#?}");
    assert_eq!(report.close_code, Some(1000));
    assert_eq!(report.close_reason.as_deref(), Some("bye"));
    assert!(!report.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_auth_token_is_refused_by_the_webhook() {
    let gw = FakeGateway::start(&[], vec![]).await;
    let mut cfg = config(&gw);
    cfg.auth_token = "not-the-token".into();
    let err = callsim::place_call(&cfg, &CallerScript::demo())
        .await
        .expect_err("the webhook refuses a bad signature");
    assert!(
        matches!(err, CallError::WebhookStatus { status: 403, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_that_hears_nothing_fails_the_call() {
    let gw = FakeGateway::start(&[], vec![]).await;
    let report = callsim::place_call(
        &config(&gw),
        &script(vec![Step::Listen {
            max_ms: 300,
            silence_ms: 100,
        }]),
    )
    .await
    .expect("call");
    assert_eq!(report.ended_by, EndedBy::Error);
    assert_eq!(report.step_errors.len(), 1, "{report:#?}");
    assert!(report.step_errors[0].contains("listen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_runs_a_bounded_number_of_calls() {
    let gw = FakeGateway::start(&[], vec![Action::Audio(200), Action::Mark("m")]).await;
    let report = callsim::run_load(
        &config(&gw),
        &script(vec![
            Step::Listen {
                max_ms: 3000,
                silence_ms: 300,
            },
            Step::Hangup(true),
        ]),
        6,
        3,
    )
    .await;
    assert_eq!(report.calls_started, 6);
    assert_eq!(
        (report.ok, report.failed, report.rejected),
        (6, 0, 0),
        "{report}"
    );
    assert_eq!(report.greeting_latency_ms.count, 6);
    assert_eq!(report.mark_echo_lateness_ms.count, 6);
    assert!(report.frames_sent >= 6 * 25);
}
