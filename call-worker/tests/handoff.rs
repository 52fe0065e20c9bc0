//! Handing a call to another agent (built-in `handoff`) against the Realtime simulator.

mod common;

use common::*;
use futures::StreamExt;
use switchboard_proto::call_event::Body;
use switchboard_proto::outbound_frame::Frame;
use switchboard_proto::{Message as _, Role, ToolCall, ToolResult, tool_invocation, tool_result};
use switchboard_realtime::{ClientEvent, Item, Session};

const AGENTS: &str = r#"
[[agent]]
id = "front-desk"
numbers = ["+15550001111"]
instructions = "You are the front desk of Acme Dental."
voice = "cedar"
tools = ["lookup_customer", "handoff"]
handoff_to = ["billing"]

[[agent]]
id = "billing"
instructions = "You are the billing desk of Acme Dental."
voice = "marin"
tools = ["lookup_invoice", "end_call"]

[agent.turn_detection]
silence_duration_ms = 400
"#;

const SCRIPT: &str = r#"
[session]
speed = 20.0
[[response]]
call = { name = "handoff", arguments = '{"agent":"billing","reason":"invoice question"}' }
[[response]]
say = "Billing here, how can I help?"
[[response]]
call = { name = "lookup_customer", arguments = '{"phone":"+15550001234"}' }
[[response]]
call = { name = "lookup_invoice", arguments = '{"phone":"+15550001234"}' }
[[response]]
say = "Your invoice is {{amount}}."
"#;

/// `(index in the session, call_id, output)` of every `function_call_output` sent.
fn outputs(events: &[ClientEvent]) -> Vec<(usize, String, String)> {
    events
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

fn updates(events: &[ClientEvent]) -> Vec<(usize, &Session)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ClientEvent::SessionUpdate { session, .. } => Some((i, session)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn handoff_reconfigures_the_session_for_the_target_agent() -> anyhow::Result<()> {
    let h = Harness::start(SCRIPT, AGENTS, |_| {}).await?;
    h.register_tool("lookup_customer", 0).await?;
    h.register_tool("lookup_invoice", 0).await?;
    let mut invoices = h
        .client
        .subscribe(h.subjects.tool("lookup_invoice"))
        .await?;
    h.client.flush().await?;

    let mut gw = h.gateway("CAhandoff").await?;
    let reply = h.offer("CAhandoff", "+15550001111").await?;
    assert!(
        reply.accepted && reply.agent_id == "front-desk",
        "{reply:?}"
    );
    gw.start().await?;

    // Caller turn 1: the desk hands off; billing answers.
    gw.speak(600).await?;
    gw.silence(700).await?;
    let billing_words = 6;
    gw.receive_audio(billing_words * 250 * 8).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    let s = h.session().await?;
    let ev = &s.client_events;
    let ups = updates(ev);
    assert_eq!(
        ups.len(),
        2,
        "the first session.update and ONE for the handoff"
    );
    let (update_at, update) = ups[1];
    let v = serde_json::to_value(update)?;
    assert_eq!(v["type"], "realtime");
    assert_eq!(
        v["instructions"],
        "You are the billing desk of Acme Dental."
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        400
    );
    assert!(
        v["audio"].get("output").is_none(),
        "the voice is not touched after audio: {v}"
    );
    let names: Vec<_> = update
        .tools
        .iter()
        .flatten()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, vec!["lookup_invoice", "end_call"]);
    // The desk declared `handoff` with the allowed targets as an enum.
    let (_, first) = ups[0];
    let handoff = first
        .tools
        .iter()
        .flatten()
        .find(|t| t.name == "handoff")
        .expect("handoff declared");
    assert_eq!(
        handoff.parameters["properties"]["agent"]["enum"],
        serde_json::json!(["billing"])
    );

    let outs = outputs(ev);
    assert_eq!(outs.len(), 1);
    let (out_at, handoff_call, out) = &outs[0];
    assert!(update_at < *out_at, "session.update before the output");
    let out: serde_json::Value = serde_json::from_str(out)?;
    assert_eq!(out, serde_json::json!({"ok": true, "agent": "billing"}));
    let creates: Vec<_> = ev[*out_at..]
        .iter()
        .filter(|e| is_response_create(e))
        .collect();
    assert_eq!(
        creates.len(),
        1,
        "exactly one response.create after the output"
    );

    // Caller turn 2: the desk's tool is gone, billing's own tool is called as billing.
    gw.speak(600).await?;
    gw.silence(700).await?;
    let msg = tokio::time::timeout(WAIT, invoices.next())
        .await?
        .expect("lookup_invoice request");
    let call = ToolCall::decode(msg.payload.clone())?;
    assert_eq!(call.agent_id, "billing");
    let result = ToolResult {
        result: Some(tool_result::Result::Output(r#"{"amount":"$12"}"#.into())),
        outcome: String::new(),
    };
    h.client
        .publish(
            msg.reply.expect("reply subject"),
            result.encode_to_vec().into(),
        )
        .await?;
    gw.until("the invoice answer", |f| matches!(f, Frame::Audio(_)))
        .await?;

    let s = h.session().await?;
    let outs = outputs(&s.client_events);
    assert_eq!(outs.len(), 3, "{outs:?}");
    let unknown: serde_json::Value = serde_json::from_str(&outs[1].2)?;
    assert_eq!(unknown["error"]["code"], "unknown_tool");
    assert_eq!(outs[2].2, r#"{"amount":"$12"}"#);
    assert_eq!(updates(&s.client_events).len(), 2);

    let events = h
        .events_until("CAhandoff", "the invoice tool event", |evs| {
            evs.iter()
                .any(|e| matches!(&e.body, Some(Body::Tool(t)) if t.name == "lookup_invoice"))
        })
        .await?;
    assert_well_formed(&events);
    let system: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Transcript(t)) if t.role == Role::System as i32 => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(system, vec!["Handed off to billing (invoice question)."]);
    let handoff_event = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Tool(t)) if t.name == "handoff" => Some(t.clone()),
            _ => None,
        })
        .expect("handoff tool event");
    assert_eq!(handoff_event.call_id, *handoff_call);
    assert!(matches!(
        handoff_event.result,
        Some(tool_invocation::Result::Output(ref o)) if o.contains("\"ok\":true")
    ));
    Ok(())
}

