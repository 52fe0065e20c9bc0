//! Session confirmation: the configuration the session applied.

use super::*;

#[test]
fn the_agents_model_settings_reach_the_session() {
    use switchboard_realtime::session::{Transcription, Truncation};
    let c = Call::new(agent_with(|a| {
        a.noise_reduction = Some("near_field".into());
        a.transcription = Some(Transcription {
            model: "gpt-4o-transcribe".into(),
            language: Some("en".into()),
            prompt: Some("dental".into()),
        });
        a.truncation = Some(Truncation::retention_ratio(0.8, Some(8000)));
        a.turn_detection = TurnDetectionConfig::SemanticVad {
            eagerness: Some("low".into()),
        };
    }));
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&c.out)[0] else {
        panic!()
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(
        v["audio"]["input"]["noise_reduction"],
        json!({"type":"near_field"})
    );
    assert_eq!(
        v["audio"]["input"]["transcription"],
        json!({"model":"gpt-4o-transcribe","language":"en","prompt":"dental"})
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"semantic_vad","eagerness":"low","create_response":true,"interrupt_response":true})
    );
    assert_eq!(
        v["truncation"],
        json!({"type":"retention_ratio","retention_ratio":0.8,"token_limits":{"post_instructions":8000}})
    );
    // Transcription off: no transcription in the session at all.
    let off = Call::new(agent_with(|a| a.transcription = None));
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&off.out)[0] else {
        panic!()
    };
    assert_eq!(
        session
            .audio
            .as_ref()
            .unwrap()
            .input
            .as_ref()
            .unwrap()
            .transcription,
        None
    );
}

#[test]
fn session_update_carries_an_event_id() {
    let c = Call::new(agent_with(|_| {}));
    let ClientEvent::SessionUpdate { event_id, .. } = &realtime(&c.out)[0] else {
        panic!()
    };
    // `session.updated` does not echo it, but a refusal does.
    assert_eq!(event_id.as_deref(), Some("sb_session_1"));
}

#[test]
fn a_refused_session_update_ends_the_call_with_model_config_rejected() {
    for echo_id in [true, false] {
        let (mut m, t0) = unconfirmed_call();
        let error = json!({"type":"error","event_id":"event_1","error":{
            "type":"invalid_request_error","code":"invalid_value",
            "message":"Invalid value: 'nova'.","param":"session.audio.output.voice",
            "event_id": if echo_id { Some("sb_session_1") } else { None }}});
        let ev = ServerEvent::parse(&error.to_string()).unwrap();
        m.on_realtime(RealtimeEvent::Server(Box::new(ev)), t0);
        let fx = m.take_effects();
        assert_eq!(m.ended(), Some(EndReason::ModelConfigRejected));
        assert_eq!(
            ended(&fx).unwrap().reason,
            EndReason::ModelConfigRejected.as_str()
        );
        assert!(
            outs(&fx)
                .iter()
                .any(|f| matches!(f, outbound_frame::Frame::Hangup(_)))
        );
    }
}

#[test]
fn a_session_left_at_pcm_ends_the_call_and_its_audio_is_never_played() {
    let (mut m, t0) = unconfirmed_call();
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZ1".into(),
            ..Default::default()
        }),
        t0,
    );
    m.take_effects();
    // Audio before the session is confirmed is not played.
    m.on_realtime(
        RealtimeEvent::AudioDelta {
            response_id: "r0".into(),
            item_id: "i0".into(),
            audio: Bytes::from(vec![0u8; 800]),
        },
        t0,
    );
    assert!(outs(&m.take_effects()).is_empty());
    let mut session = m.full_session();
    session
        .audio
        .as_mut()
        .unwrap()
        .output
        .as_mut()
        .unwrap()
        .format = Some(switchboard_realtime::session::AudioFormat::pcm());
    let updated = json!({"type":"session.updated","event_id":"e","session":session});
    let ev = ServerEvent::parse(&updated.to_string()).unwrap();
    m.on_realtime(RealtimeEvent::Server(Box::new(ev)), t0);
    assert_eq!(m.ended(), Some(EndReason::ModelConfigRejected));
}
