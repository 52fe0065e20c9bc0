//! Function calls: business tools over NATS, unknown tools, tools nobody serves.

mod common;

use common::*;
use futures::StreamExt;
use switchboard_proto::call_event::Body;
use switchboard_proto::{Message as _, Role, ToolCall, ToolResult, tool_invocation, tool_result};
use switchboard_realtime::{ClientEvent, Item};
use switchboard_testkit::eventually;

/// The `function_call_output` items the worker sent, with the index of each in the session.
fn outputs(s: &realtime_sim::SessionRecord) -> Vec<(usize, String, String)> {
    s.client_events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ClientEvent::ConversationItemCreate {
                item:
                    Item::FunctionCallOutput {
                        call_id, output, ..
                    },
                ..
            } => Some((i, call_id.clone(), output.clone())),
            _ => None,
        })
        .collect()
}

fn tool_event(
    events: &[switchboard_proto::CallEvent],
) -> Option<switchboard_proto::ToolInvocation> {
    events.iter().find_map(|e| match &e.body {
        Some(Body::Tool(t)) => Some(t.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn a_business_tool_is_called_over_nats_and_its_output_reaches_the_model() -> anyhow::Result<()>
{
    let script = r#"
[session]
speed = 20.0
[[response]]
call = { name = "lookup_customer", arguments = '{"phone":"+15550001234"}' }
[[response]]
say = "I found your account, {{name}}."
"#;
    let h = Harness::start(
        script,
        &agents_toml(None, &["lookup_customer", "end_call"]),
        |_| {},
    )
    .await?;
    h.register_tool("lookup_customer", 1500).await?;
    // The tool service.
    let mut requests = h
        .client
        .queue_subscribe(
            h.subjects.tool("lookup_customer"),
            "tools.lookup_customer".into(),
        )
        .await?;
    h.client.flush().await?;

    let mut gw = h.gateway("CAtool").await?;
    assert!(h.offer("CAtool", "+15550001111").await?.accepted);
    gw.start().await?;

    // The declared tools are the registered one plus the built-in.
    let s = h
        .session_until("session.update", |s| !s.client_events.is_empty())
        .await?;
    let ClientEvent::SessionUpdate { session, .. } = &s.client_events[0] else {
        panic!()
    };
    let names: Vec<_> = session
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, vec!["lookup_customer", "end_call"]);
    assert_eq!(
        session.tools.as_ref().unwrap()[0].parameters["required"][0],
        "phone"
    );

    gw.speak(600).await?;
    gw.silence(700).await?;
    let msg = tokio::time::timeout(WAIT, requests.next()).await?.unwrap();
    let call = ToolCall::decode(msg.payload.clone())?;
    assert_eq!(call.call_sid, "CAtool");
    assert_eq!(call.name, "lookup_customer");
    assert_eq!(call.arguments, r#"{"phone":"+15550001234"}"#);
    assert_eq!(call.agent_id, "front-desk");
    assert_eq!(call.caller, "+15550001234");
    assert_eq!(call.timeout_ms, 1500);
    assert!(!call.call_id.is_empty());
    let result = ToolResult {
        result: Some(tool_result::Result::Output(r#"{"name":"Maria"}"#.into())),
        outcome: "identified".into(),
    };
    h.client
        .publish(msg.reply.unwrap(), result.encode_to_vec().into())
        .await?;

    let expected = 5 * 250 * 8;
    gw.receive_audio(expected).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    let s = h.session().await?;
    let outs = outputs(&s);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].1, call.call_id);
    assert_eq!(outs[0].2, r#"{"name":"Maria"}"#);
    let creates_after: Vec<_> = s.client_events[outs[0].0..]
        .iter()
        .filter(|e| is_response_create(e))
        .collect();
    assert_eq!(
        creates_after.len(),
        1,
        "exactly one response.create after the outputs"
    );
    assert_eq!(client_events(&s, is_response_create).len(), 1);

    let events = h
        .events_until("CAtool", "the answer's transcript", |evs| {
            evs.iter().any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::Assistant as i32))
        })
        .await?;
    assert_well_formed(&events);
    let t = tool_event(&events).unwrap();
    assert_eq!(t.call_id, call.call_id);
    assert_eq!(t.name, "lookup_customer");
    assert_eq!(t.arguments, r#"{"phone":"+15550001234"}"#);
    assert_eq!(
        t.result,
        Some(tool_invocation::Result::Output(
            r#"{"name":"Maria"}"#.into()
        ))
    );
    assert!(
        bodies(&events)
            .iter()
            .any(|b| matches!(b, Body::Outcome(o) if o.outcome == "identified"))
    );
    assert!(
        bodies(&events)
            .iter()
            .any(|b| matches!(b, Body::Transcript(t) if t.text == "I found your account, Maria."))
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_tool_gets_an_error_output() -> anyhow::Result<()> {
    let script = r#"
[session]
speed = 20.0
[[response]]
call = { name = "delete_everything", arguments = '{}' }
[[response]]
say = "Sorry, I cannot do that."
"#;
    let h = Harness::start(script, &agents_toml(None, &["end_call"]), |_| {}).await?;
    let mut gw = h.gateway("CAunknown").await?;
    assert!(h.offer("CAunknown", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.until("the apology", |f| {
        matches!(f, switchboard_proto::outbound_frame::Frame::Audio(_))
    })
    .await?;
    let s = h.session().await?;
    let outs = outputs(&s);
    assert_eq!(outs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&outs[0].2)?;
    assert_eq!(v["error"]["code"], "unknown_tool");
    assert_eq!(client_events(&s, is_response_create).len(), 1);
    let events = h
        .events_until("CAunknown", "the tool event", |evs| {
            tool_event(evs).is_some()
        })
        .await?;
    let t = tool_event(&events).unwrap();
    assert_eq!(t.name, "delete_everything");
    match t.result {
        Some(tool_invocation::Result::Error(e)) => assert_eq!(e.code, "unknown_tool"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_tool_nobody_serves_is_reported_unavailable() -> anyhow::Result<()> {
    let script = r#"
[session]
speed = 20.0
[[response]]
call = { name = "lookup_customer", arguments = '{"phone":"+1"}' }
[[response]]
say = "Our system is down right now."
"#;
    // `book_appointment` is listed but never registered: left out, not a crash.
    let h = Harness::start(
        script,
        &agents_toml(None, &["lookup_customer", "book_appointment"]),
        |_| {},
    )
    .await?;
    h.register_tool("lookup_customer", 0).await?;
    let mut gw = h.gateway("CAnobody").await?;
    assert!(h.offer("CAnobody", "+15550001111").await?.accepted);
    gw.start().await?;
    let s = h
        .session_until("session.update", |s| !s.client_events.is_empty())
        .await?;
    let ClientEvent::SessionUpdate { session, .. } = &s.client_events[0] else {
        panic!()
    };
    let names: Vec<_> = session
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, vec!["lookup_customer"]);

    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.until("the answer", |f| {
        matches!(f, switchboard_proto::outbound_frame::Frame::Audio(_))
    })
    .await?;
    let s = h.session().await?;
    let outs = outputs(&s);
    assert_eq!(outs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&outs[0].2)?;
    assert_eq!(v["error"]["code"], "unavailable");
    let events = h
        .events_until("CAnobody", "the tool event", |evs| {
            tool_event(evs).is_some()
        })
        .await?;
    match tool_event(&events).unwrap().result {
        Some(tool_invocation::Result::Error(e)) => assert_eq!(e.code, "unavailable"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// The tool names of the `session.update` that opened `s`.
fn session_tool_names(s: &realtime_sim::SessionRecord) -> Vec<String> {
    match s.client_events.first() {
        Some(ClientEvent::SessionUpdate { session, .. }) => session
            .tools
            .iter()
            .flatten()
            .map(|t| t.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn a_tool_registered_after_a_call_started_is_offered_to_later_calls() -> anyhow::Result<()> {
    let h = Harness::start(
        "[session]\nspeed = 20.0\n",
        &agents_toml(None, &["end_call", "book_appointment"]),
        |_| {},
    )
    .await?;
    let first_update = |sessions: &[realtime_sim::SessionRecord], n: usize| {
        (sessions.len() >= n && !sessions[n - 1].client_events.is_empty())
            .then(|| session_tool_names(&sessions[n - 1]))
    };

    // Missing at call start: left out.
    assert!(h.offer("CAdisc1", "+15550001111").await?.accepted);
    let names = eventually(WAIT, "the first session.update", || async {
        first_update(&h.sim.sessions().await, 1)
    })
    .await?;
    assert_eq!(names, vec!["end_call"]);

    // A tool service registers it; the next call's session offers it.
    h.register_tool("book_appointment", 0).await?;
    assert!(h.offer("CAdisc2", "+15550001111").await?.accepted);
    let names = eventually(WAIT, "the second session.update", || async {
        first_update(&h.sim.sessions().await, 2)
    })
    .await?;
    assert_eq!(names, vec!["end_call", "book_appointment"]);
    Ok(())
}
