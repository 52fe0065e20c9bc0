//! Tool rounds: outputs, errors and outcomes.

use super::*;

#[test]
fn tool_round_sends_every_output_then_exactly_one_response_create() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    args_done(
        &mut c,
        20,
        "r1",
        "c1",
        "lookup_customer",
        r#"{"phone":"+1"}"#,
    );
    c.done(
        30,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", r#"{"phone":"+1"}"#),
            call_item("c2", "book", "{}")
        ]),
    );
    let fx = c.take();
    let calls: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::CallTool(call) => Some((
                call.call_id.clone(),
                call.name.clone(),
                Duration::from_millis(u64::from(call.timeout_ms)),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "c1".into(),
                "lookup_customer".into(),
                Duration::from_millis(8000)
            ),
            ("c2".into(), "book".into(), Duration::from_millis(8000))
        ],
        "each call dispatched once (deduped by call_id)"
    );
    // The request is whole: the tool service needs nothing else from the call.
    let Some(Effect::CallTool(call)) = fx.iter().find(|e| matches!(e, Effect::CallTool(_))) else {
        unreachable!()
    };
    assert_eq!(
        (
            call.call_sid.as_str(),
            call.agent_id.as_str(),
            call.caller.as_str()
        ),
        ("CA1", "desk", "+15550001234")
    );
    assert_eq!(call.arguments, r#"{"phone":"+1"}"#);
    assert!(response_creates(&fx).is_empty());
    tool_done(
        &mut c,
        40,
        "c2",
        "book",
        ToolReply::Output(r#"{"booked":true}"#.into()),
    );
    let fx = c.take();
    assert!(
        function_outputs(&fx).is_empty(),
        "waits for every call of the response"
    );
    assert_eq!(tool_events(&fx).len(), 1);
    tool_done(
        &mut c,
        50,
        "c1",
        "lookup_customer",
        ToolReply::Output(r#"{"name":"Maria"}"#.into()),
    );
    let fx = c.take();
    assert_eq!(
        function_outputs(&fx),
        vec![
            ("c1".into(), r#"{"name":"Maria"}"#.into()),
            ("c2".into(), r#"{"booked":true}"#.into())
        ]
    );
    assert_eq!(response_creates(&fx), vec![None]);
    // The response.create comes after the outputs.
    let rt = realtime(&fx);
    assert!(matches!(
        rt.last(),
        Some(ClientEvent::ResponseCreate { .. })
    ));
    let t = tool_events(&fx);
    assert_eq!(t[0].call_id, "c1");
    assert_eq!(t[0].latency_ms, 12);
    assert_eq!(
        t[0].result,
        Some(tool_invocation::Result::Output(
            r#"{"name":"Maria"}"#.into()
        ))
    );
}

#[test]
fn tool_outputs_wait_for_the_active_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    // The caller speaks; server VAD starts another response before the tool answers.
    c.created(30, "r2");
    c.take();
    tool_done(
        &mut c,
        40,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    let fx = c.take();
    assert!(function_outputs(&fx).is_empty());
    assert!(response_creates(&fx).is_empty());
    c.done(50, "r2", "completed", json!([]));
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(response_creates(&fx).len(), 1);
}

#[test]
fn unknown_tool_gets_an_error_output_at_once() {
    let mut c = Call::new(agent_with(|a| a.tools.retain(|t| t != "book")));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c9", "book", r#"{"x":1}"#)]),
    );
    let fx = c.take();
    assert!(!fx.iter().any(|e| matches!(e, Effect::CallTool(_))));
    let outputs = function_outputs(&fx);
    assert_eq!(outputs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&outputs[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unknown_tool");
    assert_eq!(response_creates(&fx).len(), 1);
    let t = tool_events(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "book");
    assert_eq!(t[0].arguments, r#"{"x":1}"#);
    assert!(
        matches!(&t[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unknown_tool")
    );
}

#[test]
fn tool_errors_reach_the_model_as_structured_json() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    tool_done(
        &mut c,
        30,
        "c1",
        "lookup_customer",
        ToolReply::error(ToolErrorCode::Unavailable, "No service is answering."),
    );
    let fx = c.take();
    let v: serde_json::Value = serde_json::from_str(&function_outputs(&fx)[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        matches!(&tool_events(&fx)[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unavailable")
    );
}

#[test]
fn tool_result_outcome_and_set_outcome_record_outcomes() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", "{}"),
            call_item(
                "c2",
                SET_OUTCOME,
                r#"{"outcome":"booked","detail":"Tue 3pm"}"#
            ),
            call_item("c3", SET_OUTCOME, r#"{"detail":"no outcome"}"#)
        ]),
    );
    let fx = c.take();
    let outcomes: Vec<_> = events(&fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Outcome(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![CallOutcome {
            redacted: Vec::new(),
            outcome: "booked".into(),
            detail: "Tue 3pm".into()
        }]
    );
    assert!(
        matches!(&tool_events(&fx)[1].result, Some(tool_invocation::Result::Error(e)) if e.code == "invalid_arguments")
    );
    c.m.on_tool_done(
        ToolDone {
            call_id: "c1".into(),
            name: "lookup_customer".into(),
            arguments: "{}".into(),
            reply: ToolReply::Output("{}".into()),
            outcome: Some("identified".into()),
            latency_ms: 1,
        },
        c.at(30),
    );
    let fx = c.take();
    assert!(
        events(&fx)
            .iter()
            .any(|b| matches!(b, Body::Outcome(o) if o.outcome == "identified"))
    );
    assert_eq!(function_outputs(&fx).len(), 3);
    assert_eq!(response_creates(&fx).len(), 1);
}
