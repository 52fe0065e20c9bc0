//! Handoffs to another agent.

use super::*;

#[test]
fn handoff_updates_the_session_once_then_outputs_then_one_response_create() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    let args = r#"{"agent":"billing","reason":"invoice question"}"#;
    args_done(&mut c, 20, "r1", "h1", HANDOFF, args);
    let fx = c.take();
    assert_eq!(handoff_requests(&fx), vec![("h1".into(), "billing".into())]);
    assert!(function_outputs(&fx).is_empty());
    c.done(
        30,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, args)]),
    );
    assert!(
        response_creates(&c.take()).is_empty(),
        "waits for the target"
    );

    let target = billing();
    c.m.on_handoff(
        "h1",
        Ok((Arc::clone(&target), session_tools(&target))),
        c.at(40),
    );
    let fx = c.take();
    let rt = realtime(&fx);
    let updates: Vec<&Session> = rt
        .iter()
        .filter_map(|e| match e {
            ClientEvent::SessionUpdate { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1, "{rt:?}");
    let v = serde_json::to_value(updates[0]).unwrap();
    assert_eq!(v["type"], "realtime");
    assert_eq!(v["instructions"], "You are billing.");
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"semantic_vad","eagerness":"high","create_response":true,"interrupt_response":true})
    );
    assert!(
        v["audio"].get("output").is_none() && v.get("model").is_none(),
        "voice and model stay as they are: {v}"
    );
    let names: Vec<_> = updates[0]
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, vec!["lookup_invoice", END_CALL]);
    // Order: session.update, the output, then exactly one response.create.
    assert!(matches!(rt[0], ClientEvent::SessionUpdate { .. }), "{rt:?}");
    assert_eq!(
        function_outputs(&fx),
        vec![("h1".into(), r#"{"agent":"billing","ok":true}"#.into())]
    );
    assert_eq!(response_creates(&fx), vec![None]);
    assert!(matches!(
        rt.last(),
        Some(ClientEvent::ResponseCreate { .. })
    ));
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::System as i32);
    assert_eq!(t[0].text, "Handed off to billing (invoice question).");
    assert_eq!(t[0].offset_ms, 40);
    let tools = tool_events(&fx);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, HANDOFF);
    assert_eq!(tools[0].arguments, args);
    assert_eq!(c.m.agent().id, "billing");

    // From now on the target's tools: the desk's are unknown, the target's dispatched.
    c.created(50, "r2");
    c.done(
        60,
        "r2",
        "completed",
        json!([
            call_item("c1", "lookup_customer", "{}"),
            call_item("c2", "lookup_invoice", "{}")
        ]),
    );
    let fx = c.take();
    let dispatched: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::CallTool(call) => Some(call.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, vec!["lookup_invoice"]);
    let t = tool_events(&fx);
    assert!(
        matches!(&t[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unknown_tool")
    );

    // And its timers: idle 20 s from the handoff (the next one, once the tool round is over).
    tool_done(
        &mut c,
        70,
        "c2",
        "lookup_invoice",
        ToolReply::Output("{}".into()),
    );
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(40 + 20_000)));
}

#[test]
fn handoff_to_an_unlisted_or_unavailable_agent_is_an_error_output() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, r#"{"agent":"sales"}"#)]),
    );
    let fx = c.take();
    assert!(handoff_requests(&fx).is_empty());
    let out = function_outputs(&fx);
    let v: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unknown_agent");
    assert!(v["error"]["message"].as_str().unwrap().contains("billing"));
    assert_eq!(response_creates(&fx).len(), 1);

    // Listed, but gone from the agents table: the actor answers with an error.
    c.created(30, "r2");
    c.done(
        40,
        "r2",
        "completed",
        json!([call_item("h2", HANDOFF, r#"{"agent":"billing"}"#)]),
    );
    assert_eq!(handoff_requests(&c.take()).len(), 1);
    c.m.on_handoff(
        "h2",
        Err(ToolReply::error(
            ToolErrorCode::Unavailable,
            "not available",
        )),
        c.at(50),
    );
    let fx = c.take();
    assert!(
        !realtime(&fx)
            .iter()
            .any(|e| matches!(e, ClientEvent::SessionUpdate { .. }))
    );
    let out = function_outputs(&fx);
    let v: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(response_creates(&fx).len(), 1);
    assert!(transcripts(&fx).is_empty());
    assert_eq!(c.m.agent().id, "desk");
}

#[test]
fn a_replacement_session_after_a_handoff_is_configured_for_the_target() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, r#"{"agent":"billing"}"#)]),
    );
    let target = billing();
    c.m.on_handoff(
        "h1",
        Ok((Arc::clone(&target), session_tools(&target))),
        c.at(30),
    );
    c.take();
    closed(&mut c, 40);
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    let rt = realtime(&c.take());
    let ClientEvent::SessionUpdate { session, .. } = &rt[0] else {
        panic!("{rt:?}")
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(v["instructions"], "You are billing.");
    assert_eq!(v["model"], "gpt-realtime");
    assert_eq!(
        v["audio"]["output"]["voice"], "marin",
        "the caller keeps hearing the first agent's voice"
    );
    assert_eq!(v["tools"].as_array().unwrap().len(), 2);
}
