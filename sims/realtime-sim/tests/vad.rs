//! Caller audio: server VAD turns, transcription, barge-in, truncation, manual turns.

mod common;

use common::{Client, Ev, delta_audio, error_of, silence, sim, speech, types};
use serde_json::json;
use switchboard_realtime::{ClientEvent, Item, ServerEvent};

const TURN_SCRIPT: &str = r#"
hear = ["Hi, this is Maria. Can you look up my account?", "Thanks, bye."]
[session]
ms_per_word = 50
speed = 50.0
[[response]]
say = "Of course, one moment."
"#;

fn truncate(item_id: &str, content_index: u32, audio_end_ms: u32) -> ClientEvent {
    ClientEvent::ConversationItemTruncate {
        event_id: None,
        item_id: item_id.into(),
        content_index,
        audio_end_ms,
    }
}

fn cancel() -> ClientEvent {
    ClientEvent::ResponseCancel {
        event_id: None,
        response_id: None,
    }
}

/// Reads until both a `response.done` and a transcription have arrived.
async fn turn_events(client: &mut Client) -> Vec<Ev> {
    let mut events = Vec::new();
    let (mut done, mut transcribed) = (false, false);
    while !(done && transcribed) {
        let ev = client.next().await;
        done |= ev.ty == "response.done";
        transcribed |= ev.ty == "conversation.item.input_audio_transcription.completed";
        events.push(ev);
    }
    events
}

