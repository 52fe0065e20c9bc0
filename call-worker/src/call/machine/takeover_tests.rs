//! A call taken over from a previous owner: its new session, the replayed caller audio, and
//! where the caller's speech ends in stream time.

use super::*;
use crate::tools::SessionTools;
use serde_json::json;
use switchboard_proto::{InboundAudio, StreamStart};

fn setup() -> CallSetup {
    CallSetup {
        offer: CallOffer {
            call_sid: "CA1".into(),
            epoch: 1,
            takeover: "worker_lost".into(),
            ..Default::default()
        },
        agent: Arc::new(Agent::new("desk", "Be helpful.")),
        worker_id: "w2".into(),
        model: "gpt-realtime".into(),
        tool_timeout: Duration::from_millis(8000),
        accepted_at_ms: 1_050,
    }
}

fn audio(timestamp_ms: u32, chunk: u32, replayed: bool) -> inbound_frame::Frame {
    inbound_frame::Frame::Audio(InboundAudio {
        payload: Bytes::from(vec![0xffu8; 160]),
        timestamp_ms,
        chunk,
        replayed,
    })
}

fn server(m: &mut CallMachine, now: Instant, v: serde_json::Value) {
    let ev: ServerEvent = serde_json::from_value(v).expect("server event");
    m.on_realtime(RealtimeEvent::Server(Box::new(ev)), now);
}

#[test]
fn a_taken_over_call_seeds_its_session_and_answers_a_waiting_caller() {
    let t0 = Instant::now();
    let resumed = Resumed {
        usage: Usage {
            input_tokens: 40,
            ..Default::default()
        },
        waiting: true,
        heard_until_ms: 1_000,
        elapsed: Duration::from_secs(30),
        ..Default::default()
    };
    let mut m = CallMachine::take_over(setup(), resumed, t0);
    assert!(m.take_effects().is_empty(), "no second `started`");
    assert!(m.is_takeover());
    let items = vec![Item::user_text("What time do you open?")];
    m.take_over_session(SessionTools::default(), items.clone(), t0);
    let fx = m.take_effects();
    let events: Vec<&ClientEvent> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Realtime(ev) => Some(ev.as_ref()),
            _ => None,
        })
        .collect();
    match events.first() {
        Some(ClientEvent::SessionUpdate { session, .. }) => {
            // Seeded with text, the model must still answer in audio.
            assert_eq!(session.output_modalities, Some(vec!["audio".to_owned()]));
        }
        other => panic!("session.update first: {other:?}"),
    }
    assert_eq!(events[1], &ClientEvent::item_create(items[0].clone()));
    assert!(matches!(events[2], ClientEvent::ResponseCreate { .. }));
    assert_eq!(events.len(), 3);
    assert!(!m.is_takeover());

    // The resumed start, then the gateway's replay: what the transcript holds is skipped.
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            epoch: 1,
            resumed: true,
            ..Default::default()
        }),
        t0,
    );
    m.take_effects();
    m.on_inbound(audio(980, 50, true), t0);
    m.on_inbound(audio(1_000, 51, true), t0);
    assert!(m.take_effects().is_empty(), "already transcribed");
    m.on_inbound(audio(1_020, 52, true), t0);
    m.on_inbound(audio(1_040, 53, false), t0);
    let sent = m
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Audio(_)))
        .count();
    assert_eq!(sent, 2);

    // The session heard speech end 30 ms into what it got: stream time 1050.
    server(
        &mut m,
        t0,
        json!({"type":"input_audio_buffer.speech_stopped","event_id":"e1","audio_end_ms":30,"item_id":"item_u"}),
    );
    server(
        &mut m,
        t0,
        json!({"type":"conversation.item.input_audio_transcription.completed","event_id":"e2",
            "item_id":"item_u","content_index":0,"transcript":"Also on Saturday?"}),
    );
    let entry = m.take_effects().into_iter().find_map(|e| match e {
        Effect::Event(Body::Transcript(t)) => Some(t),
        _ => None,
    });
    let entry = entry.expect("the caller's transcript");
    assert_eq!(entry.text, "Also on Saturday?");
    assert_eq!(entry.audio_end_ms, 1_050);
}

