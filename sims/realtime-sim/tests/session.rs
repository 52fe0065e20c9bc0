//! Connection and session behaviour: handshake, configuration, protocol errors, records.

mod common;

use common::{Client, error_of, sim};
use serde_json::json;
use switchboard_realtime::ServerEvent;
use switchboard_realtime::session::{AudioFormat, TurnDetection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn session_created_then_update_gives_the_full_config() {
    let sim = sim("").await;
    let (mut client, created) = Client::connect(&sim).await;

    let ServerEvent::SessionCreated { session, .. } = &created.ev else {
        panic!("{:?}", created.raw)
    };
    assert!(session.id.as_deref().unwrap().starts_with("sess_"));
    assert_eq!(session.object.as_deref(), Some("realtime.session"));
    assert!(session.expires_at.unwrap() > 1_700_000_000);
    assert_eq!(session.model.as_deref(), Some("gpt-realtime"));
    let audio = session.audio.as_ref().unwrap();
    let input = audio.input.as_ref().unwrap();
    // Like OpenAI's: 16-bit PCM at 24 kHz until the client says otherwise.
    assert_eq!(input.format, Some(AudioFormat::pcm()));
    assert_eq!(input.transcription, None, "transcription is off by default");
    assert_eq!(
        input.turn_detection,
        Some(TurnDetection::ServerVad {
            threshold: Some(0.5),
            prefix_padding_ms: Some(300),
            silence_duration_ms: Some(500),
            idle_timeout_ms: None,
            create_response: Some(true),
            interrupt_response: Some(true),
        })
    );
    let output = audio.output.as_ref().unwrap();
    assert_eq!(output.format, Some(AudioFormat::pcm()));
    assert_eq!(output.voice.as_deref(), Some("alloy"));

    let updated = client.configure(true).await;
    let ServerEvent::SessionUpdated { session: s2, .. } = &updated.ev else {
        panic!()
    };
    assert_eq!(s2.id, session.id, "same session");
    assert_eq!(s2.instructions.as_deref(), Some("You are the front desk."));
    let input = s2.audio.as_ref().unwrap().input.as_ref().unwrap();
    assert_eq!(
        input.transcription.as_ref().unwrap().model,
        "gpt-4o-mini-transcribe"
    );
    // Fields the update left out keep their values.
    assert_eq!(
        s2.audio
            .as_ref()
            .unwrap()
            .output
            .as_ref()
            .unwrap()
            .voice
            .as_deref(),
        Some("marin")
    );
    assert_eq!(s2.tool_choice.as_deref(), Some("auto"));

    // A partial update changes only what it names.
    client
        .send_json(
            json!({"type": "session.update", "session": {"type": "realtime",
            "tools": [{"type": "function", "name": "lookup_customer", "description": "d",
                       "parameters": {"type": "object"}}]}}),
        )
        .await;
    let ev = client.next().await;
    let ServerEvent::SessionUpdated { session: s3, .. } = &ev.ev else {
        panic!("{}", ev.raw)
    };
    assert_eq!(s3.tools.as_ref().unwrap()[0].name, "lookup_customer");
    assert_eq!(s3.instructions.as_deref(), Some("You are the front desk."));
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn session_update_rejects_missing_type_and_beta_fields() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;

    client
        .send_json(json!({"type": "session.update", "event_id": "ev_1",
            "session": {"instructions": "hi"}}))
        .await;
    let ev = client.next().await;
    let err = error_of(&ev);
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["code"], "missing_required_parameter");
    assert_eq!(err["param"], "session.type");
    assert_eq!(err["event_id"], "ev_1", "the client event id is echoed");

    for field in [
        "voice",
        "input_audio_format",
        "modalities",
        "turn_detection",
    ] {
        let mut session = json!({"type": "realtime"});
        session[field] = json!("x");
        client
            .send_json(json!({"type": "session.update", "session": session}))
            .await;
        let ev = client.next().await;
        let err = error_of(&ev);
        assert_eq!(err["code"], "unknown_parameter", "{field}");
        assert_eq!(err["param"], format!("session.{field}"));
    }

    client
        .send_json(json!({"type": "session.update", "session": {"type": "transcription"}}))
        .await;
    assert_eq!(error_of(&client.next().await)["param"], "session.type");

    // Beta response overrides are rejected too.
    client
        .send_json(
            json!({"type": "response.create", "response": {"modalities": ["text", "audio"]}}),
        )
        .await;
    assert_eq!(
        error_of(&client.next().await)["param"],
        "response.modalities"
    );

    // The session is still usable and unchanged.
    let updated = client.configure(false).await;
    let ServerEvent::SessionUpdated { session, .. } = &updated.ev else {
        panic!()
    };
    assert_eq!(
        session.instructions.as_deref(),
        Some("You are the front desk.")
    );
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_json_and_unknown_events_are_errors_and_the_session_goes_on() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;

    client.send_text("{not json").await;
    let ev = client.next().await;
    assert_eq!(error_of(&ev)["code"], "invalid_event");
    assert_eq!(error_of(&ev)["type"], "invalid_request_error");

    client
        .send_json(json!({"type": "response.audio.delta", "event_id": "e9"}))
        .await;
    let ev = client.next().await;
    let err = error_of(&ev);
    assert_eq!(err["code"], "invalid_event");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("'response.audio.delta'"),
        "{err}"
    );
    assert_eq!(err["event_id"], "e9");

    client.send_json(json!({"no": "type"})).await;
    assert_eq!(
        error_of(&client.next().await)["code"],
        "missing_required_parameter"
    );

    // A known event with a bad shape.
    client
        .send_json(
            json!({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0}),
        )
        .await;
    let ev = client.next().await;
    assert!(
        error_of(&ev)["message"]
            .as_str()
            .unwrap()
            .contains("audio_end_ms"),
        "{}",
        ev.raw
    );

    client
        .send_json(json!({"type": "input_audio_buffer.append", "audio": "%%% not base64"}))
        .await;
    assert_eq!(error_of(&client.next().await)["param"], "audio");

    // Still alive.
    client.configure(false).await;
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn beta_header_gets_an_error_and_close_4000() {
    let sim = sim("").await;
    let mut client = Client::connect_with(&sim, &[("OpenAI-Beta", "realtime=v1")])
        .await
        .unwrap();
    let (frame, events) = client.closed().await;
    assert_eq!(events.len(), 1, "only the error, no session.created");
    let err = error_of(&events[0]);
    assert_eq!(err["code"], "beta_api_shape_disabled");
    assert_eq!(
        u16::from(frame.expect("a close frame").code),
        4000,
        "close code 4000"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn api_key_is_checked_when_required() {
    let sim = common::sim("[session]\nrequire_api_key = true\n").await;
    let err = Client::connect_with(&sim, &[])
        .await
        .err()
        .expect("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other}"),
    }
    let err = Client::connect_with(&sim, &[("Authorization", "Bearer ")])
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 401),
        "{err}"
    );
    // With a key it works, and the refused attempts are not sessions.
    let (client, _) = Client::connect(&sim).await;
    client.close().await;
    assert_eq!(sim.sessions().await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn records_headers_query_events_and_close() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;
    client.configure(false).await;
    client.send_text("garbage").await;
    client.next().await;

    let records = sim.sessions().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.query, "model=gpt-realtime");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    assert!(r.header("openai-beta").is_none());
    assert_eq!(r.client_events.len(), 1, "only events that parsed");
    assert!(matches!(
        r.client_events[0],
        switchboard_realtime::ClientEvent::SessionUpdate { .. }
    ));
    assert!(!r.closed);

    let (second, _) = Client::connect(&sim).await;
    client.close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let records = sim.sessions().await;
        assert_eq!(records.len(), 2, "one record per connection, in order");
        if records[0].closed {
            assert!(!records[1].closed);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed session is marked closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    second.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn session_expires_with_error_and_1001() {
    let sim = sim("[session]\nmax_seconds = 1\n").await;
    let (mut client, _) = Client::connect(&sim).await;
    let started = tokio::time::Instant::now();
    let (frame, events) = client.closed().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(events.len(), 1);
    let err = error_of(&events[0]);
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["code"], "session_expired");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("Your session hit the maximum duration of")
    );
    assert_eq!(u16::from(frame.unwrap().code), 1001);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001() {
    let sim = sim("").await;
    let (mut client, _) = Client::connect(&sim).await;
    let url = sim.url();
    let stop = tokio::spawn(sim.shutdown());
    let (frame, _) = client.closed().await;
    assert_eq!(u16::from(frame.unwrap().code), 1001);
    stop.await.unwrap();
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn healthz_answers_plain_http() {
    let sim = sim("").await;
    let mut stream = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(sim.url().starts_with("ws://127.0.0.1:"));
    assert!(sim.url().ends_with("/v1/realtime"));
    sim.shutdown().await;
}

#[tokio::test]
async fn odd_inputs_get_errors_never_a_dead_session() {
    let sim = sim("[session]\nspeed = 50.0\n").await;
    let (mut client, _) = Client::connect(&sim).await;
    // Voice and formats set before any audio (the voice is locked once the model spoke).
    client.configure(true).await;
    let odd = [
        json!([1, 2, 3]),
        json!("session.update"),
        json!({"type": 42}),
        json!({"type": "session.update", "session": "realtime"}),
        json!({"type": "session.update", "session": {"type": "realtime", "audio": 7}}),
        json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "shouting"}}}}}),
        json!({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
            "audio_end_ms": -5}),
        json!({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
            "audio_end_ms": 1e30}),
        json!({"type": "conversation.item.create", "item": {"type": "mcp_call"}}),
        json!({"type": "conversation.item.create", "item": null}),
        json!({"type": "response.create", "response": {"instructions": "\"unterminated"}}),
        json!({"type": "response.cancel", "response_id": "resp_nope"}),
        json!({"type": "input_audio_buffer.append", "audio": ""}),
    ];
    let mut errors = 0;
    for (i, ev) in odd.iter().enumerate() {
        client.send_json(ev.clone()).await;
        // Each gets exactly one error, except the empty append (no reply, like the real
        // server) and the response.create without a closing quote (a scripted response).
        if i == 10 {
            client.until("response.done").await;
            continue;
        }
        if i == odd.len() - 1 {
            continue;
        }
        let reply = client.next().await;
        error_of(&reply);
        errors += 1;
    }
    assert_eq!(errors, odd.len() - 2);
    client.send_text(&"x".repeat(100_000)).await;
    error_of(&client.next().await);
    client.configure(true).await;
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_connect_delay_holds_each_upgrade() {
    let delay = std::time::Duration::from_millis(300);
    let sim = realtime_sim::SimServer::start_with(
        "127.0.0.1:0",
        realtime_sim::Script::from_toml_str("").unwrap(),
        realtime_sim::SimOptions {
            connect_delay: delay,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let (_client, first) = Client::connect(&sim).await;
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(first.ty, "session.created");
}
