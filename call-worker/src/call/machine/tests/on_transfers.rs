//! Transfers that ring and may come back, departments, and keys pressed on the line.

use super::*;
use crate::agents::{DEFAULT_TRANSFER_TIMEOUT, Department, SEND_DTMF};
use crate::call::transfer::{Destination, RESULT_GRACE};
use switchboard_proto::{CallEvent, CallTransfer, TransferResult};

fn departments() -> Arc<Agent> {
    agent_with(|a| {
        a.transfer_to = None;
        a.departments = vec![
            Department {
                name: "billing".into(),
                number: "+15550003333".into(),
            },
            Department {
                name: "sales".into(),
                number: "+15550002222".into(),
            },
        ];
        a.transfer_timeout = Duration::from_secs(12);
        a.tools.push(SEND_DTMF.into());
    })
}

fn result(c: &mut Call, ms: u64, status: &str) {
    c.inbound(
        ms,
        inbound_frame::Frame::TransferResult(TransferResult {
            status: status.into(),
        }),
    );
}

fn stop(c: &mut Call, ms: u64, reason: &str) {
    c.inbound(
        ms,
        inbound_frame::Frame::Stop(StreamStop {
            reason: reason.into(),
        }),
    );
}

fn new_stream(c: &mut Call, ms: u64, sid: &str) {
    c.inbound(
        ms,
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: sid.into(),
            call_sid: "CA1".into(),
            resumed: true,
            ..Default::default()
        }),
    );
}

/// The model asks for a transfer with `args`; the goodbye is spoken and heard: the `Transfer`
/// frame is out at 40 ms.
fn transfer(c: &mut Call, args: &str) -> Vec<Effect> {
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, args)]),
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    c.take()
}

fn system_lines(fx: &[Effect]) -> Vec<String> {
    transcripts(fx)
        .into_iter()
        .filter(|t| t.role == Role::System as i32)
        .map(|t| t.text)
        .collect()
}