#[tokio::test]
async fn a_spoken_turn_is_detected_committed_transcribed_and_answered() {
    let sim = sim(TURN_SCRIPT).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(true).await;
    client.append(&silence(500)).await;
    client.append(&speech(1000)).await;
    client.append(&silence(1000)).await;
    let events = turn_events(&mut client).await;
    let t = types(&events);
    assert_eq!(
        &t[..6],
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
        ],
        "{t:?}"
    );
    let ServerEvent::SpeechStarted {
        audio_start_ms,
        item_id,
        ..
    } = &events[0].ev
    else {
        panic!()
    };
    // Speech began at 500 ms; the prefix padding moves the start 300 ms earlier.
    assert_eq!(*audio_start_ms, 200);
    let ServerEvent::SpeechStopped {
        audio_end_ms,
        item_id: stopped_item,
        ..
    } = &events[1].ev
    else {
        panic!()
    };
    // 500 ms of silence after the speech that ended at 1500 ms.
    assert_eq!(*audio_end_ms, 2000);
    assert_eq!(stopped_item, item_id);
    let ServerEvent::InputAudioBufferCommitted {
        item_id: committed,
        previous_item_id,
        ..
    } = &events[2].ev
    else {
        panic!()
    };
    assert_eq!(committed, item_id);
    assert_eq!(*previous_item_id, None);
    let user = &events[3].raw["item"];
    assert_eq!(user["id"], item_id.as_str());
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "in_progress");
    assert_eq!(user["content"][0]["type"], "input_audio");

    let transcript = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::InputTranscriptionCompleted {
                item_id: t_item,
                transcript,
                ..
            } => Some((t_item.clone(), transcript.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        transcript,
        (
            item_id.clone(),
            "Hi, this is Maria. Can you look up my account?".to_string()
        )
    );
    let spoken = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(spoken, "Of course, one moment.");
    // The user audio counts as input.
    let ServerEvent::ResponseDone { response, .. } =
        &events.iter().find(|e| e.ty == "response.done").unwrap().ev
    else {
        panic!()
    };
    let input = response
        .usage
        .as_ref()
        .unwrap()
        .input_token_details
        .as_ref()
        .unwrap();
    assert!(input.audio_tokens > 0);

    // The second turn hears the second entry.
    client.append(&speech(600)).await;
    client.append(&silence(600)).await;
    let events = turn_events(&mut client).await;
    let heard = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::InputTranscriptionCompleted { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(heard, "Thanks, bye.");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn no_transcription_unless_configured() {
    let sim = sim(TURN_SCRIPT).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client.append(&speech(600)).await;
    client.append(&silence(600)).await;
    let mut events = client.until("response.done").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    client.send(&cancel()).await;
    events.extend(client.until("error").await);
    let t = types(&events);
    assert!(t.contains(&"input_audio_buffer.committed"));
    assert!(
        !t.contains(&"conversation.item.input_audio_transcription.completed"),
        "{t:?}"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn barge_in_cancels_and_truncation_is_validated() {
    let sim = sim(
        r#"
        [session]
        ms_per_word = 250
        speed = 5.0
        [[response]]
        say = "Let me tell you about all of our opening hours, our locations, our services, the insurance plans we accept, and the many ways you can book an appointment with us today."
        "#,
    )
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(true).await;
    client.send(&ClientEvent::response_create()).await;
    let mut before = Vec::new();
    while before
        .iter()
        .filter(|e: &&Ev| e.ty == "response.output_audio.delta")
        .count()
        < 3
    {
        before.push(client.next().await);
    }
    let assistant_item = before
        .iter()
        .find(|e| e.ty == "response.output_item.added")
        .unwrap()
        .raw["item"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The caller talks over the answer.
    client.append(&speech(300)).await;
    let mut events = before;
    events.extend(client.until("response.done").await);
    let t = types(&events);
    let started = t
        .iter()
        .position(|t| *t == "input_audio_buffer.speech_started")
        .unwrap();
    assert_eq!(
        &t[started..],
        [
            "input_audio_buffer.speech_started",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
    );
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.status, "cancelled");
    let details = response.status_details.as_ref().unwrap();
    assert_eq!(details.kind.as_deref(), Some("cancelled"));
    assert_eq!(details.reason.as_deref(), Some("turn_detected"));
    let partial = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert!(partial.starts_with("Let me"), "{partial}");
    assert!(partial.len() < 60, "cut short: {partial}");
    let sent_ms: usize = events
        .iter()
        .filter(|e| e.ty == "response.output_audio.delta")
        .map(|e| delta_audio(e).len() / 8)
        .sum();
    assert!(sent_ms >= 300);

    // Truncation: unknown item, too long, wrong part, then the real thing.
    client.send(&truncate("item_unknown", 0, 100)).await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "item_truncate_invalid_item_id"
    );
    let too_long = sent_ms as u32 + 500;
    client.send(&truncate(&assistant_item, 0, too_long)).await;
    let ev = client.next().await;
    assert_eq!(
        error_of(&ev)["message"],
        format!("Audio content of {sent_ms}ms is already shorter than {too_long}ms")
    );
    client.send(&truncate(&assistant_item, 1, 100)).await;
    assert_eq!(error_of(&client.next().await)["param"], "content_index");
    client.send(&truncate(&assistant_item, 0, 200)).await;
    let ev = client.next().await;
    let ServerEvent::ConversationItemTruncated {
        item_id,
        content_index,
        audio_end_ms,
        ..
    } = &ev.ev
    else {
        panic!("{}", ev.raw)
    };
    assert_eq!(
        (item_id.as_str(), *content_index, *audio_end_ms),
        (assistant_item.as_str(), 0, 200)
    );
    // After the cut the item is shorter: cutting it to its old length fails now.
    client.send(&truncate(&assistant_item, 0, 250)).await;
    let ev = client.next().await;
    assert_eq!(
        error_of(&ev)["message"],
        "Audio content of 200ms is already shorter than 250ms"
    );

    // The caller stops: the turn commits and VAD starts the next response.
    client.append(&silence(600)).await;
    let events = client.until("response.created").await;
    let user_item = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::InputAudioBufferCommitted { item_id, .. } => Some(item_id.clone()),
            _ => None,
        })
        .unwrap();
    client.send(&truncate(&user_item, 0, 10)).await;
    let events = client.until("error").await;
    assert_eq!(
        error_of(events.last().unwrap())["code"],
        "unsupported_content_type"
    );
    client.until("response.done").await;

    // Text the client added has no audio to cut.
    client
        .send(&ClientEvent::item_create(Item::assistant_text("Earlier.")))
        .await;
    let done = client.until("conversation.item.done").await;
    let text_item = done.last().unwrap().raw["item"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.send(&truncate(&text_item, 0, 0)).await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "unsupported_content_type"
    );

    let records = sim.sessions().await;
    let truncates = records[0]
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::ConversationItemTruncate { .. }))
        .count();
    assert_eq!(truncates, 7, "the session records every truncate");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn without_interrupt_response_speech_does_not_cancel() {
    let sim = sim(r#"
        [session]
        ms_per_word = 250
        speed = 5.0
        [[response]]
        say = "A short answer of a few words."
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcmu"},
                "turn_detection": {"type": "server_vad",
                "interrupt_response": false, "create_response": false}}}}}),
        )
        .await;
    let updated = client.next().await;
    assert_eq!(
        updated.raw["session"]["audio"]["input"]["turn_detection"]["threshold"], 0.5,
        "defaults are filled in"
    );
    client.send(&ClientEvent::response_create()).await;
    client.until("response.output_audio.delta").await;
    client.append(&speech(300)).await;
    let events = client.until("response.done").await;
    assert!(types(&events).contains(&"input_audio_buffer.speech_started"));
    let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(response.status, "completed");
    // create_response is off: the end of the turn commits but starts nothing.
    client.append(&silence(600)).await;
    client.until("conversation.item.done").await;
    client.send(&cancel()).await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "response_cancel_not_active"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn manual_turns_commit_and_clear() {
    let sim = sim(TURN_SCRIPT).await;
    let (mut client, _) = Client::connect(&sim).await;

    // Under server VAD an empty buffer cannot be committed.
    client
        .send(&ClientEvent::InputAudioBufferCommit { event_id: None })
        .await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "input_audio_buffer_commit_empty"
    );

    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"turn_detection": null,
                "transcription": {"model": "whisper-1"}}}}}),
        )
        .await;
    let updated = client.next().await;
    assert_eq!(updated.ty, "session.updated");
    assert!(updated.raw["session"]["audio"]["input"]["turn_detection"].is_null());

    client.append(&speech(500)).await;
    client.append(&silence(600)).await;
    client
        .send(&ClientEvent::InputAudioBufferCommit { event_id: None })
        .await;
    let mut events = client.until("conversation.item.done").await;
    events.push(client.next().await);
    let t = types(&events);
    assert_eq!(
        t,
        [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
        ],
        "no VAD events and no response in manual mode"
    );

    client.append(&speech(500)).await;
    client
        .send(&ClientEvent::InputAudioBufferClear { event_id: None })
        .await;
    assert_eq!(client.next().await.ty, "input_audio_buffer.cleared");
    client.append(&speech(40)).await;
    client
        .send(&ClientEvent::InputAudioBufferCommit { event_id: None })
        .await;
    let ev = client.next().await;
    assert_eq!(error_of(&ev)["code"], "input_audio_buffer_commit_empty");
    assert!(
        error_of(&ev)["message"]
            .as_str()
            .unwrap()
            .contains("Expected at least 100ms")
    );
    client.close().await;
    sim.shutdown().await;
}

