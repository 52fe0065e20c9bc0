//! Endings, errors, lost sessions and keypresses.

use super::*;

#[test]
fn end_call_says_goodbye_and_hangs_up_once_it_was_heard() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(response_creates(&fx).len(), 1, "the goodbye");
    c.say(30, "r2", "i2", 2);
    let fx = c.take();
    assert!(c.m.ended().is_none(), "goodbye still playing");
    let m = marks(&fx);
    c.echo(130, &m[0]);
    assert!(c.m.ended().is_none());
    c.echo(230, &m[1]);
    let fx = c.take();
    let o = outs(&fx);
    assert!(
        matches!(&o[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "end_call"),
        "{o:?}"
    );
    let e = ended(&fx).unwrap();
    assert_eq!(e.reason, "end_call");
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
    // The goodbye's transcript is recorded before `ended`.
    let bodies = events(&fx);
    assert!(matches!(bodies.last(), Some(Body::Ended(_))));
    assert!(fx.contains(&Effect::CloseRealtime));
}

#[test]
fn end_call_with_a_silent_goodbye_hangs_up_at_response_done() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn end_call_hangs_up_after_the_deadline_if_marks_never_come_back() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    c.say(30, "r2", "i2", 2);
    let deadline = c.m.next_deadline().unwrap();
    assert!(deadline <= c.at(30 + 200 + 5000));
    c.m.on_timer(deadline);
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn transfer_call_transfers_after_the_goodbye() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, "{}")]),
    );
    let fx = c.take();
    assert!(
        events(&fx)
            .iter()
            .any(|b| matches!(b, Body::Outcome(o) if o.outcome == "transferred"))
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    let fx = c.take();
    assert!(
        outs(&fx)
            .iter()
            .any(|f| matches!(f, outbound_frame::Frame::Transfer(t) if t.to == "+15550002222"))
    );
    // The call is ours until the human answers (see on_transfers).
    assert!(ended(&fx).is_none());
    c.inbound(
        50,
        inbound_frame::Frame::TransferResult(switchboard_proto::TransferResult {
            status: "answered".into(),
        }),
    );
    assert_eq!(ended(&c.take()).unwrap().reason, "transferred");
}

#[test]
fn each_stop_reason_of_the_gateway_is_its_own_end_reason() {
    for (stop, end) in [
        ("stop", "caller_hung_up"),
        ("closed", "stream_lost"),
        ("error", "stream_error"),
        ("worker_silent", "worker_silent"),
        ("drain_deadline", "gateway_shutdown"),
        ("something_new", "stream_lost"),
    ] {
        let mut c = Call::new(agent_with(|_| {}));
        c.start(0);
        c.take();
        c.inbound(
            100,
            inbound_frame::Frame::Stop(StreamStop {
                reason: stop.into(),
            }),
        );
        assert_eq!(ended(&c.take()).unwrap().reason, end, "stop reason {stop}");
    }
}

#[test]
fn what_is_counted_and_logged_comes_out_as_observations() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 3);
    c.take();
    c.m.drain_observations().for_each(drop);
    c.speech_started(100, "u1");
    closed(&mut c, 200);
    c.inbound(
        300,
        inbound_frame::Frame::Stop(StreamStop {
            reason: "stop".into(),
        }),
    );
    let seen: Vec<Observation> = c.m.drain_observations().collect();
    let [deleted, barge_in, reconnect, stopped, ended] = seen.as_slice() else {
        panic!("five observations expected: {seen:#?}");
    };
    // The caller heard none of `i1` when they spoke over it: it is deleted, not truncated.
    assert_eq!(
        deleted,
        &Observation::UnheardDeleted {
            item_id: "i1".into()
        }
    );
    assert_eq!(barge_in, &Observation::BargeIn);
    assert!(
        matches!(reconnect, Observation::RealtimeReconnect { attempt: 1, .. }),
        "{reconnect:?}"
    );
    assert_eq!(
        stopped,
        &Observation::StreamStopped {
            stop: "stop".into(),
            reason: EndReason::CallerHungUp
        }
    );
    // The call's length is measured on the machine's clock: the stop came at 300 ms.
    assert_eq!(
        ended,
        &Observation::CallEnded {
            reason: EndReason::CallerHungUp,
            duration_ms: 300
        }
    );
    assert_eq!(c.m.drain_observations().count(), 0, "drained");
}

