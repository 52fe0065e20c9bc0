//! An agent's `redact` list: the record of the call (events in JetStream) holds markers where
//! the caller's number and card were, and says which kinds it replaced, while the model and the
//! tool still got them in full.

mod common;

use common::*;
use futures::StreamExt;
use switchboard_proto::call_event::Body;
use switchboard_proto::{Message as _, Role, ToolCall, ToolResult, tool_invocation, tool_result};
use switchboard_realtime::{ClientEvent, Item};

#[tokio::test]
async fn the_record_holds_markers_where_the_caller_said_a_number_and_a_card() -> anyhow::Result<()>
{
    let script = r#"
hear = ["My number is 555-000-1234 and my card 4111 1111 1111 1111, order 4111 1111 1111 1112."]
[session]
speed = 20.0
[[response]]
call = { name = "lookup_customer", arguments = '{"phone":"+15550001234"}' }
[[response]]
say = "Thanks, I have your account."
"#;
    let agents = format!(
        "{}redact = [\"phone\", \"card\"]\n",
        agents_toml(None, &["lookup_customer"])
    );
    let h = Harness::start(script, &agents, |_| {}).await?;
    h.register_tool("lookup_customer", 1500).await?;
    let mut requests = h
        .client
        .queue_subscribe(
            h.subjects.tool("lookup_customer"),
            "tools.lookup_customer".into(),
        )
        .await?;
    h.client.flush().await?;

    let mut gw = h.gateway("CAredact").await?;
    assert!(h.offer("CAredact", "+15550001111").await?.accepted);
    gw.start().await?;
    gw.speak(600).await?;
    gw.silence(700).await?;

    // The tool gets the arguments in full, and answers with the caller's number.
    let msg = tokio::time::timeout(WAIT, requests.next()).await?.unwrap();
    let call = ToolCall::decode(msg.payload.clone())?;
    assert_eq!(call.arguments, r#"{"phone":"+15550001234"}"#);
    let result = ToolResult {
        result: Some(tool_result::Result::Output(
            r#"{"name":"Maria","phone":"+15550001234"}"#.into(),
        )),
        outcome: String::new(),
    };
    h.client
        .publish(msg.reply.unwrap(), result.encode_to_vec().into())
        .await?;
    gw.receive_audio(5 * 250 * 8).await?;
    let mut echoed = 0;
    gw.echo_all(&mut echoed).await?;

    let events = h
        .events_until("CAredact", "the caller's transcript and the tool", |evs| {
            let user = evs.iter().any(
                |e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::User as i32),
            );
            let tool = evs.iter().any(|e| matches!(&e.body, Some(Body::Tool(_))));
            user && tool
        })
        .await?;
    let user = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Transcript(t)) if t.role == Role::User as i32 => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    // The Luhn-invalid order number survives.
    assert_eq!(
        user.text,
        "My number is [phone] and my card [card], order 4111 1111 1111 1112."
    );
    assert_eq!(user.redacted, ["phone", "card"]);
    let tool = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Tool(t)) => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(tool.arguments, r#"{"phone":"[phone]"}"#);
    assert!(
        matches!(&tool.result, Some(tool_invocation::Result::Output(o))
            if o.contains("[phone]") && o.contains("Maria") && !o.contains("555")),
        "{:?}",
        tool.result
    );
    assert_eq!(tool.redacted, ["phone"]);
    let dispatched = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Dispatched(d)) => Some(d.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(dispatched.arguments, r#"{"phone":"[phone]"}"#);
    // Nothing the caller or a tool said holds the number any more (the call's own `from` in
    // `started` is the record's key data, kept as the caller id).
    for e in events
        .iter()
        .filter(|e| !matches!(e.body, Some(Body::Started(_))))
    {
        let text = format!("{:?}", e.body);
        assert!(!text.contains("0001234"), "{text}");
    }

    // The model got the tool's output in full.
    let s = h.session().await?;
    let output = s
        .client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::ConversationItemCreate {
                item: Item::FunctionCallOutput { output, .. },
                ..
            } => Some(output.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(output, r#"{"name":"Maria","phone":"+15550001234"}"#);
    Ok(())
}