fn outcomes(fx: &[Effect]) -> Vec<(String, String)> {
    events(fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Outcome(o) => Some((o.outcome, o.detail)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_model_picks_a_department_and_its_number_rings_with_the_agents_timeout() {
    let mut c = Call::new(departments());
    let fx = transfer(&mut c, r#"{"department":"sales"}"#);
    let frame = outs(&fx)
        .into_iter()
        .find_map(|f| match f {
            outbound_frame::Frame::Transfer(t) => Some(t),
            _ => None,
        })
        .expect("transfer frame");
    assert_eq!(frame.to, "+15550002222");
    assert_eq!(frame.timeout_seconds, 12);
    assert_eq!(outcomes(&fx), [("transferred".into(), "sales".into())]);
    assert_eq!(
        transfer_events(&fx),
        [CallTransfer {
            department: "sales".into(),
            status: String::new(),
            sets_outcome: true,
        }],
        "the ringing transfer is written ahead, without the number"
    );
    assert_eq!(
        system_lines(&fx),
        ["Transferring the caller to the sales department."]
    );
    assert!(ended(&fx).is_none());
    // Twilio leaves the stream for the `<Dial>`: that is not the end of the call.
    stop(&mut c, 60, "transfer");
    assert!(ended(&c.take()).is_none());
    assert!(!c.m.watches_stream(), "the transfer has its own deadline");
    result(&mut c, 3_000, "answered");
    let fx = c.take();
    assert_eq!(
        system_lines(&fx),
        ["The transfer to the sales department was answered."]
    );
    assert_eq!(transfer_events(&fx)[0].status, "answered");
    assert_eq!(ended(&fx).unwrap().reason, "transferred");
}

fn transfer_events(fx: &[Effect]) -> Vec<CallTransfer> {
    events(fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Transfer(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// Effects' events as the call's log stores them, in the order they were published.
fn stored(fx: &[Effect]) -> Vec<CallEvent> {
    events(fx)
        .into_iter()
        .zip(1..)
        .map(|(body, seq)| CallEvent {
            call_sid: "CA1".into(),
            seq,
            at_ms: 1_000,
            body: Some(body),
        })
        .collect()
}

#[test]
fn a_call_taken_over_while_its_transfer_rang_welcomes_the_caller_back() {
    let agent = departments();
    let mut c = Call::new(Arc::clone(&agent));
    let mut log = transfer(&mut c, r#"{"department":"billing"}"#);
    stop(&mut c, 60, "transfer");
    log.extend(c.take());
    // The owner dies while the number rings; the gateway's `busy` goes to nobody. When the
    // caller's new stream finds no owner, another worker reads the call back.
    let rebuilt = crate::takeover::rebuild(&stored(&log), 21_000);
    assert_eq!(
        rebuilt.resumed.transfer,
        Some(Ringing {
            to: Destination {
                department: "billing".into(),
                number: String::new(),
            },
            sets_outcome: true,
        })
    );
    assert!(!rebuilt.resumed.waiting, "nobody waits for an answer");
    let t1 = c.at(20_000);
    let setup = CallSetup {
        offer: CallOffer {
            call_sid: "CA1".into(),
            epoch: 1,
            takeover: "worker_lost".into(),
            ..Default::default()
        },
        agent: Arc::clone(&agent),
        worker_id: "w2".into(),
        model: "gpt-realtime".into(),
        tool_timeout: Duration::from_millis(8000),
        accepted_at_ms: 21_000,
    };
    let mut m = CallMachine::take_over(setup, rebuilt.resumed, t1);
    // The new stream reaches the new owner before its session is seeded.
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZ2".into(),
            call_sid: "CA1".into(),
            epoch: 1,
            resumed: true,
            attach: 2,
            ..Default::default()
        }),
        t1,
    );
    let fx = m.take_effects();
    assert_eq!(
        system_lines(&fx),
        [
            "The transfer to the billing department did not connect (no-answer); the caller is back with the agent."
        ]
    );
    assert_eq!(
        outcomes(&fx),
        [("transfer_failed".into(), "no-answer".into())]
    );
    assert_eq!(transfer_events(&fx)[0].status, "no-answer");
    assert!(
        response_creates(&fx).is_empty(),
        "nothing asked of a session that is not configured"
    );
    m.take_over_session(
        session_tools(&agent),
        vec![Item::user_text("Billing, please.")],
        t1,
    );
    let fx = m.take_effects();
    let client = realtime(&fx);
    assert!(
        matches!(client[0], ClientEvent::SessionUpdate { .. }),
        "{client:?}"
    );
    assert!(
        matches!(client[1], ClientEvent::ConversationItemCreate { .. }),
        "{client:?}"
    );
    let said = response_creates(&fx);
    assert_eq!(said.len(), 1, "{client:?}");
    let text = said[0]
        .as_ref()
        .and_then(|p| p.instructions.clone())
        .unwrap();
    assert!(
        text.contains("billing department") && text.contains("nobody answered"),
        "{text}"
    );
    assert!(m.watches_stream(), "the stream is watched again");
    assert_eq!(m.ended(), None);
}

#[test]
fn a_transfer_whose_result_is_recorded_no_longer_rings_for_a_new_owner() {
    let mut c = Call::new(departments());
    let mut log = transfer(&mut c, r#"{"department":"billing"}"#);
    stop(&mut c, 60, "transfer");
    result(&mut c, 2_000, "busy");
    new_stream(&mut c, 2_300, "MZ2");
    log.extend(c.take());
    let rebuilt = crate::takeover::rebuild(&stored(&log), 5_000);
    assert_eq!(rebuilt.resumed.transfer, None);
    assert!(rebuilt.resumed.outcome_set);
}

#[test]
fn an_unknown_department_is_an_error_for_the_model() {
    let mut c = Call::new(departments());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, r#"{"department":"legal"}"#)]),
    );
    let fx = c.take();
    let tool = &tool_events(&fx)[0];
    let Some(tool_invocation::Result::Error(e)) = &tool.result else {
        panic!("{tool:?}");
    };
    assert_eq!(e.code, ToolErrorCode::InvalidArguments.as_str());
    assert!(e.message.contains("billing, sales"), "{}", e.message);
    assert!(
        outs(&fx)
            .iter()
            .all(|f| !matches!(f, outbound_frame::Frame::Transfer(_)))
    );
    assert!(outcomes(&fx).is_empty());
}

#[test]
fn a_busy_line_brings_the_caller_back_and_the_agent_says_so() {
    let mut c = Call::new(departments());
    transfer(&mut c, r#"{"department":"billing"}"#);
    stop(&mut c, 60, "transfer");
    result(&mut c, 2_000, "busy");
    let fx = c.take();
    assert!(ended(&fx).is_none());
    assert!(
        response_creates(&fx).is_empty(),
        "no stream yet to speak on"
    );
    new_stream(&mut c, 2_300, "MZ2");
    let fx = c.take();
    assert_eq!(
        system_lines(&fx),
        [
            "The transfer to the billing department did not connect (busy); the caller is back with the agent."
        ]
    );
    assert_eq!(outcomes(&fx), [("transfer_failed".into(), "busy".into())]);
    let said = response_creates(&fx);
    assert_eq!(said.len(), 1);
    let text = said[0]
        .as_ref()
        .and_then(|p| p.instructions.clone())
        .unwrap();
    assert!(
        text.contains("billing department") && text.contains("busy"),
        "{text}"
    );
    assert!(c.m.watches_stream());
    // A late or repeated callback changes nothing.
    result(&mut c, 2_400, "completed");
    assert!(ended(&c.take()).is_none());
}

#[test]
fn a_new_stream_before_any_result_means_nobody_answered() {
    let mut c = Call::new(agent_with(|_| {}));
    transfer(&mut c, "{}");
    stop(&mut c, 60, "transfer");
    new_stream(&mut c, 30_100, "MZ2");
    let fx = c.take();
    assert_eq!(
        system_lines(&fx),
        [
            "The transfer to a colleague did not connect (no-answer); the caller is back with the agent."
        ]
    );
    assert_eq!(
        outcomes(&fx),
        [("transfer_failed".into(), "no-answer".into())]
    );
    assert_eq!(response_creates(&fx).len(), 1);
}

#[test]
fn an_outcome_the_agent_set_survives_a_failed_transfer() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r0");
    c.done(
        15,
        "r0",
        "completed",
        json!([call_item("c0", SET_OUTCOME, r#"{"outcome":"booked"}"#)]),
    );
    c.created(20, "r1");
    c.done(
        25,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, "{}")]),
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    result(&mut c, 2_000, "no-answer");
    new_stream(&mut c, 2_100, "MZ2");
    let fx = c.take();
    assert_eq!(outcomes(&fx), [("booked".into(), String::new())]);
}

#[test]
fn without_a_result_the_call_ends_transferred_after_the_ring_timeout_and_grace() {
    let mut c = Call::new(agent_with(|_| {}));
    transfer(&mut c, "{}");
    stop(&mut c, 60, "transfer");
    let deadline = c.m.next_deadline().unwrap();
    assert_eq!(deadline, c.at(40) + DEFAULT_TRANSFER_TIMEOUT + RESULT_GRACE);
    c.m.on_timer(deadline - Duration::from_millis(1));
    assert!(c.m.ended().is_none());
    c.m.on_timer(deadline);
    assert_eq!(c.m.ended(), Some(EndReason::Transferred));
}

#[test]
fn a_caller_who_never_comes_back_ends_the_call_as_lost() {
    let mut c = Call::new(agent_with(|_| {}));
    transfer(&mut c, "{}");
    result(&mut c, 5_000, "failed");
    let deadline = c.m.next_deadline().unwrap();
    assert_eq!(deadline, c.at(5_000) + RESULT_GRACE);
    c.m.on_timer(deadline);
    assert_eq!(c.m.ended(), Some(EndReason::StreamLost));
}

#[test]
fn the_caller_hanging_up_during_the_goodbye_still_ends_the_call() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, "{}")]),
    );
    stop(&mut c, 25, "stop");
    assert_eq!(ended(&c.take()).unwrap().reason, "caller_hung_up");
}

#[test]
fn send_dtmf_plays_valid_keys_and_the_call_waits_for_its_next_stream() {
    let mut c = Call::new(departments());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", SEND_DTMF, r#"{"digits":"1w23#"}"#)]),
    );
    let fx = c.take();
    assert!(outs(&fx).contains(&outbound_frame::Frame::SendDigits(
        switchboard_proto::SendDigits {
            digits: "1w23#".into()
        }
    )));
    assert!(matches!(
        tool_events(&fx)[0].result,
        Some(tool_invocation::Result::Output(_))
    ));
    stop(&mut c, 100, "digits");
    assert!(ended(&c.take()).is_none());
    assert!(
        c.m.watches_stream(),
        "a stream that never comes back is noticed"
    );
    new_stream(&mut c, 900, "MZ2");
    assert!(ended(&c.take()).is_none());
}