#[test]
fn stop_ends_the_call_with_summed_usage() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 1);
    c.say(20, "r2", "i2", 1);
    c.take();
    c.inbound(
        500,
        inbound_frame::Frame::Stop(StreamStop {
            reason: "stop".into(),
        }),
    );
    let fx = c.take();
    let e = ended(&fx).unwrap();
    assert_eq!(e.reason, "caller_hung_up");
    assert_eq!(e.duration_ms, 500);
    let u = e.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.input_audio_tokens,
            u.input_text_tokens
        ),
        (40, 20, 30, 10)
    );
    assert_eq!(
        (u.output_audio_tokens, u.output_text_tokens, u.cached_tokens),
        (14, 6, 8)
    );
    assert!(fx.contains(&Effect::CloseRealtime));
    assert!(outs(&fx).is_empty(), "no hangup frame: the caller is gone");
    // Unsettled assistant items are recorded before `ended`.
    let t = transcripts(&fx);
    assert_eq!(t.len(), 2);
    assert!(matches!(events(&fx).last(), Some(Body::Ended(_))));
    // Nothing happens after the end.
    c.speech_started(600, "u1");
    assert!(c.take().is_empty());
}

#[test]
fn error_classification() {
    let e = |code: &str, kind: &str| ErrorDetail {
        kind: kind.into(),
        code: Some(code.into()),
        ..Default::default()
    };
    for fatal in [
        "session_expired",
        "beta_api_shape_disabled",
        "invalid_api_key",
    ] {
        assert_eq!(
            classify_error(&e(fatal, "invalid_request_error")),
            ErrorClass::Fatal,
            "{fatal}"
        );
    }
    assert_eq!(
        classify_error(&e("whatever", "authentication_error")),
        ErrorClass::Fatal
    );
    for ok in [
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "input_audio_buffer_commit_empty",
        "rate_limit_exceeded",
        "something_new",
    ] {
        assert_eq!(
            classify_error(&e(ok, "invalid_request_error")),
            ErrorClass::Recoverable,
            "{ok}"
        );
    }
    assert_eq!(
        classify_error(&ErrorDetail::default()),
        ErrorClass::Recoverable
    );
}

#[test]
fn recoverable_error_keeps_the_call_and_frees_the_pending_request() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.start(0);
    c.take();
    // The greeting's response.create is answered by an error only.
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"rate_limit_exceeded",
               "message":"Rate limit reached","param":null,"event_id":null}}),
    );
    assert!(c.m.ended().is_none());
    c.take();
    // A later request is sent at once, not stuck behind the failed one.
    c.inbound(20, inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
}

#[test]
fn active_response_error_retries_after_that_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.server(
        11,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"conversation_already_has_active_response","message":"busy"}}),
    );
    c.created(12, "r_vad");
    assert!(response_creates(&c.take()).is_empty());
    c.done(20, "r_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1);
}

#[test]
fn greeting_refused_while_busy_is_retried_with_its_instructions() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.take();
    c.server(
        5,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"conversation_already_has_active_response","message":"busy","event_id":"sb_resp_1"}}),
    );
    c.created(6, "r_vad");
    c.done(7, "r_vad", "completed", json!([]));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1);
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .contains("\"Hi\"")
    );
}

#[test]
fn errors_of_other_client_events_leave_the_pending_request_alone() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.take();
    c.server(
        5,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"item_truncate_invalid_item_id","message":"no such item","event_id":null}}),
    );
    // Still waiting for the greeting: a DTMF request waits behind it.
    c.inbound(6, inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }));
    assert!(response_creates(&c.take()).is_empty());
    c.created(7, "r1");
    c.delta(8, "r1", "i1", 800);
    assert!(
        events(&c.take())
            .iter()
            .any(|b| matches!(b, Body::Turn(t) if t.kind == "greeting"))
    );
}

#[test]
fn fatal_error_hangs_up_with_model_error() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key",
               "message":"Incorrect API key provided."}}),
    );
    let fx = c.take();
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "error"));
    assert_eq!(ended(&fx).unwrap().reason, "model_error");
}

#[test]
fn lost_socket_reconnects_replays_and_gives_up_after_three_losses_a_minute() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();

    // First loss: a new session at once, configured like the first, then the replay in order.
    closed(&mut c, 5);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 1);
    assert!(ended(&fx).is_none());
    let replay = vec![Item::assistant_text("Hello."), Item::user_text("Hi.")];
    c.m.resume_session(replay.clone());
    let rt = realtime(&c.take());
    assert!(
        matches!(&rt[0], ClientEvent::SessionUpdate { session, .. }
            if session.instructions.as_deref() == Some("You are the front desk.")),
        "{rt:?}"
    );
    let items: Vec<Item> = rt[1..]
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(items, replay);
    assert_eq!(rt.len(), 3, "nothing was pending, so no response.create");

    // Second loss soon after: a short back-off, during which caller audio is dropped.
    closed(&mut c, 10);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 0);
    assert!(c.m.reconnecting());
    assert_eq!(c.m.next_deadline(), Some(c.at(260)));
    audio(&mut c, 100);
    assert!(
        !c.take().iter().any(|e| matches!(e, Effect::Audio(_))),
        "no audio while there is no session"
    );
    c.m.on_timer(c.at(260));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    c.take();
    audio(&mut c, 270);
    assert!(c.take().iter().any(|e| matches!(e, Effect::Audio(_))));

    // Third loss: a longer back-off.
    closed(&mut c, 300);
    assert_eq!(c.m.next_deadline(), Some(c.at(800)));
    c.m.on_timer(c.at(800));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    c.take();

    // Fourth loss within a minute: the call ends.
    closed(&mut c, 1000);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 0);
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "error"));
    assert_eq!(ended(&fx).unwrap().reason, "model_error");
}

