//! Where the real server is strict, the simulator is too: refused parameters, the locked voice,
//! truncation to 0 ms, `error.event_id` left null, transcription that fails or comes late, the
//! VAD race in both orders, `response.metadata` echoed, and every event in the SDK's shapes
//! (checked by `common::Client` on every event read).

mod common;

use std::collections::HashSet;

use common::{Client, Ev, error_of, silence, sim, speech, types};
use serde_json::json;
use switchboard_realtime::ServerEvent;

const SPEAKER: &str = r#"
hear = ["Hello there, I need an appointment.", "Thanks, bye."]
[session]
ms_per_word = 50
speed = 50.0
[[response]]
say = "Sure, let me check the calendar for you right away."
"#;

fn create(event_id: Option<&str>, request: &str) -> serde_json::Value {
    let mut ev = json!({"type": "response.create",
        "response": {"metadata": {"switchboard_request": request}}});
    if let Some(id) = event_id {
        ev["event_id"] = json!(id);
    }
    ev
}

#[tokio::test]
async fn a_refused_update_changes_nothing_and_names_the_parameter() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;
    client
        .send_json(
            json!({"type": "session.update", "event_id": "upd_1", "session": {
            "type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcmu"},
                "turn_detection": {"type": "server_vad", "silence_duration": 500}},
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}}),
        )
        .await;
    let err = client.next().await;
    let body = error_of(&err);
    assert_eq!(body["code"], "unknown_parameter");
    assert_eq!(
        body["param"],
        "session.audio.input.turn_detection.silence_duration"
    );
    assert_eq!(body["event_id"], "upd_1", "the client's event id is echoed");
    // Nothing of the refused update was applied: still 24 kHz PCM and the default voice.
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "instructions": "x"}}),
        )
        .await;
    let updated = client.next().await;
    let ServerEvent::SessionUpdated { session, .. } = &updated.ev else {
        panic!("{}", updated.raw)
    };
    let audio = session.audio.as_ref().unwrap();
    assert_eq!(
        audio.input.as_ref().unwrap().format.as_ref().unwrap().kind,
        "audio/pcm"
    );
    assert_eq!(
        audio.output.as_ref().unwrap().voice.as_deref(),
        Some("alloy")
    );
    // Bad enum values and out-of-range numbers, with no event id: `error.event_id` is null.
    for (session, code, param) in [
        (
            json!({"type": "realtime", "audio": {"output": {"voice": "nova"}}}),
            "invalid_value",
            "session.audio.output.voice",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"turn_detection":
                {"type": "server_vad", "threshold": 2.0}}}}),
            "decimal_above_max_value",
            "session.audio.input.turn_detection.threshold",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "phone"}}}}),
            "invalid_value",
            "session.audio.input.noise_reduction.type",
        ),
        (
            json!({"type": "realtime", "truncation": {"type": "retention_ratio",
                "retention_ratio": 0.5, "token_limits": {"post_instructions": -1}}}),
            "integer_below_min_value",
            "session.truncation.token_limits.post_instructions",
        ),
    ] {
        client
            .send_json(json!({"type": "session.update", "session": session}))
            .await;
        let err = client.next().await;
        let body = error_of(&err);
        assert_eq!(
            (body["code"].as_str(), body["param"].as_str()),
            (Some(code), Some(param))
        );
        assert!(body["event_id"].is_null(), "{}", err.raw);
    }
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_voice_is_locked_once_the_model_has_spoken() {
    let sim = sim(SPEAKER).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    // Before any audio a voice change is fine.
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"output": {"voice": "cedar"}}}}),
        )
        .await;
    assert_eq!(client.next().await.ty, "session.updated");
    client.send_json(create(None, "r1")).await;
    client.until("response.done").await;
    client
        .send_json(
            json!({"type": "session.update", "event_id": "v2", "session": {"type": "realtime",
            "audio": {"output": {"voice": "marin"}}}}),
        )
        .await;
    let err = client.next().await;
    let body = error_of(&err);
    assert_eq!(body["code"], "cannot_update_voice");
    assert_eq!(body["event_id"], "v2");
    // The same voice again is no change and is accepted.
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"output": {"voice": "cedar"}}}}),
        )
        .await;
    assert_eq!(client.next().await.ty, "session.updated");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_is_echoed_and_checked() {
    let sim = sim(SPEAKER).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client.send_json(create(Some("c1"), "sb_resp_7")).await;
    let events = client.until("response.done").await;
    for ev in [&events[0], events.last().unwrap()] {
        let (ServerEvent::ResponseCreated { response, .. }
        | ServerEvent::ResponseDone { response, .. }) = &ev.ev
        else {
            panic!("{}", ev.raw)
        };
        assert_eq!(
            response.metadata.as_ref().unwrap()["switchboard_request"],
            "sb_resp_7"
        );
    }
    let long = "x".repeat(513);
    client
        .send_json(json!({"type": "response.create", "response": {"metadata": {"k": long}}}))
        .await;
    let err = client.next().await;
    assert_eq!(error_of(&err)["code"], "string_above_max_length");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn truncating_to_0_ms_is_refused_and_delete_removes_the_item() {
    let sim = sim(SPEAKER).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client.send_json(create(None, "r1")).await;
    let events = client.until("response.done").await;
    let item_id = events
        .iter()
        .find_map(|e| match &e.ev {
            ServerEvent::OutputAudioDelta { item_id, .. } => Some(item_id.clone()),
            _ => None,
        })
        .unwrap();
    client
        .send_json(
            json!({"type": "conversation.item.truncate", "item_id": item_id,
            "content_index": 0, "audio_end_ms": 0}),
        )
        .await;
    let err = client.next().await;
    assert_eq!(error_of(&err)["code"], "unsupported_content_type");
    assert!(error_of(&err)["event_id"].is_null());
    client
        .send_json(json!({"type": "conversation.item.delete", "item_id": item_id}))
        .await;
    let deleted = client.next().await;
    assert_eq!(deleted.ty, "conversation.item.deleted");
    client.close().await;
    sim.shutdown().await;
}

/// Reads until `n` events of type `ty` have arrived.
async fn until_nth(client: &mut Client, ty: &str, n: usize) -> Vec<Ev> {
    let mut seen = Vec::new();
    let mut count = 0;
    while count < n {
        let ev = client.next().await;
        count += usize::from(ev.ty == ty);
        seen.push(ev);
    }
    seen
}

/// A simulator whose first client `response.create` races a VAD response in `order`, and a
/// configured client.
async fn racing(order: &str) -> (realtime_sim::SimServer, Client) {
    let script = SPEAKER.replace(
        "speed = 50.0\n",
        &format!("speed = 50.0\nvad_race = [1]\nvad_race_order = \"{order}\"\n"),
    );
    let sim = sim(&script).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    (sim, client)
}

#[tokio::test]
async fn vad_race_created_then_error() {
    let (sim, mut client) = racing("created_then_error").await;
    client.send_json(create(Some("mine"), "sb_resp_1")).await;
    let events = client.until("response.done").await;
    let t = types(&events);
    let at = |ty: &str| t.iter().position(|x| *x == ty).unwrap();
    assert!(at("response.created") < at("error"), "{t:?}");
    let ServerEvent::ResponseCreated { response, .. } = &events[0].ev else {
        panic!()
    };
    assert_eq!(response.metadata, None, "the server's own response");
    let body = error_of(&events[at("error")]);
    assert_eq!(body["code"], "conversation_already_has_active_response");
    assert_eq!(body["event_id"], "mine");
    // After it, the same request goes through.
    client.send_json(create(None, "sb_resp_2")).await;
    let events = client.until("response.created").await;
    let ServerEvent::ResponseCreated { response, .. } = &events.last().unwrap().ev else {
        panic!()
    };
    assert_eq!(
        response.metadata.as_ref().unwrap()["switchboard_request"],
        "sb_resp_2"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn vad_race_error_then_created() {
    let (sim, mut client) = racing("error_then_created").await;
    client.send_json(create(None, "sb_resp_1")).await;
    let events = client.until("response.done").await;
    let t = types(&events);
    assert_eq!(&t[..2], ["error", "response.created"], "{t:?}");
    let ServerEvent::ResponseCreated { response, .. } = &events[1].ev else {
        panic!()
    };
    assert_eq!(response.metadata, None, "the server's own response");
    assert!(
        error_of(&events[0])["event_id"].is_null(),
        "no client id, null"
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn transcription_can_fail_or_arrive_after_the_response() {
    let script = SPEAKER.replace(
        "speed = 50.0\n",
        "speed = 50.0\ntranscription_delay_ms = 1500\ntranscription_fails = [2]\n",
    );
    let sim = sim(&script).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(true).await;
    client.append(&speech(600)).await;
    client.append(&silence(700)).await;
    let events = until_nth(
        &mut client,
        "conversation.item.input_audio_transcription.completed",
        1,
    )
    .await;
    let t = types(&events);
    let done = t.iter().position(|t| *t == "response.done").unwrap();
    let completed = t.len() - 1;
    assert!(done < completed, "late: {t:?}");
    let ServerEvent::InputTranscriptionCompleted { usage, .. } = &events[completed].ev else {
        panic!()
    };
    assert!(usage.is_some(), "transcription usage is billed");
    // The second turn's transcription fails.
    client.append(&speech(600)).await;
    client.append(&silence(700)).await;
    let events = until_nth(
        &mut client,
        "conversation.item.input_audio_transcription.failed",
        1,
    )
    .await;
    let failed = events.last().unwrap();
    assert!(failed.raw["item_id"].as_str().unwrap().starts_with("item_"));
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn usage_splits_cached_tokens_by_modality() {
    let sim = sim(SPEAKER).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    // Long instructions so the prompt passes the 1,024-token cache threshold.
    let instructions = "word ".repeat(1200);
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "instructions": instructions}}),
        )
        .await;
    client.next().await;
    let mut kinds = HashSet::new();
    let mut cached = Vec::new();
    for n in 0..2 {
        client.send_json(create(None, &format!("r{n}"))).await;
        let events = client.until("response.done").await;
        kinds.extend(events.iter().map(|e| e.ty.clone()));
        let ServerEvent::ResponseDone { response, .. } = &events.last().unwrap().ev else {
            panic!()
        };
        let details = response
            .usage
            .as_ref()
            .unwrap()
            .input_token_details
            .clone()
            .unwrap();
        let split = details.cached_tokens_details.unwrap();
        assert_eq!(
            details.cached_tokens,
            split.text_tokens + split.audio_tokens + split.image_tokens
        );
        cached.push(details.cached_tokens);
    }
    assert_eq!(cached[0], 0, "nothing cached on the first read");
    assert!(cached[1] >= 1024, "{cached:?}");
    assert!(kinds.contains("rate_limits.updated"));
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn conversation_items_take_the_ga_content_types_of_their_role() {
    let sim = sim(SPEAKER).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    let message = |role: &str, kind: &str| {
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": role,
            "content": [{"type": kind, "text": "Hello."}]}})
    };
    // What a replayed conversation sends is accepted...
    for (role, kind) in [
        ("user", "input_text"),
        ("assistant", "output_text"),
        ("system", "input_text"),
    ] {
        client.send_json(message(role, kind)).await;
        let added = client.next().await;
        assert_eq!(
            added.ty, "conversation.item.added",
            "{role} {kind}: {}",
            added.raw
        );
        assert_eq!(client.next().await.ty, "conversation.item.done");
    }
    client
        .send_json(
            json!({"type": "conversation.item.create", "item": {"type": "function_call",
            "call_id": "call_1", "name": "book", "arguments": "{}"}}),
        )
        .await;
    assert_eq!(client.next().await.ty, "conversation.item.added");
    assert_eq!(client.next().await.ty, "conversation.item.done");
    client
        .send_json(json!({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"}}))
        .await;
    assert_eq!(client.next().await.ty, "conversation.item.added");
    assert_eq!(client.next().await.ty, "conversation.item.done");
    // ...the beta spelling and another role's part are not.
    for (role, kind) in [
        ("assistant", "text"),
        ("assistant", "input_text"),
        ("user", "output_text"),
        ("system", "output_text"),
    ] {
        client.send_json(message(role, kind)).await;
        let err = client.next().await;
        assert_eq!(error_of(&err)["code"], "invalid_value", "{role} {kind}");
        assert_eq!(
            error_of(&err)["param"],
            "item.content[0].type",
            "{role} {kind}"
        );
    }
    client.close().await;
    sim.shutdown().await;
}
