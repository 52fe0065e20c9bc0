//! A call outlives its Realtime session: on expiry or a dropped socket the worker opens a new
//! session, configures it again and replays the conversation, and the caller talks on.

mod common;

use common::*;
use realtime_sim::SessionRecord;
use switchboard_proto::call_event::Body;
use switchboard_proto::{CallEvent, Role};
use switchboard_realtime::{ClientEvent, Item};
use switchboard_testkit::eventually;

const GREETING: &str = "Thanks for calling Acme Dental.";
const ANSWER: &str = "Nice to meet you, Maria.";

/// Waits until the simulator has seen at least `n` sessions, the `n`th with at least
/// `events` client events, and returns them.
async fn sessions(
    h: &Harness,
    n: usize,
    events: usize,
    what: &str,
) -> anyhow::Result<Vec<SessionRecord>> {
    eventually(WAIT, what, || async {
        let s = h.sim.sessions().await;
        (s.len() >= n && s[n - 1].client_events.len() >= events).then_some(s)
    })
    .await
}

/// The first client events of a session: session.update, then the items created before
/// anything else.
fn replayed(s: &SessionRecord) -> (bool, Vec<Item>) {
    let starts_with_update = matches!(s.client_events.first(), Some(ClientEvent::SessionUpdate { session, .. })
        if session.instructions.as_deref() == Some("You are the front desk of Acme Dental."));
    let items = s.client_events[1..]
        .iter()
        .map_while(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item.clone()),
            _ => None,
        })
        .collect();
    (starts_with_update, items)
}

fn assistant_texts(events: &[CallEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Transcript(t)) if t.role == Role::Assistant as i32 => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

async fn greeted(h: &Harness, gw: &mut Gateway, sid: &str) -> anyhow::Result<usize> {
    let mut echoed = 0;
    gw.start().await?;
    gw.receive_audio(GREETING.split_whitespace().count() * 250 * 8)
        .await?;
    gw.echo_all(&mut echoed).await?;
    h.events_until(sid, "the greeting transcript", |evs| {
        !assistant_texts(evs).is_empty()
    })
    .await?;
    Ok(echoed)
}

/// One caller turn answered with [`ANSWER`], heard in full.
async fn turn(h: &Harness, gw: &mut Gateway, sid: &str, echoed: &mut usize) -> anyhow::Result<()> {
    let before = gw.audio_bytes;
    let answers_before = count_answers(&h.stored_events(sid).await?);
    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.receive_audio(before + ANSWER.split_whitespace().count() * 250 * 8)
        .await?;
    gw.echo_all(echoed).await?;
    h.events_until(sid, "the answer's transcript", |evs| {
        count_answers(evs) > answers_before
    })
    .await?;
    Ok(())
}

fn count_answers(events: &[CallEvent]) -> usize {
    assistant_texts(events)
        .iter()
        .filter(|t| *t == ANSWER)
        .count()
}

#[tokio::test]
async fn an_expired_session_is_replaced_and_the_conversation_replayed() -> anyhow::Result<()> {
    let script = format!(
        "hear = [\"Hi, this is Maria.\"]\n[session]\nspeed = 20.0\nmax_seconds = 3\n\
         [[response]]\nsay = \"{ANSWER}\"\n[[response]]\nsay = \"{ANSWER}\"\n"
    );
    let h = Harness::start(&script, &agents_toml(Some(GREETING), &["end_call"]), |_| {}).await?;
    let mut gw = h.gateway("CAexpire").await?;
    assert!(h.offer("CAexpire", "+15550001111").await?.accepted);
    let mut echoed = greeted(&h, &mut gw, "CAexpire").await?;
    turn(&h, &mut gw, "CAexpire", &mut echoed).await?;

    // The first session expires (`session_expired`, then close 1001): a second one opens,
    // configured again, with the conversation so far replayed as text, in order.
    let all = sessions(&h, 2, 4, "a second realtime session").await?;
    let (update_first, items) = replayed(&all[1]);
    assert!(update_first, "{:?}", all[1].client_events);
    assert_eq!(
        items,
        vec![
            Item::assistant_text(GREETING),
            Item::user_text("Hi, this is Maria."),
            Item::assistant_text(ANSWER),
        ]
    );
    // The new session does not greet again.
    assert!(!all[1].client_events.iter().any(is_response_create));

    // The caller talks on and is answered by the new session.
    turn(&h, &mut gw, "CAexpire", &mut echoed).await?;
    let events = h.stored_events("CAexpire").await?;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.body, Some(Body::Ended(_)))),
        "the call goes on"
    );
    gw.stop().await?;
    let events = h.ended_events("CAexpire").await?;
    assert_well_formed(&events);
    let Some(Body::Ended(ended)) = events.last().and_then(|e| e.body.as_ref()) else {
        panic!()
    };
    assert_eq!(ended.reason, "caller_hung_up");
    Ok(())
}

