//! Outbound calls with answering-machine detection: the held greeting, the verdicts, the
//! voicemail message.

use switchboard_proto::AnsweringMachine;

use super::*;

const GREETING: &str = "Hi, this is Acme Dental.";
const MESSAGE: &str = "Hi, this is Acme Dental. Please call us back.";

fn amd_call(message: Option<&str>) -> Call {
    let agent = agent_with(|a| {
        a.greeting = Some(GREETING.into());
        a.voicemail_message = message.map(str::to_owned);
    });
    let mut c = Call::with_offer(agent, |o| {
        o.set_direction(switchboard_proto::Direction::Outbound);
        o.async_amd = true;
    });
    c.start(0);
    c
}

fn verdict(c: &mut Call, ms: u64, answered_by: &str) {
    c.inbound(
        ms,
        inbound_frame::Frame::Amd(AnsweringMachine {
            answered_by: answered_by.into(),
            detection_ms: u32::try_from(ms).unwrap(),
        }),
    );
}

fn instructions_of(fx: &[Effect]) -> Vec<String> {
    response_creates(fx)
        .into_iter()
        .map(|p| p.and_then(|p| p.instructions).unwrap_or_default())
        .collect()
}

fn is_greeting(instructions: &str) -> bool {
    instructions.contains(GREETING) && instructions.starts_with("Greet")
}

fn outcome(fx: &[Effect]) -> Option<(String, String)> {
    events(fx).into_iter().find_map(|b| match b {
        Body::Outcome(o) => Some((o.outcome, o.detail)),
        _ => None,
    })
}

#[test]
fn the_greeting_waits_for_a_human_verdict() {
    let mut c = amd_call(Some(MESSAGE));
    assert!(response_creates(&c.take()).is_empty(), "greeting held");
    verdict(&mut c, 1800, "human");
    let asked = instructions_of(&c.take());
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(is_greeting(&asked[0]), "{asked:?}");
    // The wait is over: no timer fires a second greeting.
    c.m.on_timer(c.at(5000));
    assert!(response_creates(&c.take()).is_empty());
}

#[test]
fn a_machine_with_a_message_hears_it_after_the_beep_then_the_call_hangs_up() {
    let mut c = amd_call(Some(MESSAGE));
    c.take();
    // The verdict comes before the timeout: the box greeted without tripping the VAD.
    verdict(&mut c, 4000, "machine_end_beep");
    let fx = c.take();
    let asked = instructions_of(&fx);
    assert_eq!(
        asked,
        [format!("Say exactly: \"{MESSAGE}\"")],
        "no greeting, the message"
    );
    assert_eq!(
        outcome(&fx),
        Some(("voicemail".into(), "machine_end_beep".into()))
    );
    assert!(
        transcripts(&fx)
            .iter()
            .any(|t| t.role == Role::System as i32 && t.text.contains("machine_end_beep"))
    );

    c.say(4100, "r1", "i1", 3);
    let fx = c.take();
    let m = marks(&fx);
    assert_eq!(m.len(), 3);
    c.echo(4200, &m[0]);
    c.echo(4300, &m[1]);
    assert!(c.m.ended().is_none(), "the message is still playing");
    assert!(outs(&c.take()).is_empty());
    c.echo(4400, &m[2]);
    let fx = c.take();
    assert!(
        matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "voicemail_left"),
        "{:?}",
        outs(&fx)
    );
    assert_eq!(ended(&fx).unwrap().reason, "voicemail_left");
    assert_eq!(c.m.ended(), Some(EndReason::VoicemailLeft));
}

#[test]
fn a_machine_start_holds_the_message_until_the_machine_greeting_ends() {
    let mut c = amd_call(Some(MESSAGE));
    c.take();
    verdict(&mut c, 1500, "machine_start");
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), None, "no timeout greets the machine");
    c.speech_started(2000, "u1");
    assert!(
        response_creates(&c.take()).is_empty(),
        "its greeting is no caller"
    );
    verdict(&mut c, 9000, "machine_end_silence");
    assert_eq!(
        instructions_of(&c.take()),
        [format!("Say exactly: \"{MESSAGE}\"")]
    );
}

