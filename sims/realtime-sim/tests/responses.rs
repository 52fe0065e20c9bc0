//! Responses: quoted instructions, scripted speech and calls, pacing, errors, cancellation.

mod common;

use std::time::Duration;

use common::{Client, delta_audio, error_of, sim, types};
use serde_json::json;
use switchboard_realtime::client::ResponseParams;
use switchboard_realtime::{ClientEvent, ContentPart, Item, ServerEvent};
use switchboard_twilio::mulaw;

fn create_with_instructions(instructions: &str) -> ClientEvent {
    ClientEvent::ResponseCreate {
        event_id: None,
        response: Some(ResponseParams {
            instructions: Some(instructions.into()),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn greeting_from_a_quoted_instruction() {
    // The scripted response must not be consumed by the greeting.
    let sim = sim(r#"
        [session]
        ms_per_word = 100
        speed = 50.0
        [[response]]
        say = "First scripted answer."
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client
        .send(&create_with_instructions(
            "Greet the caller by saying exactly: \"Thanks for calling Acme Dental, how can I help?\"",
        ))
        .await;
    let events = client.until("response.done").await;
    let t = types(&events);
    assert_eq!(
        &t[..5],
        [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &t[t.len() - 6..],
        [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done"
        ]
    );

    let deltas: Vec<_> = events
        .iter()
        .filter(|e| e.ty == "response.output_audio.delta")
        .collect();
    // 9 words at 100 ms: 900 ms of audio in 100 ms deltas of 800 bytes.
    assert_eq!(deltas.len(), 9);
    let mut audio = Vec::new();
    for d in &deltas {
        let bytes = delta_audio(d);
        assert_eq!(bytes.len(), 800);
        audio.extend(bytes);
    }
    let level = mulaw::rms(&audio);
    assert!((0.15..0.25).contains(&level), "voice RMS {level}");

    let words: String = events
        .iter()
        .filter_map(|e| match &e.ev {
            ServerEvent::OutputAudioTranscriptDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(words, "Thanks for calling Acme Dental, how can I help?");
    // Transcript deltas interleave with the audio, word by word.
    let first_audio = t
        .iter()
        .position(|t| *t == "response.output_audio.delta")
        .unwrap();
    let last_word = t
        .iter()
        .rposition(|t| *t == "response.output_audio_transcript.delta")
        .unwrap();
    assert!(first_audio < last_word);

    let transcript_done = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        transcript_done,
        "Thanks for calling Acme Dental, how can I help?"
    );
    // The content part carries the GA part object: `audio` (the SDK's `Part.type` is
    // `text` | `audio`), while the item's own content says `output_audio`.
    let part_done = events
        .iter()
        .find(|e| e.ty == "response.content_part.done")
        .unwrap();
    assert_eq!(part_done.raw["part"]["type"], "audio");

    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.status, "completed");
    assert_eq!(response.object.as_deref(), Some("realtime.response"));
    assert!(response.conversation_id.is_some());
    assert_eq!(response.output.len(), 1);
    let Item::Message {
        role,
        content,
        status,
        ..
    } = &response.output[0]
    else {
        panic!("{:?}", response.output)
    };
    assert_eq!(role, "assistant");
    assert_eq!(status.as_deref(), Some("completed"));
    assert_eq!(
        content[0],
        ContentPart::OutputAudio {
            transcript: Some("Thanks for calling Acme Dental, how can I help?".into())
        }
    );
    let usage = response.usage.as_ref().unwrap();
    let out = usage.output_token_details.as_ref().unwrap();
    assert!(out.audio_tokens > 0 && out.text_tokens > 0);
    assert_eq!(usage.output_tokens, out.audio_tokens + out.text_tokens);
    assert!(usage.input_tokens > 0);
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);

    // The next response plays the script from its first entry.
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.output[0].text(), "First scripted answer.");
    // Then the script has run out.
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(
        response.output[0].text(),
        "Is there anything else I can help you with?"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn audio_is_paced_at_speed_times_real_time() {
    // 8 words at 250 ms = 2 s of audio; at 10x that is about 200 ms.
    let sim = sim(r#"
        [session]
        speed = 10.0
        [[response]]
        say = "one two three four five six seven eight"
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    let started = tokio::time::Instant::now();
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let elapsed = started.elapsed();
    let deltas = events
        .iter()
        .filter(|e| e.ty == "response.output_audio.delta")
        .count();
    assert_eq!(deltas, 20, "2 s in deltas of 100 ms");
    // The first delta goes out at once, the other 19 every 10 ms.
    assert!(
        elapsed >= Duration::from_millis(185) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn function_call_then_output_then_substituted_speech() {
    let sim = sim(
        r#"
        [session]
        ms_per_word = 50
        speed = 50.0
        [[response]]
        call = { name = "lookup_customer", arguments = '{"phone":"+15550001234","note":"a longer argument string"}' }
        [[response]]
        say = "I found your account, {{name}}. You have {{visits}} visits{{missing}}."
        "#,
    )
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let t = types(&events);
    assert_eq!(t[0], "response.created");
    assert!(
        !t.contains(&"response.output_audio.delta"),
        "a call-only response has no audio"
    );
    let first_arg = t
        .iter()
        .position(|t| *t == "response.function_call_arguments.delta")
        .unwrap();
    assert_eq!(t[first_arg - 2], "response.output_item.added");
    let arg_deltas: String = events
        .iter()
        .filter_map(|e| match &e.ev {
            ServerEvent::FunctionCallArgumentsDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    let expected_args = r#"{"phone":"+15550001234","note":"a longer argument string"}"#;
    assert_eq!(arg_deltas, expected_args);
    let (call_id, name, arguments) = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => Some((call_id.clone(), name.clone(), arguments.clone())),
            _ => None,
        })
        .unwrap();
    assert!(call_id.starts_with("call_"));
    assert_eq!(name, "lookup_customer");
    assert_eq!(arguments, expected_args);
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.status, "completed");
    let Item::FunctionCall {
        call_id: out_call,
        name: out_name,
        arguments: out_args,
        ..
    } = &response.output[0]
    else {
        panic!("{:?}", response.output)
    };
    assert_eq!(
        (out_call, out_name.as_str(), out_args.as_str()),
        (&call_id, "lookup_customer", expected_args)
    );

    // An output for a call that does not exist is refused.
    client
        .send(&ClientEvent::item_create(Item::function_output(
            "call_nope",
            "{}",
        )))
        .await;
    assert_eq!(error_of(&client.next().await)["param"], "item.call_id");

    client
        .send(&ClientEvent::item_create(Item::function_output(
            &call_id,
            r#"{"name":"Maria","visits":3}"#,
        )))
        .await;
    let added = client.next().await;
    assert_eq!(added.ty, "conversation.item.added");
    assert!(
        added.raw["item"]["id"]
            .as_str()
            .unwrap()
            .starts_with("item_")
    );
    assert_eq!(client.next().await.ty, "conversation.item.done");

    // A tool output does not start a response by itself.
    client
        .send(&ClientEvent::ResponseCancel {
            event_id: None,
            response_id: None,
        })
        .await;
    let ev = client.next().await;
    assert_eq!(error_of(&ev)["code"], "response_cancel_not_active");

    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let transcript = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        transcript,
        "I found your account, Maria. You have 3 visits."
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn say_and_call_in_one_response() {
    let sim = sim(r#"
        [session]
        ms_per_word = 50
        speed = 50.0
        [[response]]
        say = "Goodbye."
        call = { name = "end_call" }
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.output.len(), 2);
    assert_eq!(response.output[0].text(), "Goodbye.");
    assert!(
        matches!(&response.output[1], Item::FunctionCall { name, arguments, .. }
            if name == "end_call" && arguments == "{}")
    );
    let indexes: Vec<u64> = events
        .iter()
        .filter(|e| e.ty == "response.output_item.added")
        .map(|e| e.raw["output_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1]);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn one_response_at_a_time_and_client_cancel() {
    let sim = sim(r#"
        [session]
        speed = 1.0
        [[response]]
        say = "This answer is long enough that it is still playing when the client asks again."
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.send(&ClientEvent::response_create()).await;
    let created = client.next().await;
    let ServerEvent::ResponseCreated { response, .. } = &created.ev else {
        panic!("{}", created.raw)
    };
    assert_eq!(response.status, "in_progress");
    let response_id = response.id.clone();
    client.until("response.output_audio.delta").await;

    client.send(&ClientEvent::response_create()).await;
    let events = client.until("error").await;
    let err = error_of(events.last().unwrap());
    assert_eq!(err["code"], "conversation_already_has_active_response");
    assert!(err["message"].as_str().unwrap().contains(&response_id));

    client
        .send(&ClientEvent::ResponseCancel {
            event_id: None,
            response_id: None,
        })
        .await;
    let events = client.until("response.done").await;
    let t = types(&events);
    assert!(t.contains(&"response.output_audio.done"));
    assert!(t.contains(&"response.output_item.done"));
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.id, response_id);
    assert_eq!(response.status, "cancelled");
    let details = response.status_details.as_ref().unwrap();
    assert_eq!(details.reason.as_deref(), Some("client_cancelled"));
    assert!(
        matches!(&response.output[0], Item::Message { status, .. } if status.as_deref() == Some("incomplete"))
    );
    // A second cancel finds nothing to cancel.
    client
        .send(&ClientEvent::ResponseCancel {
            event_id: None,
            response_id: None,
        })
        .await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "response_cancel_not_active"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_errors_replace_a_response() {
    let sim = sim(
        r#"
        [session]
        speed = 50.0
        [[response]]
        error = { code = "rate_limit_exceeded", message = "Rate limit reached", type = "invalid_request_error" }
        "#,
    )
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.send(&ClientEvent::response_create()).await;
    let ev = client.next().await;
    let err = error_of(&ev);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(err["message"], "Rate limit reached");
    // Nothing is active: the next response.create works (and falls back).
    client.send(&ClientEvent::response_create()).await;
    let events = client.until("response.done").await;
    assert_eq!(events[0].ty, "response.created");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn conversation_items_are_added_and_done_and_deletable() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;
    client
        .send(&ClientEvent::item_create(Item::user_text(
            "The caller pressed 1.",
        )))
        .await;
    let added = client.next().await;
    let done = client.next().await;
    assert_eq!(
        (added.ty.as_str(), done.ty.as_str()),
        ("conversation.item.added", "conversation.item.done")
    );
    let id = done.raw["item"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        done.raw["item"]["content"][0]["text"],
        "The caller pressed 1."
    );
    client
        .send(&ClientEvent::item_create(Item::system_text("Be brief.")))
        .await;
    client.until("conversation.item.done").await;
    client
        .send(&ClientEvent::item_create(Item::assistant_text(
            "Earlier answer.",
        )))
        .await;
    let events = client.until("conversation.item.done").await;
    assert_eq!(events.len(), 2);

    client
        .send_json(json!({"type": "conversation.item.create",
            "item": {"type": "message", "role": "robot", "content": []}}))
        .await;
    assert_eq!(error_of(&client.next().await)["param"], "item.role");

    client
        .send(&ClientEvent::ConversationItemDelete {
            event_id: None,
            item_id: id.clone(),
        })
        .await;
    let ev = client.next().await;
    assert_eq!(ev.ty, "conversation.item.deleted");
    assert_eq!(ev.raw["item_id"], id.as_str());
    client
        .send(&ClientEvent::ConversationItemDelete {
            event_id: None,
            item_id: id,
        })
        .await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "item_delete_invalid_item_id"
    );
    client.close().await;
    sim.shutdown().await;
}