#[tokio::test]
async fn a_dropped_socket_is_replaced_and_the_call_goes_on() -> anyhow::Result<()> {
    let script = format!(
        "hear = [\"Hi, this is Maria.\", \"Hello?\"]\n[session]\nspeed = 20.0\n\
         [[response]]\nsay = \"{ANSWER}\"\n[[response]]\ndrop = true\n\
         [[response]]\nsay = \"{ANSWER}\"\n"
    );
    let h = Harness::start(&script, &agents_toml(Some(GREETING), &["end_call"]), |_| {}).await?;
    let mut gw = h.gateway("CAdrop").await?;
    assert!(h.offer("CAdrop", "+15550001111").await?.accepted);
    let mut echoed = greeted(&h, &mut gw, "CAdrop").await?;
    turn(&h, &mut gw, "CAdrop", &mut echoed).await?;

    // The second caller turn makes the simulator drop the connection (no close frame).
    gw.speak(600).await?;
    gw.silence(700).await?;
    let all = sessions(&h, 2, 4, "a second realtime session").await?;
    let (update_first, items) = replayed(&all[1]);
    assert!(update_first, "{:?}", all[1].client_events);
    assert_eq!(
        items[..3],
        [
            Item::assistant_text(GREETING),
            Item::user_text("Hi, this is Maria."),
            Item::assistant_text(ANSWER),
        ]
    );

    // A later turn is answered by the new session (its script goes on after the seeded
    // conversation, past the drop).
    turn(&h, &mut gw, "CAdrop", &mut echoed).await?;
    assert_eq!(h.sim.sessions().await.len(), 2, "one reconnect");
    gw.stop().await?;
    let events = h.ended_events("CAdrop").await?;
    assert_well_formed(&events);
    assert_eq!(count_answers(&events), 2);
    let Some(Body::Ended(ended)) = events.last().and_then(|e| e.body.as_ref()) else {
        panic!()
    };
    assert_eq!(ended.reason, "caller_hung_up");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_model_ends_the_call_after_three_attempts() -> anyhow::Result<()> {
    // The simulator refuses every upgrade (no API key configured), so each new session fails at
    // once: after the allowed attempts the call ends instead of hanging silently.
    let script = "[session]\nrequire_api_key = true\n";
    let h = Harness::start(script, &agents_toml(Some(GREETING), &[]), |_| {}).await?;
    let mut gw = h.gateway("CAdown").await?;
    assert!(h.offer("CAdown", "+15550001111").await?.accepted);
    gw.start().await?;
    let hangup = gw
        .until("a hangup", |f| {
            matches!(f, switchboard_proto::outbound_frame::Frame::Hangup(_))
        })
        .await?;
    assert!(
        matches!(&hangup, switchboard_proto::outbound_frame::Frame::Hangup(hg) if hg.reason == "error")
    );
    let events = h.ended_events("CAdown").await?;
    let Some(Body::Ended(ended)) = events.last().and_then(|e| e.body.as_ref()) else {
        panic!()
    };
    assert_eq!(ended.reason, "model_error");
    Ok(())
}
