//! Calls end to end against a real nats-server and the Realtime simulator, the test playing
//! the gateway.

mod common;

use std::time::Duration;

use common::*;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::EndReason;
use switchboard_proto::outbound_frame::Frame;
use switchboard_proto::{Dtmf, Role, inbound_frame};
use switchboard_realtime::ClientEvent;

const GREETING: &str = "Thanks for calling Acme Dental.";

#[tokio::test]
async fn greeting_uses_the_ga_session_and_is_held_until_the_stream_starts() -> anyhow::Result<()> {
    let h = Harness::start(
        "[session]\nspeed = 20.0\n",
        &agents_toml(Some(GREETING), &["end_call"]),
        |_| {},
    )
    .await?;
    let mut gw = h.gateway("CAgreet").await?;
    let reply = h.offer("CAgreet", "+15550001111").await?;
    assert!(reply.accepted, "{reply:?}");

    // The session is configured and the greeting requested without waiting for the stream.
    let s = h
        .session_until("session.update and the greeting", |s| {
            s.client_events.iter().any(is_response_create)
        })
        .await?;
    assert_eq!(s.query, "model=gpt-realtime");
    assert!(s.header("openai-beta").is_none());
    assert!(
        s.header("authorization").is_none(),
        "no key configured, no header"
    );
    let ClientEvent::SessionUpdate { session, .. } = &s.client_events[0] else {
        panic!("session.update first: {:?}", s.client_events[0]);
    };
    let v = serde_json::to_value(session)?;
    assert_eq!(v["type"], "realtime");
    assert_eq!(v["model"], "gpt-realtime");
    assert_eq!(v["output_modalities"], serde_json::json!(["audio"]));
    assert_eq!(v["instructions"], "You are the front desk of Acme Dental.");
    assert_eq!(v["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(
        v["audio"]["input"]["transcription"]["model"],
        "gpt-4o-mini-transcribe"
    );
    assert_eq!(v["audio"]["input"]["turn_detection"]["type"], "server_vad");
    assert_eq!(v["audio"]["input"]["turn_detection"]["threshold"], 0.5);
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        500
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["prefix_padding_ms"],
        300
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["create_response"],
        true
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["interrupt_response"],
        true
    );
    assert_eq!(v["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(v["audio"]["output"]["voice"], "cedar");
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"][0]["name"], "end_call");
    assert!(v.get("voice").is_none() && v.get("modalities").is_none());
    let ClientEvent::ResponseCreate { response, .. } = &s.client_events[1] else {
        panic!("greeting second: {:?}", s.client_events[1]);
    };
    assert_eq!(
        response.as_ref().and_then(|r| r.instructions.as_deref()),
        Some(format!("Greet the caller by saying exactly: \"{GREETING}\"").as_str())
    );

    // Greeting audio reaches the worker before Twilio "connects" (its greeting-latency event
    // is recorded at the first delta): nothing may reach `.out` before `start`, and all of it
    // must arrive after.
    h.events_until("CAgreet", "the greeting turn", |evs| {
        evs.iter()
            .any(|e| matches!(&e.body, Some(Body::Turn(t)) if t.kind == "greeting"))
    })
    .await?;
    assert!(
        gw.next(Duration::from_millis(100)).await.is_none(),
        "audio before start"
    );
    gw.start().await?;
    let words = GREETING.split_whitespace().count();
    let expected = words * 250 * 8;
    gw.receive_audio(expected).await?;
    assert!(gw.marks.len() >= expected / 800, "a mark after every chunk");
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    let events = h
        .events_until("CAgreet", "greeting transcript", |evs| {
            evs.iter().any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::Assistant as i32))
        })
        .await?;
    assert_well_formed(&events);
    let b = bodies(&events);
    // The ownership claim comes first, then `started`.
    let Body::Started(started) = b[1] else {
        panic!()
    };
    assert_eq!(started.agent_id, "front-desk");
    assert_eq!(started.worker_id, "worker-test");
    assert_eq!(started.model, "gpt-realtime");
    assert_eq!(started.from, "+15550001234");
    let turn = b
        .iter()
        .find_map(|b| match b {
            Body::Turn(t) => Some(t),
            _ => None,
        })
        .expect("greeting turn");
    assert_eq!(turn.kind, "greeting");
    assert!(!turn.response_id.is_empty());
    let t = b
        .iter()
        .find_map(|b| match b {
            Body::Transcript(t) => Some(t),
            _ => None,
        })
        .unwrap();
    assert_eq!(t.text, GREETING);
    assert!(!t.interrupted);
    assert_eq!(t.heard_ms as usize, expected / 8);
    Ok(())
}

