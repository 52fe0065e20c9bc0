//! Barge-in: what the caller heard, truncation and clearing.

use super::*;

#[test]
fn barge_in_truncates_to_what_was_heard_and_clears() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    for _ in 0..5 {
        c.delta(10, "r1", "i1", 800);
    }
    let fx = c.take();
    let m = marks(&fx);
    assert_eq!(m.len(), 5);
    c.echo(110, &m[0]);
    c.echo(210, &m[1]);
    c.speech_started(250, "u1");
    let fx = c.take();
    let truncates: Vec<_> = realtime(&fx)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::ConversationItemTruncate { .. }))
        .collect();
    assert_eq!(
        truncates,
        vec![ClientEvent::ConversationItemTruncate {
            event_id: None,
            item_id: "i1".into(),
            content_index: 0,
            audio_end_ms: 200
        }]
    );
    assert!(outs(&fx).contains(&outbound_frame::Frame::Clear(switchboard_proto::Clear {})));
    // Echoes Twilio sends after the clear are ignored; late audio of the item is dropped.
    c.echo(260, &m[3]);
    c.delta(270, "r1", "i1", 800);
    assert!(outs(&c.take()).is_empty());
    // The server cancels the response: the transcript records the interruption.
    c.transcript_done(280, "r1", "i1", "Let me tell you about our");
    c.done(290, "r1", "cancelled", json!([]));
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::Assistant as i32);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 200);
    assert_eq!(t[0].text, "Let me tell you about our");
    assert_eq!(t[0].offset_ms, 10);
}

#[test]
fn barge_in_after_response_done_still_records_the_interruption() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 3);
    let fx = c.take();
    assert!(
        transcripts(&fx).is_empty(),
        "fate unknown while audio is queued"
    );
    let m = marks(&fx);
    c.echo(110, &m[0]);
    c.speech_started(150, "u1");
    let fx = c.take();
    assert_eq!(
        realtime(&fx)
            .iter()
            .filter(|e| matches!(
                e,
                ClientEvent::ConversationItemTruncate {
                    audio_end_ms: 100,
                    ..
                }
            ))
            .count(),
        1
    );
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 100);
}

#[test]
fn no_truncate_or_clear_when_everything_was_heard() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 2);
    let m = marks(&c.take());
    c.echo(100, &m[0]);
    c.echo(200, &m[1]);
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert!(!t[0].interrupted);
    assert_eq!(t[0].heard_ms, 200);
    assert_eq!(t[0].text, "Hello there.");
    c.speech_started(300, "u1");
    let fx = c.take();
    assert!(realtime(&fx).is_empty(), "no spurious truncate: {fx:?}");
    assert!(outs(&fx).is_empty(), "no clear: {fx:?}");
}

#[test]
fn barge_in_at_0_ms_heard_deletes_the_item_instead_of_truncating() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.delta(10, "r1", "i1", 800);
    c.take();
    c.speech_started(20, "u1");
    let fx = c.take();
    // The server refuses a truncate to 0 ms; the model must not keep words nobody heard.
    assert_eq!(
        realtime(&fx),
        vec![ClientEvent::ConversationItemDelete {
            event_id: None,
            item_id: "i1".into()
        }]
    );
    assert_eq!(
        outs(&fx),
        vec![outbound_frame::Frame::Clear(switchboard_proto::Clear {})]
    );
    c.done(30, "r1", "cancelled", json!([]));
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 0);
}

#[test]
fn barge_in_deletes_items_queued_behind_the_one_playing() {
    let mut c = Call::new(agent_with(|a| a.filler_after = None));
    c.start(0);
    // A first answer, then a second response (after a tool round) queued behind it at Twilio.
    c.created(10, "r1");
    for _ in 0..3 {
        c.delta(10, "r1", "i1", 800);
    }
    c.done(20, "r1", "completed", json!([]));
    c.vad_created(30, "r2");
    for _ in 0..3 {
        c.delta(30, "r2", "i2", 800);
    }
    let m = marks(&c.take());
    c.echo(110, &m[0]);
    c.speech_started(150, "u1");
    let rt = realtime(&c.take());
    assert_eq!(
        rt,
        vec![
            ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: "i1".into(),
                content_index: 0,
                audio_end_ms: 100
            },
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: "i2".into()
            },
        ]
    );
}