#[test]
fn attempts_older_than_a_minute_do_not_count() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    for (i, at) in [5u64, 70_000, 140_000, 210_000].into_iter().enumerate() {
        closed(&mut c, at);
        assert_eq!(reconnects(&c.take()), 1, "loss {i} reconnects at once");
        c.m.resume_session(Vec::new());
        c.take();
    }
    assert!(c.m.ended().is_none());
}

#[test]
fn session_expired_reconnects_and_asks_again_for_the_greeting() {
    let mut c = Call::new(agent_with(|a| {
        a.greeting = Some("Acme Dental, hello!".into())
    }));
    let first = response_creates(&c.take());
    assert_eq!(first.len(), 1);
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"session_expired",
               "message":"Your session hit the maximum duration of 60 minutes."}}),
    );
    let fx = c.take();
    assert_eq!(reconnects(&fx), 1);
    assert!(ended(&fx).is_none());
    c.m.resume_session(Vec::new());
    let fx = c.take();
    let rt = realtime(&fx);
    assert!(matches!(rt[0], ClientEvent::SessionUpdate { .. }));
    assert_eq!(response_creates(&fx), first, "the same greeting, once");
}

#[test]
fn lost_session_cuts_playback_records_what_was_heard_then_reconnects() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.delta(20, "r1", "i1", 1600);
    let fx = c.take();
    let m = marks(&fx);
    assert_eq!(m.len(), 2);
    c.echo(120, &m[0]);
    c.take();
    closed(&mut c, 130);
    let fx = c.take();
    assert!(
        outs(&fx)
            .iter()
            .any(|f| matches!(f, outbound_frame::Frame::Clear(_)))
    );
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 100);
    let transcript_at = fx
        .iter()
        .position(|e| matches!(e, Effect::Event(Body::Transcript(_))))
        .unwrap();
    let reconnect_at = fx
        .iter()
        .position(|e| matches!(e, Effect::Reconnect))
        .unwrap();
    assert!(
        transcript_at < reconnect_at,
        "recorded before the replay is built"
    );
    // The interrupted response is asked for again in the new session.
    c.m.resume_session(Vec::new());
    assert_eq!(response_creates(&c.take()), vec![None]);
    // Late echoes of the cleared audio are ignored.
    c.echo(200, &m[1]);
    assert!(transcripts(&c.take()).is_empty());
}

#[test]
fn a_tool_running_across_a_reconnect_is_recreated_in_the_new_session() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", r#"{"phone":"+1"}"#),
            call_item("c2", "book", "{}")
        ]),
    );
    tool_done(&mut c, 30, "c2", "book", ToolReply::Output("{}".into()));
    c.take();
    closed(&mut c, 40);
    assert_eq!(reconnects(&c.take()), 1);
    // c2 finished before the loss: its pair is part of the replay.
    c.m.resume_session(vec![
        crate::replay::function_call("c2", "book", "{}"),
        Item::function_output("c2", "{}"),
    ]);
    let fx = c.take();
    assert!(response_creates(&fx).is_empty(), "c1 is still running");
    tool_done(
        &mut c,
        50,
        "c1",
        "lookup_customer",
        ToolReply::Output(r#"{"name":"Maria"}"#.into()),
    );
    let rt = realtime(&c.take());
    assert_eq!(rt.len(), 3, "{rt:?}");
    assert!(matches!(&rt[0], ClientEvent::ConversationItemCreate {
        item: Item::FunctionCall { call_id, name, arguments, .. }, ..
    } if call_id == "c1" && name == "lookup_customer" && arguments == r#"{"phone":"+1"}"#));
    assert!(matches!(&rt[1], ClientEvent::ConversationItemCreate {
        item: Item::FunctionCallOutput { call_id, .. }, ..
    } if call_id == "c1"));
    assert!(matches!(rt[2], ClientEvent::ResponseCreate { .. }));
}

#[test]
fn invalid_dtmf_is_ignored() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    for digit in ["", "12", "x", "\"; drop"] {
        c.inbound(
            10,
            inbound_frame::Frame::Dtmf(Dtmf {
                digit: digit.into(),
            }),
        );
    }
    assert!(c.take().is_empty());
}

#[test]
fn dtmf_becomes_a_user_item_and_waits_for_the_active_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(5, "r1");
    c.take();
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "3".into() }));
    let fx = c.take();
    assert!(realtime(&fx).iter().any(|e| matches!(e,
        ClientEvent::ConversationItemCreate { item, .. } if item.text() == "The caller pressed 3 on the keypad.")));
    assert!(response_creates(&fx).is_empty());
    c.done(20, "r1", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1);
}