#[tokio::test]
async fn a_caller_turn_yields_user_and_assistant_transcripts_and_usage() -> anyhow::Result<()> {
    let script = r#"
hear = ["Hi, this is Maria."]
[session]
speed = 20.0
[[response]]
say = "Nice to meet you, Maria."
"#;
    let h = Harness::start(script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAturn").await?;
    assert!(h.offer("CAturn", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.silence(200).await?;
    gw.speak(600).await?;
    gw.silence(700).await?;
    let expected = 5 * 250 * 8;
    gw.receive_audio(expected).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    let events = h
        .events_until("CAturn", "both transcripts", |evs| {
            evs.iter()
                .filter(|e| matches!(e.body, Some(Body::Transcript(_))))
                .count()
                >= 2
        })
        .await?;
    let transcripts: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Transcript(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let user = transcripts
        .iter()
        .find(|t| t.role == Role::User as i32)
        .unwrap();
    assert_eq!(user.text, "Hi, this is Maria.");
    assert!(!user.item_id.is_empty());
    let assistant = transcripts
        .iter()
        .find(|t| t.role == Role::Assistant as i32)
        .unwrap();
    assert_eq!(assistant.text, "Nice to meet you, Maria.");
    assert_eq!(assistant.heard_ms, 1250);
    assert!(!assistant.interrupted);
    assert!(assistant.offset_ms >= user.offset_ms);
    assert!(
        bodies(&events)
            .iter()
            .any(|b| matches!(b, Body::Turn(t) if t.kind == "response"))
    );

    // The caller hangs up: the model session closes and `ended` carries the usage.
    gw.stop().await?;
    let events = h.ended_events("CAturn").await?;
    assert_well_formed(&events);
    let Some(Body::Ended(ended)) = events.last().and_then(|e| e.body.as_ref()) else {
        panic!()
    };
    assert_eq!(ended.reason, "caller_hung_up");
    let usage = ended.usage.clone().unwrap_or_default();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(usage.output_audio_tokens > 0, "{usage:?}");
    // What the persister needs to price it: the model, and the caller's transcription usage.
    assert_eq!(usage.model, "gpt-realtime");
    assert_eq!(usage.transcription_model, "gpt-4o-mini-transcribe");
    assert!(usage.transcription_input_audio_tokens > 0, "{usage:?}");
    assert!(usage.transcription_output_tokens > 0, "{usage:?}");
    h.session_until("the realtime socket closed", |s| s.closed)
        .await?;
    Ok(())
}

/// Speaks, waits for the whole answer to arrive on `.out`, and returns its length in bytes.
async fn caller_turn_and_answer(gw: &mut Gateway, answer_words: usize) -> anyhow::Result<usize> {
    let before = gw.audio_bytes;
    gw.speak(600).await?;
    gw.silence(700).await?;
    let expected = answer_words * 250 * 8;
    gw.receive_audio(before + expected).await?;
    Ok(expected)
}

const LONG: &str = "Our office is open Monday to Friday from eight in the morning until six in the evening and on Saturdays until noon";

#[tokio::test]
async fn barge_in_truncates_to_what_the_caller_heard() -> anyhow::Result<()> {
    let script = format!("[session]\nspeed = 20.0\n[[response]]\nsay = \"{LONG}\"\n");
    let h = Harness::start(&script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAbarge").await?;
    assert!(h.offer("CAbarge", "+15550001111").await?.accepted);
    gw.start().await?;
    caller_turn_and_answer(&mut gw, LONG.split_whitespace().count()).await?;

    // Twilio has played the first three chunks (300 ms) when the caller talks over it.
    let heard_bytes = gw.marks[2].1;
    assert_eq!(heard_bytes, 2400);
    let played: Vec<String> = gw.marks[..3].iter().map(|(n, _)| n.clone()).collect();
    for name in &played {
        gw.echo(name).await?;
    }
    gw.speak(400).await?;
    gw.until("clear", |f| matches!(f, Frame::Clear(_))).await?;
    // Twilio echoes the dropped marks after a clear; they must be ignored.
    let dropped: Vec<String> = gw.marks[3..6].iter().map(|(n, _)| n.clone()).collect();
    for name in &dropped {
        gw.echo(name).await?;
    }
    gw.silence(700).await?;

    let events = h
        .events_until("CAbarge", "the interrupted transcript", |evs| {
            evs.iter()
                .any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.interrupted))
        })
        .await?;
    let t = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Transcript(t)) if t.interrupted => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(t.role, Role::Assistant as i32);
    assert_eq!(t.heard_ms, 300);

    let s = h.session().await?;
    let truncates = client_events(&s, is_truncate);
    assert_eq!(truncates.len(), 1, "{truncates:?}");
    let ClientEvent::ConversationItemTruncate {
        item_id,
        content_index,
        audio_end_ms,
        ..
    } = truncates[0]
    else {
        unreachable!()
    };
    assert_eq!(*audio_end_ms, 300);
    assert_eq!(*content_index, 0);
    assert_eq!(item_id, &t.item_id);
    Ok(())
}

#[tokio::test]
async fn no_truncate_when_everything_was_heard() -> anyhow::Result<()> {
    let script = "[session]\nspeed = 20.0\n[[response]]\nsay = \"Sure, one moment.\"\n";
    let h = Harness::start(script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAheard").await?;
    assert!(h.offer("CAheard", "+15550001111").await?.accepted);
    gw.start().await?;
    caller_turn_and_answer(&mut gw, 3).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;
    h.events_until("CAheard", "the assistant transcript", |evs| {
        evs.iter().any(
            |e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::Assistant as i32),
        )
    })
    .await?;
    // The caller speaks again after the answer was fully played.
    gw.speak(400).await?;
    gw.silence(700).await?;
    // The next answer arrives (fallback line) and no clear went out before it.
    let first_new = gw
        .until("the next answer", |f| {
            matches!(f, Frame::Audio(_) | Frame::Clear(_))
        })
        .await?;
    assert!(
        matches!(first_new, Frame::Audio(_)),
        "no clear: {first_new:?}"
    );
    let s = h.session().await?;
    assert!(
        client_events(&s, is_truncate).is_empty(),
        "no spurious truncate"
    );
    let events = h.stored_events("CAheard").await?;
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.interrupted))
    );
    Ok(())
}

