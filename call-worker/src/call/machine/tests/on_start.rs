//! Starting a call: the session, the greeting and caller audio.

use super::*;

#[test]
fn started_first_then_ga_session_update_then_greeting() {
    let mut c = Call::new(agent_with(|a| {
        a.greeting = Some("Thanks for calling!".into())
    }));
    let fx = c.take();
    assert!(matches!(&fx[0], Effect::Event(Body::Started(s))
        if s.agent_id == "desk" && s.worker_id == "w1" && s.model == "gpt-realtime" && s.from == "+15550001234"));
    let rt = realtime(&fx);
    let ClientEvent::SessionUpdate { session, .. } = &rt[0] else {
        panic!("first client event must be session.update: {rt:?}");
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(v["type"], "realtime");
    assert_eq!(v["model"], "gpt-realtime");
    assert_eq!(v["output_modalities"], json!(["audio"]));
    assert_eq!(v["instructions"], "You are the front desk.");
    assert_eq!(v["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(
        v["audio"]["input"]["transcription"]["model"],
        "gpt-4o-mini-transcribe"
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,
               "create_response":true,"interrupt_response":true})
    );
    assert_eq!(v["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(v["audio"]["output"]["voice"], "marin");
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"].as_array().unwrap().len(), 5);
    let creates = response_creates(&fx);
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0].as_ref().unwrap().instructions.as_deref(),
        Some("Greet the caller by saying exactly: \"Thanks for calling!\"")
    );
}

#[test]
fn no_greeting_means_no_response_create() {
    let mut c = Call::new(agent_with(|_| {}));
    assert!(response_creates(&c.take()).is_empty());
}

#[test]
fn semantic_vad_is_passed_through() {
    let mut c = Call::new(agent_with(|a| {
        a.turn_detection = TurnDetectionConfig::SemanticVad {
            eagerness: Some("low".into()),
        }
    }));
    let fx = c.take();
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&fx)[0] else {
        panic!()
    };
    let td = session
        .audio
        .as_ref()
        .unwrap()
        .input
        .as_ref()
        .unwrap()
        .turn_detection
        .clone();
    assert!(
        matches!(td, Some(TurnDetection::SemanticVad { eagerness: Some(e), .. }) if e == "low")
    );
}

#[test]
fn greeting_audio_is_held_until_start_and_greeting_latency_recorded() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi!".into())));
    c.take();
    c.created(10, "r1");
    c.delta(20, "r1", "i1", 800);
    c.delta(30, "r1", "i1", 1000);
    let fx = c.take();
    assert!(outs(&fx).is_empty(), "nothing goes out before start");
    let turns: Vec<_> = events(&fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Turn(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].kind, "greeting");
    assert_eq!(turns[0].response_id, "r1");
    // 50 ms from the offer to the worker, then 20 ms to the first audio.
    assert_eq!(turns[0].latency_ms, 70);
    c.start(100);
    let fx = c.take();
    let audio: usize = outs(&fx)
        .iter()
        .map(|f| match f {
            outbound_frame::Frame::Audio(a) => a.payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, 1800);
    // 800 -> one chunk, 1000 -> 800 + 200: a mark after each chunk.
    assert_eq!(marks(&fx).len(), 3);
}

#[test]
fn prestart_buffer_is_bounded() {
    let mut c = Call::new(agent_with(|_| {}));
    c.created(0, "r1");
    for _ in 0..40 {
        c.delta(0, "r1", "i1", 8000); // 1 s each
    }
    c.take();
    c.start(10);
    let audio: usize = outs(&c.take())
        .iter()
        .map(|f| match f {
            outbound_frame::Frame::Audio(a) => a.payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, PRESTART_BUFFER_BYTES);
}

#[test]
fn inbound_audio_is_forwarded_untouched() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.inbound(
        20,
        inbound_frame::Frame::Audio(InboundAudio {
            replayed: false,
            payload: Bytes::from_static(&[0xff, 0x00, 0x7f]),
            timestamp_ms: 20,
            chunk: 1,
        }),
    );
    // The writer base64-encodes it into the append (see `realtime::append_json`).
    assert_eq!(
        c.take(),
        vec![Effect::Audio(Bytes::from_static(&[0xff, 0x00, 0x7f]))]
    );
}
