//! Response arbitration: which response answers which request.

use super::*;

#[test]
fn vad_response_created_before_the_refusal_does_not_take_the_greeting() {
    for echo_id in [true, false] {
        let mut c = Call::new(agent_with(|a| a.greeting = Some("Hello, Acme.".into())));
        let first = c.take();
        let id = pending_event_id(&first);
        c.start(0);
        // The caller spoke at once: server VAD's response starts before our refusal arrives.
        c.vad_created(10, "resp_vad");
        c.server(11, busy_error(if echo_id { id.as_deref() } else { None }));
        assert!(
            response_creates(&c.take()).is_empty(),
            "not while VAD's runs"
        );
        c.delta(20, "resp_vad", "i_vad", 800);
        c.done(30, "resp_vad", "completed", json!([]));
        // Asked again; the VAD response was not taken for the greeting.
        let again = response_creates(&c.take());
        assert_eq!(again.len(), 1, "echo_id={echo_id}");
        assert!(
            again[0]
                .as_ref()
                .and_then(|p| p.instructions.as_deref())
                .is_some_and(|i| i.contains("Hello, Acme.")),
            "{again:?}"
        );
        c.created(40, "resp_greeting");
        c.delta(40, "resp_greeting", "i_g", 800);
        let turns: Vec<_> = events(&c.take())
            .into_iter()
            .filter_map(|b| match b {
                Body::Turn(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].kind, "greeting");
        assert_eq!(turns[0].response_id, "resp_greeting");
    }
}

#[test]
fn refusal_before_the_vad_response_created_retries_after_it() {
    let mut c = greeting_call();
    c.start(0);
    c.server(10, busy_error(None));
    assert!(
        response_creates(&c.take()).is_empty(),
        "waits for the running response"
    );
    c.vad_created(11, "resp_vad");
    c.done(30, "resp_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "the greeting again");
}

#[test]
fn a_refused_goodbye_is_said_after_the_vad_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.server(
        20,
        json!({"type":"response.function_call_arguments.done","response_id":"r1","item_id":"f1",
               "output_index":0,"call_id":"c1","name":"end_call","arguments":"{}"}),
    );
    c.done(30, "r1", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "the goodbye request");
    c.vad_created(40, "resp_vad");
    c.server(41, busy_error(None));
    c.delta(50, "resp_vad", "i_vad", 800);
    c.done(60, "resp_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "asked again");
    assert!(
        c.m.ended().is_none(),
        "the VAD answer was not taken for the goodbye"
    );
    c.created(70, "resp_bye");
    c.delta(70, "resp_bye", "i_bye", 800);
    c.done(80, "resp_bye", "completed", json!([]));
    let m = marks(&c.take());
    for name in &m {
        c.echo(200, name);
    }
    c.take();
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn a_refused_keypress_answer_is_retried() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.vad_created(20, "resp_vad");
    c.server(21, busy_error(None));
    c.done(30, "resp_vad", "completed", json!([]));
    assert_eq!(
        response_creates(&c.take()).len(),
        1,
        "the keypress is answered"
    );
}