#[test]
fn a_machine_without_a_message_or_a_fax_is_hung_up_on_at_once() {
    for (answered_by, reason) in [
        ("machine_start", "answering_machine"),
        ("machine_end_beep", "answering_machine"),
        ("fax", "fax"),
    ] {
        let mut c = amd_call(None);
        c.take();
        verdict(&mut c, 1200, answered_by);
        let fx = c.take();
        assert!(response_creates(&fx).is_empty(), "{answered_by}");
        assert!(
            outs(&fx)
                .iter()
                .any(|f| matches!(f, outbound_frame::Frame::Hangup(h) if h.reason == reason)),
            "{answered_by}: {:?}",
            outs(&fx)
        );
        assert_eq!(ended(&fx).unwrap().reason, reason, "{answered_by}");
        assert_eq!(
            outcome(&fx),
            Some(("not_reached".into(), answered_by.into()))
        );
    }
    // With a message, a fax still hangs up.
    let mut c = amd_call(Some(MESSAGE));
    verdict(&mut c, 1200, "fax");
    assert_eq!(c.m.ended(), Some(EndReason::Fax));
}

#[test]
fn without_a_verdict_the_agent_greets_at_the_timeout() {
    let mut c = amd_call(None);
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(5000)), "amd_timeout_seconds");
    c.m.on_timer(c.at(4999));
    assert!(response_creates(&c.take()).is_empty());
    c.m.on_timer(c.at(5000));
    let asked = instructions_of(&c.take());
    assert!(matches!(&asked[..], [g] if is_greeting(g)), "{asked:?}");
}

#[test]
fn a_caller_who_speaks_first_is_greeted() {
    let mut c = amd_call(None);
    c.take();
    c.speech_started(700, "u1");
    let asked = instructions_of(&c.take());
    assert!(matches!(&asked[..], [g] if is_greeting(g)), "{asked:?}");
    // Twilio's own verdict then changes nothing.
    verdict(&mut c, 2000, "human");
    assert!(response_creates(&c.take()).is_empty());
    assert!(c.m.ended().is_none());
}

#[test]
fn a_key_pressed_before_the_verdict_is_a_person_greeted_first() {
    let mut c = amd_call(None);
    c.take();
    c.inbound(900, inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }));
    let asked = instructions_of(&c.take());
    assert!(matches!(&asked[..], [g] if is_greeting(g)), "{asked:?}");
    assert_eq!(c.m.next_deadline(), None, "the wait is over");
}

#[test]
fn a_late_machine_verdict_cuts_the_greeting_and_leaves_the_message() {
    let mut c = amd_call(Some(MESSAGE));
    c.take();
    // A long voicemail greeting outlasts the timeout: the agent greets the machine.
    c.m.on_timer(c.at(5000));
    c.created(5100, "r1");
    c.delta(5100, "r1", "i1", 800);
    let fx = c.take();
    assert_eq!(marks(&fx).len(), 1);
    verdict(&mut c, 9000, "machine_end_beep");
    let fx = c.take();
    assert!(
        realtime(&fx)
            .iter()
            .any(|e| matches!(e, ClientEvent::ResponseCancel { .. })),
        "the greeting is cancelled"
    );
    assert!(
        outs(&fx)
            .iter()
            .any(|f| matches!(f, outbound_frame::Frame::Clear(_))),
        "and cleared from Twilio's buffer"
    );
    assert!(
        response_creates(&fx).is_empty(),
        "the message waits for r1's end"
    );
    c.done(9050, "r1", "cancelled", json!([]));
    assert_eq!(
        instructions_of(&c.take()),
        [format!("Say exactly: \"{MESSAGE}\"")]
    );
    // A response the server starts on its own meanwhile (VAD) is cancelled too.
    c.vad_created(9060, "r_vad");
    let fx = c.take();
    assert!(realtime(&fx).iter().any(|e| matches!(e,
        ClientEvent::ResponseCancel { response_id: Some(id), .. } if id == "r_vad")));
}

#[test]
fn calls_without_detection_greet_at_once_and_ignore_verdicts() {
    let agent = agent_with(|a| {
        a.greeting = Some(GREETING.into());
        a.voicemail_message = Some(MESSAGE.into());
    });
    let mut c = Call::new(agent);
    let asked = instructions_of(&c.take());
    assert!(matches!(&asked[..], [g] if is_greeting(g)), "{asked:?}");
    c.start(0);
    verdict(&mut c, 3000, "machine_end_beep");
    assert!(response_creates(&c.take()).is_empty());
    assert!(c.m.ended().is_none());
}

#[test]
fn an_unknown_verdict_is_ignored() {
    let mut c = amd_call(Some(MESSAGE));
    c.take();
    verdict(&mut c, 1000, "robot");
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), Some(c.at(5000)), "still waiting");
}