#[tokio::test]
async fn handoff_to_an_agent_gone_from_the_reloaded_file_is_an_error_output() -> anyhow::Result<()>
{
    let script = r#"
[session]
speed = 20.0
[[response]]
call = { name = "handoff", arguments = '{"agent":"billing"}' }
[[response]]
say = "Sorry, billing is not available."
"#;
    let h = Harness::start(script, AGENTS, |c| c.agents_reload_ms = 50).await?;
    h.register_tool("lookup_customer", 0).await?;
    let mut gw = h.gateway("CAgone").await?;
    assert!(h.offer("CAgone", "+15550001111").await?.accepted);
    gw.start().await?;
    // The file loses `billing` while the call runs (the call keeps its own copy of the desk).
    let only_desk = AGENTS
        .split("[[agent]]\nid = \"billing\"")
        .next()
        .unwrap_or_default();
    let only_desk = only_desk
        .replace(
            "tools = [\"lookup_customer\", \"handoff\"]",
            "tools = [\"lookup_customer\"]",
        )
        .replace("handoff_to = [\"billing\"]\n", "");
    let probe =
        "\n[[agent]]\nid = \"probe\"\nnumbers = [\"+15550009999\"]\ninstructions = \"Probe.\"\n";
    std::fs::write(h.dir.path().join("agents.toml"), only_desk + probe)?;
    // The reload is visible once the new agent takes calls (its call just sits there).
    let mut n = 0;
    switchboard_testkit::eventually(WAIT, "the reloaded agents file", || {
        n += 1;
        let sid = format!("CAprobe{n}");
        let h = &h;
        async move {
            h.offer(&sid, "+15550009999")
                .await
                .ok()?
                .accepted
                .then_some(())
        }
    })
    .await?;

    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.until("the apology", |f| matches!(f, Frame::Audio(_)))
        .await?;
    let sessions = h.sim.sessions().await;
    let s = sessions
        .iter()
        .find(|s| !outputs(&s.client_events).is_empty())
        .expect("the call's session");
    let outs = outputs(&s.client_events);
    assert_eq!(outs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&outs[0].2)?;
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert_eq!(
        updates(&s.client_events).len(),
        1,
        "no handoff session.update"
    );
    assert_eq!(
        s.client_events
            .iter()
            .filter(|e| is_response_create(e))
            .count(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_replacement_session_keeps_the_handed_off_agent() -> anyhow::Result<()> {
    let script = r#"
[session]
speed = 20.0
max_seconds = 3
[[response]]
call = { name = "handoff", arguments = '{"agent":"billing"}' }
[[response]]
say = "Billing here, how can I help?"
"#;
    let h = Harness::start(script, AGENTS, |_| {}).await?;
    h.register_tool("lookup_invoice", 0).await?;
    let mut gw = h.gateway("CAkeep").await?;
    assert!(h.offer("CAkeep", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.receive_audio(6 * 250 * 8).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    // The first session expires after 3 s; the second is configured for billing, in the voice
    // the caller has been hearing, with the handoff in the replayed conversation.
    let sessions = switchboard_testkit::eventually(WAIT, "a second realtime session", || async {
        let s = h.sim.sessions().await;
        (s.len() >= 2 && s[1].client_events.len() >= 2).then_some(s)
    })
    .await?;
    let second = &sessions[1].client_events;
    let Some(ClientEvent::SessionUpdate { session, .. }) = second.first() else {
        panic!("session.update first: {second:?}");
    };
    let v = serde_json::to_value(session)?;
    assert_eq!(
        v["instructions"],
        "You are the billing desk of Acme Dental."
    );
    assert_eq!(v["audio"]["output"]["voice"], "cedar");
    let names: Vec<_> = session
        .tools
        .iter()
        .flatten()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, vec!["lookup_invoice", "end_call"]);
    let items: Vec<&Item> = second[1..]
        .iter()
        .map_while(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    let call_at = items
        .iter()
        .position(|i| matches!(i, Item::FunctionCall { name, .. } if name == "handoff"))
        .expect("the handoff call replayed");
    assert!(matches!(
        items[call_at + 1],
        Item::FunctionCallOutput { .. }
    ));
    assert_eq!(
        items[call_at + 2],
        &Item::system_text("Handed off to billing."),
        "{items:?}"
    );
    Ok(())
}