#[test]
fn send_dtmf_refuses_anything_but_keys() {
    for digits in ["", "12a", "1 2", "ABCD", &"1".repeat(65)] {
        let mut c = Call::new(departments());
        c.start(0);
        c.created(10, "r1");
        let args = json!({ "digits": digits }).to_string();
        c.done(
            20,
            "r1",
            "completed",
            json!([call_item("c1", SEND_DTMF, &args)]),
        );
        let fx = c.take();
        let Some(tool_invocation::Result::Error(e)) = &tool_events(&fx)[0].result else {
            panic!("{digits:?} accepted");
        };
        assert_eq!(
            e.code,
            ToolErrorCode::InvalidArguments.as_str(),
            "{digits:?}"
        );
        assert!(
            outs(&fx)
                .iter()
                .all(|f| !matches!(f, outbound_frame::Frame::SendDigits(_))),
            "{digits:?}"
        );
    }
}

#[test]
fn the_caller_hanging_up_while_it_rings_ends_the_call_as_hung_up() {
    let mut c = Call::new(agent_with(|_| {}));
    transfer(&mut c, "{}");
    stop(&mut c, 60, "transfer");
    result(&mut c, 3_000, "canceled");
    assert!(ended(&c.take()).is_none());
    // The gateway saw the caller gone (`CallStatus=completed` on the dial's action).
    stop(&mut c, 3_001, "stop");
    assert_eq!(ended(&c.take()).unwrap().reason, "caller_hung_up");
}