#[test]
fn a_taken_over_call_resends_unanswered_tool_calls_before_answering() {
    let t0 = Instant::now();
    let resumed = Resumed {
        waiting: true,
        pending_tools: vec![ToolDispatched {
            audio_end_ms: 0,
            redacted: Vec::new(),
            call_id: "call_7".into(),
            name: "book".into(),
            arguments: "{}".into(),
        }],
        ..Default::default()
    };
    let mut agent = Agent::new("desk", "Be helpful.");
    agent.tools = vec!["book".into()];
    let mut s = setup();
    s.agent = Arc::new(agent);
    let mut m = CallMachine::take_over(s, resumed, t0);
    let mut tools = SessionTools::default();
    tools
        .functions
        .push(switchboard_realtime::session::FunctionTool {
            kind: "function".into(),
            name: "book".into(),
            description: "Books.".into(),
            parameters: json!({"type": "object"}),
        });
    tools.business.insert(
        "book".into(),
        switchboard_proto::ToolSpec {
            name: "book".into(),
            timeout_ms: 2000,
            ..Default::default()
        },
    );
    m.take_over_session(tools, Vec::new(), t0);
    let fx = m.take_effects();
    // Written ahead again, then sent with the same call id; no answer before its output.
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Event(Body::Dispatched(d)) if d.call_id == "call_7"))
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::CallTool(c) if c.call_id == "call_7"))
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Realtime(ev) if matches!(ev.as_ref(), ClientEvent::ResponseCreate { .. }))));
}

#[test]
fn a_stream_gone_without_reattach_ends_the_call_stream_lost() {
    let t0 = Instant::now();
    let mut m = CallMachine::new(setup(), t0);
    m.on_stream_gone(t0);
    assert_eq!(
        m.ended(),
        None,
        "no stream yet: the start timeout applies instead"
    );
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZ1".into(),
            ..Default::default()
        }),
        t0,
    );
    // A re-attach (a new stream of the call) keeps it going.
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZ2".into(),
            resumed: true,
            attach: 2,
            ..Default::default()
        }),
        t0,
    );
    assert_eq!(m.ended(), None);
    m.on_stream_gone(t0 + REATTACH_WINDOW);
    assert_eq!(m.ended(), Some(EndReason::StreamLost));
}

#[test]
fn caller_audio_of_the_takeover_waits_for_the_seeded_session_and_keeps_its_newest_part() {
    let t0 = Instant::now();
    let resumed = Resumed {
        waiting: false,
        heard_until_ms: 1_000,
        ..Default::default()
    };
    let mut m = CallMachine::take_over(setup(), resumed, t0);
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            epoch: 1,
            resumed: true,
            ..Default::default()
        }),
        t0,
    );
    m.take_effects();
    // The replay and live audio come before the session is configured: nothing is sent yet
    // (it would precede the `session.update` that sets the audio format).
    let frames = TAKEOVER_AUDIO_LIMIT / 160 + 10;
    for i in 0..frames {
        let replayed = i < frames / 2;
        m.on_inbound(audio(1_020 + 20 * i as u32, 60 + i as u32, replayed), t0);
    }
    assert!(
        !m.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Audio(_))),
        "audio before the session was configured"
    );
    m.take_over_session(SessionTools::default(), vec![Item::user_text("Hi")], t0);
    let fx = m.take_effects();
    let first_audio = fx
        .iter()
        .position(|e| matches!(e, Effect::Audio(_)))
        .expect("the kept audio");
    let update = fx
        .iter()
        .position(|e| matches!(e, Effect::Realtime(ev) if matches!(ev.as_ref(), ClientEvent::SessionUpdate { .. })))
        .expect("session.update");
    let seeded = fx
        .iter()
        .position(|e| matches!(e, Effect::Realtime(ev) if matches!(ev.as_ref(), ClientEvent::ConversationItemCreate { .. })))
        .expect("the seeded item");
    assert!(update < seeded && seeded < first_audio, "{fx:?}");
    // The newest 5 s are kept; the oldest 10 frames were dropped.
    let sent = fx.iter().filter(|e| matches!(e, Effect::Audio(_))).count();
    assert_eq!(sent, TAKEOVER_AUDIO_LIMIT / 160);
    // Later audio goes straight to the session.
    m.on_inbound(audio(20_000, 2_000, false), t0);
    assert_eq!(
        m.take_effects()
            .iter()
            .filter(|e| matches!(e, Effect::Audio(_)))
            .count(),
        1
    );
}
