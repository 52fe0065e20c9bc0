//! Transcripts and turn latency.

use super::*;

#[test]
fn user_transcript_carries_the_speech_start_offset_and_turn_latency_is_measured() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.speech_started(1000, "u1");
    c.speech_stopped(2500, "u1");
    c.server(
        2600,
        json!({"type":"conversation.item.input_audio_transcription.completed","item_id":"u1",
               "content_index":0,"transcript":"Hi, this is Maria."}),
    );
    c.created(2700, "r1");
    c.delta(2900, "r1", "i1", 800);
    let fx = c.take();
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::User as i32);
    assert_eq!(t[0].text, "Hi, this is Maria.");
    assert_eq!(t[0].item_id, "u1");
    assert_eq!(t[0].offset_ms, 1000);
    let turn = events(&fx)
        .into_iter()
        .find_map(|b| match b {
            Body::Turn(t) => Some(t),
            _ => None,
        })
        .unwrap();
    assert_eq!(turn.kind, "response");
    assert_eq!(turn.latency_ms, 400);
    assert_eq!(turn.response_id, "r1");
}