#[test]
fn a_warm_transfer_needs_a_summary_which_the_human_hears_from_the_lines_number() {
    let warm = || {
        agent_with(|a| {
            a.warm_transfer = true;
        })
    };
    let mut c = Call::new(warm());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, "{}")]),
    );
    let fx = c.take();
    let Some(tool_invocation::Result::Error(e)) = &tool_events(&fx)[0].result else {
        panic!("a warm transfer without a summary went ahead");
    };
    assert_eq!(e.code, ToolErrorCode::InvalidArguments.as_str());
    assert!(outcomes(&fx).is_empty());

    let mut c = Call::new(warm());
    let fx = transfer(
        &mut c,
        r#"{"summary":"Maria wants to move her appointment."}"#,
    );
    let frame = outs(&fx)
        .into_iter()
        .find_map(|f| match f {
            outbound_frame::Frame::Transfer(t) => Some(t),
            _ => None,
        })
        .expect("transfer frame");
    assert_eq!(frame.whisper, "Maria wants to move her appointment.");
    // An inbound call: the line is the number the caller dialed.
    assert_eq!(frame.caller_id, "+15550001111");
    assert_eq!(
        system_lines(&fx),
        [
            "Transferring the caller to a colleague, who hears first: \"Maria wants to move her appointment.\""
        ]
    );
}
