//! Rebuilding a conversation for a new Realtime session from the call's events.
//!
//! A Realtime session does not outlive its socket (and expires after 60 minutes), but a phone
//! call should. When a session is lost, the call opens a new one and replays what was said so
//! far as text items. The replay is built from [`CallEvent`]s only, the same events the call
//! publishes to `VOICE_EVENTS`, so one function serves both the live call (events kept in
//! memory) and a later takeover by another worker (events read back from JetStream).
//!
//! Caller turns become `input_text` user messages, agent turns `output_text` assistant
//! messages, system entries (keypad digits, handoffs) system messages, and every finished tool
//! invocation a `function_call` item followed by its `function_call_output`.

use switchboard_proto::{CallEvent, Role, call_event::Body, tool_invocation};
use switchboard_realtime::Item;

use crate::tools::ToolReply;

/// Whether an event carries conversation content (the only events a replay needs).
pub fn is_conversation(body: &Body) -> bool {
    matches!(body, Body::Transcript(_) | Body::Tool(_))
}

/// The conversation of `events` as items to create in a new session, in `seq` order.
/// Events of other calls are not filtered here: pass the events of one call.
pub fn items(events: &[CallEvent]) -> Vec<Item> {
    let mut ordered: Vec<&CallEvent> = events.iter().collect();
    ordered.sort_by_key(|e| e.seq);
    ordered.dedup_by_key(|e| e.seq);
    let mut items = Vec::new();
    for event in ordered {
        match &event.body {
            Some(Body::Transcript(t)) => {
                let text = t.text.trim();
                if text.is_empty() {
                    continue;
                }
                let item = match Role::try_from(t.role) {
                    Ok(Role::User) => Item::user_text(text),
                    Ok(Role::Assistant) => Item::assistant_text(text),
                    Ok(Role::System) => Item::system_text(text),
                    _ => continue,
                };
                items.push(item);
            }
            Some(Body::Tool(tool)) if !tool.call_id.is_empty() => {
                let output = match &tool.result {
                    Some(tool_invocation::Result::Output(text)) => {
                        ToolReply::Output(text.clone()).model_output()
                    }
                    Some(tool_invocation::Result::Error(f)) => ToolReply::Error(
                        switchboard_proto::ToolError::new(f.code.clone(), f.message.clone()),
                    )
                    .model_output(),
                    None => continue,
                };
                items.push(function_call(&tool.call_id, &tool.name, &tool.arguments));
                items.push(Item::function_output(&tool.call_id, &output));
            }
            _ => {}
        }
    }
    items
}

/// A `function_call` item, as the model made it.
pub fn function_call(call_id: &str, name: &str, arguments: &str) -> Item {
    Item::FunctionCall {
        id: None,
        call_id: call_id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::{
        CallEnded, CallStarted, ToolFailure, ToolInvocation, TranscriptEntry, TurnLatency,
    };

    fn ev(seq: u64, body: Body) -> CallEvent {
        CallEvent {
            call_sid: "CA1".into(),
            seq,
            at_ms: 0,
            body: Some(body),
        }
    }

    fn said(role: Role, text: &str) -> Body {
        Body::Transcript(TranscriptEntry {
            role: role as i32,
            text: text.into(),
            ..Default::default()
        })
    }

    #[test]
    fn replays_turns_and_tool_pairs_in_seq_order() {
        let events = vec![
            ev(1, Body::Started(CallStarted::default())),
            ev(2, said(Role::Assistant, "Hello, Acme Dental.")),
            ev(
                4,
                Body::Tool(ToolInvocation {
                    redacted: Vec::new(),
                    call_id: "c1".into(),
                    name: "lookup_customer".into(),
                    arguments: r#"{"phone":"1"}"#.into(),
                    result: Some(tool_invocation::Result::Output(
                        r#"{"name":"Maria"}"#.into(),
                    )),
                    latency_ms: 5,
                }),
            ),
            // Read back out of order (a consumer may do so): seq decides.
            ev(3, said(Role::User, "Look up my account.")),
            ev(
                5,
                Body::Tool(ToolInvocation {
                    redacted: Vec::new(),
                    call_id: "c2".into(),
                    name: "book".into(),
                    arguments: "{}".into(),
                    result: Some(tool_invocation::Result::Error(ToolFailure {
                        code: "timeout".into(),
                        message: "Too slow.".into(),
                    })),
                    latency_ms: 5,
                }),
            ),
            ev(
                6,
                Body::Turn(TurnLatency {
                    kind: "response".into(),
                    ..Default::default()
                }),
            ),
            ev(7, said(Role::System, "The caller pressed 1 on the keypad.")),
            ev(8, said(Role::Assistant, "   ")),
            ev(9, Body::Ended(CallEnded::default())),
        ];
        let items = items(&events);
        assert_eq!(
            items,
            vec![
                Item::assistant_text("Hello, Acme Dental."),
                Item::user_text("Look up my account."),
                function_call("c1", "lookup_customer", r#"{"phone":"1"}"#),
                Item::function_output("c1", r#"{"name":"Maria"}"#),
                function_call("c2", "book", "{}"),
                Item::function_output(
                    "c2",
                    r#"{"error":{"code":"timeout","message":"Too slow."}}"#
                ),
                Item::system_text("The caller pressed 1 on the keypad."),
            ]
        );
        let json = serde_json::to_value(&items[0]).unwrap();
        assert_eq!(json["content"][0]["type"], "output_text");
        let json = serde_json::to_value(&items[1]).unwrap();
        assert_eq!(json["content"][0]["type"], "input_text");
    }
}