#[tokio::test]
async fn a_recoverable_realtime_error_is_survived() -> anyhow::Result<()> {
    let script = r#"
[session]
speed = 20.0
[[response]]
error = { code = "rate_limit_exceeded", message = "Rate limit reached", type = "invalid_request_error" }
[[response]]
say = "Sorry about that, I am here."
"#;
    let h = Harness::start(script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAerr").await?;
    assert!(h.offer("CAerr", "+15550001111").await?.accepted);
    gw.start().await?;
    // The first caller turn is answered by the error only.
    gw.speak(600).await?;
    gw.silence(700).await?;
    assert!(gw.next(Duration::from_millis(500)).await.is_none());
    // The call goes on: the next turn is answered.
    caller_turn_and_answer(&mut gw, 6).await?;
    let events = h.stored_events("CAerr").await?;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.body, Some(Body::Ended(_))))
    );
    Ok(())
}

#[tokio::test]
async fn a_fatal_realtime_error_ends_the_call_with_model_error() -> anyhow::Result<()> {
    let script = "[session]\nspeed = 20.0\nmax_seconds = 1\n";
    let h = Harness::start(script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAfatal").await?;
    assert!(h.offer("CAfatal", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.until("hangup", |f| matches!(f, Frame::Hangup(_)))
        .await?;
    let events = h.ended_events("CAfatal").await?;
    assert_well_formed(&events);
    match events.last().and_then(|e| e.body.as_ref()) {
        Some(Body::Ended(e)) => assert_eq!(e.reason, "model_error"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn dtmf_reaches_the_model_as_text() -> anyhow::Result<()> {
    let script = "[session]\nspeed = 20.0\n[[response]]\nsay = \"You pressed five.\"\n";
    let h = Harness::start(script, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAdtmf").await?;
    assert!(h.offer("CAdtmf", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.send(inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }))
        .await?;
    gw.until("the answer", |f| matches!(f, Frame::Audio(_)))
        .await?;
    let s = h.session().await?;
    let texts: Vec<String> = s
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item.text()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        vec!["The caller pressed 5 on the keypad.".to_owned()]
    );
    assert_eq!(client_events(&s, is_response_create).len(), 1);
    Ok(())
}

#[tokio::test]
async fn end_call_hangs_up_after_the_goodbye_was_heard() -> anyhow::Result<()> {
    let script = r#"
[session]
speed = 20.0
[[response]]
say = "Alright."
call = { name = "end_call", arguments = '{"reason":"done"}' }
[[response]]
say = "Goodbye and take care."
"#;
    let h = Harness::start(script, &agents_toml(None, &["end_call"]), |_| {}).await?;
    let mut gw = h.gateway("CAbye").await?;
    assert!(h.offer("CAbye", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.speak(600).await?;
    gw.silence(700).await?;
    // "Alright." (1 word) then the goodbye (4 words).
    let expected = 5 * 250 * 8;
    gw.receive_audio(expected).await?;
    assert!(
        !gw.frames.iter().any(|f| matches!(f, Frame::Hangup(_))),
        "no hangup before the goodbye was played"
    );
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;
    let hangup = gw
        .until("hangup", |f| matches!(f, Frame::Hangup(_)))
        .await?;
    assert!(matches!(hangup, Frame::Hangup(h) if h.reason == "end_call"));
    let events = h.ended_events("CAbye").await?;
    assert_well_formed(&events);
    let b = bodies(&events);
    assert!(
        b.iter()
            .any(|b| matches!(b, Body::Tool(t) if t.name == "end_call"))
    );
    match b.last() {
        Some(Body::Ended(e)) => assert_eq!(e.reason, "end_call"),
        other => panic!("{other:?}"),
    }
    let s = h.session().await?;
    assert_eq!(
        client_events(&s, is_response_create).len(),
        1,
        "one goodbye response"
    );
    Ok(())
}

#[tokio::test]
async fn a_vad_response_racing_the_greeting_does_not_take_its_place() -> anyhow::Result<()> {
    // The greeting's response.create loses a race with server VAD (the server's own response
    // starts first, then refuses ours): the greeting is asked again after it and still spoken.
    let script = "[session]\nspeed = 20.0\nvad_race = [1]\n\
                  [[response]]\nsay = \"Sorry, go ahead.\"\n";
    let h = Harness::start(script, &agents_toml(Some(GREETING), &[]), |_| {}).await?;
    let mut gw = h.gateway("CArace").await?;
    assert!(h.offer("CArace", "+15550001111").await?.accepted);
    gw.start().await?;
    let events = h
        .events_until("CArace", "the greeting turn", |evs| {
            evs.iter()
                .any(|e| matches!(&e.body, Some(Body::Turn(t)) if t.kind == "greeting"))
        })
        .await?;
    let s = h
        .session_until("the greeting asked twice", |s| {
            s.client_events
                .iter()
                .filter(|e| is_response_create(e))
                .count()
                >= 2
        })
        .await?;
    let creates: Vec<_> = s
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ResponseCreate {
                response: Some(p), ..
            } => p.instructions.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert!(creates.iter().all(|i| i.contains(GREETING)), "{creates:?}");
    // The greeting latency belongs to the greeting's own response, not the VAD one.
    let greeting_turns = events
        .iter()
        .filter(|e| matches!(&e.body, Some(Body::Turn(t)) if t.kind == "greeting"))
        .count();
    assert_eq!(greeting_turns, 1);
    gw.stop().await?;
    let ended = h.ended_events("CArace").await?;
    let texts: Vec<String> = ended
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Transcript(t)) => Some(t.text.clone()),
            _ => None,
        })
        .collect();
    // Both were said: the server's own answer, then the greeting (perhaps cut short by the
    // hangup).
    assert!(texts.iter().any(|t| t == "Sorry, go ahead."), "{texts:?}");
    assert!(texts.iter().any(|t| t.starts_with("Thanks")), "{texts:?}");
    Ok(())
}

#[tokio::test]
async fn a_refused_session_update_ends_the_call_with_model_config_rejected() -> anyhow::Result<()> {
    // An agent with a voice the Realtime API does not have: the server refuses the whole update,
    // which would leave the session at 24 kHz PCM; the call ends instead of playing noise.
    let agents = agents_toml(Some(GREETING), &[]).replace("voice = \"cedar\"", "voice = \"nova\"");
    let h = Harness::start("[session]\nspeed = 20.0\n", &agents, |_| {}).await?;
    let mut gw = h.gateway("CAnova").await?;
    assert!(h.offer("CAnova", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.until("hangup", |f| matches!(f, Frame::Hangup(_)))
        .await?;
    let events = h.ended_events("CAnova").await?;
    assert_well_formed(&events);
    match events.last().and_then(|e| e.body.as_ref()) {
        Some(Body::Ended(e)) => assert_eq!(e.reason, EndReason::ModelConfigRejected.as_str()),
        other => panic!("{other:?}"),
    }
    // No assistant audio reached the caller.
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.heard_ms > 0))
    );
    Ok(())
}

#[tokio::test]
async fn an_agents_model_and_settings_reach_its_session() -> anyhow::Result<()> {
    let agents = format!(
        "{}model = \"gpt-realtime-mini\"\nnoise_reduction = \"near_field\"\n\
         [agent.transcription]\nlanguage = \"en\"\n\
         [agent.truncation]\nretention_ratio = 0.8\npost_instructions_tokens = 8000\n",
        agents_toml(Some(GREETING), &[])
    );
    let h = Harness::start("[session]\nspeed = 20.0\n", &agents, |_| {}).await?;
    let mut gw = h.gateway("CAmini").await?;
    assert!(h.offer("CAmini", "+15550001111").await?.accepted);
    gw.start().await?;
    let s = h
        .session_until("the session.update", |s| !s.client_events.is_empty())
        .await?;
    assert_eq!(s.query, "model=gpt-realtime-mini");
    let ClientEvent::SessionUpdate { session, .. } = &s.client_events[0] else {
        panic!("{:?}", s.client_events[0]);
    };
    let v = serde_json::to_value(session)?;
    assert_eq!(v["model"], "gpt-realtime-mini");
    assert_eq!(v["audio"]["input"]["noise_reduction"]["type"], "near_field");
    assert_eq!(v["audio"]["input"]["transcription"]["language"], "en");
    assert_eq!(v["truncation"]["retention_ratio"], 0.8);
    // The simulator accepted all of it: the session was confirmed, so the greeting is played.
    gw.until("greeting audio", |f| matches!(f, Frame::Audio(_)))
        .await?;
    gw.stop().await?;
    let events = h.ended_events("CAmini").await?;
    match events.last().and_then(|e| e.body.as_ref()) {
        Some(Body::Ended(e)) => assert_eq!(e.reason, EndReason::CallerHungUp.as_str()),
        other => panic!("{other:?}"),
    }
    match events.get(1).and_then(|e| e.body.as_ref()) {
        Some(Body::Started(s)) => assert_eq!(s.model, "gpt-realtime-mini"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