/// Reads the ack pair of a created item.
async fn created(client: &mut Client) {
    let added = client.next().await;
    assert_eq!(added.ty, "conversation.item.added", "{:?}", added.raw);
    assert_eq!(client.next().await.ty, "conversation.item.done");
}

#[tokio::test]
async fn a_session_seeded_with_a_call_goes_on_where_the_conversation_left_off() {
    // A new session of a call another session began: the greeting, the caller's first turn and
    // the model's lookup with its output are seeded as items. The model answers from them (the
    // second response), and the caller's next turn is the second it hears: the script does not
    // start over (which would look the caller up again and hear the first turn twice).
    let sim = sim(r#"
        hear = ["Look up my account.", "Are you open Saturdays?"]
        [session]
        ms_per_word = 50
        speed = 50.0
        [[response]]
        call = { name = "lookup_customer" }
        [[response]]
        say = "I found your account, {{name}}."
        [[response]]
        say = "Yes, nine to one."
        "#)
    .await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(true).await;
    let seeded = [
        Item::assistant_text("Thanks for calling Acme Dental."),
        Item::user_text("Look up my account."),
        Item::FunctionCall {
            id: None,
            call_id: "call_1".into(),
            name: "lookup_customer".into(),
            arguments: "{}".into(),
            status: None,
        },
        Item::function_output("call_1", r#"{"name":"Maria"}"#),
    ];
    for item in seeded {
        client.send(&ClientEvent::item_create(item)).await;
        created(&mut client).await;
    }
    client.send(&ClientEvent::response_create()).await;
    let said = |events: &[Ev]| {
        events
            .iter()
            .find_map(|e| match &e.ev {
                ServerEvent::OutputAudioTranscriptDone { transcript, .. } => {
                    Some(transcript.clone())
                }
                _ => None,
            })
            .unwrap_or_default()
    };
    let events = client.until("response.done").await;
    assert_eq!(said(&events), "I found your account, Maria.");

    client.append(&speech(800)).await;
    client.append(&silence(800)).await;
    let events = turn_events(&mut client).await;
    let heard = events.iter().find_map(|e| match &e.ev {
        ServerEvent::InputTranscriptionCompleted { transcript, .. } => Some(transcript.clone()),
        _ => None,
    });
    assert_eq!(heard.as_deref(), Some("Are you open Saturdays?"));
    assert_eq!(said(&events), "Yes, nine to one.");
    client.close().await;
    sim.shutdown().await;
}
