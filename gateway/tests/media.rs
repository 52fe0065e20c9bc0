//! `GET /media`: Twilio Media Streams bridged to `voice.call.<sid>.in` / `.out` on a real
//! nats-server.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use futures::{SinkExt, StreamExt};
use gateway::stream_token::{StreamGrant, StreamTokens, unix_now};
use switchboard_proto::{
    Clear, Hangup, Heartbeat, InboundFrame, Mark, OutboundAudio, OutboundFrame, Transfer,
    inbound_frame, outbound_frame,
};
use switchboard_twilio::media::{DtmfDigit, MarkName, ServerMessage, StopInfo, TwilioMessage};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::http::StatusCode;

const CALL: &str = "CA11111111111111111111111111111111";
const STREAM: &str = "MZ11111111111111111111111111111111";

fn out(seq: u64, frame: outbound_frame::Frame) -> OutboundFrame {
    OutboundFrame {
        epoch: 0,
        seq,
        frame: Some(frame),
    }
}

fn media(seq: u64, chunk: u32, audio: &[u8]) -> TwilioMessage {
    TwilioMessage::media(seq, STREAM, chunk, chunk * 20, audio)
}

fn dtmf(digit: &str) -> TwilioMessage {
    TwilioMessage::Dtmf {
        sequence_number: "9".into(),
        stream_sid: STREAM.into(),
        dtmf: DtmfDigit {
            track: "inbound_track".into(),
            digit: digit.into(),
        },
    }
}

fn mark_echo(name: &str) -> TwilioMessage {
    TwilioMessage::Mark {
        sequence_number: "10".into(),
        stream_sid: STREAM.into(),
        mark: MarkName { name: name.into() },
    }
}

fn stop() -> TwilioMessage {
    TwilioMessage::Stop {
        sequence_number: "11".into(),
        stream_sid: STREAM.into(),
        stop: StopInfo {
            account_sid: ACCOUNT_SID.into(),
            call_sid: CALL.into(),
        },
    }
}

fn stop_reason(frame: &InboundFrame) -> Option<&str> {
    match &frame.frame {
        Some(inbound_frame::Frame::Stop(s)) => Some(&s.reason),
        _ => None,
    }
}

/// Asserts nothing arrives on `sub` for a short while (a sentinel published afterwards on the
/// same subject must be the first message).
async fn assert_nothing_published(
    gw: &TestGateway,
    sub: &mut async_nats::Subscriber,
    subject: String,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.nats.publish(subject, "sentinel".into()).await?;
    let first = tokio::time::timeout(PATIENCE, sub.next())
        .await?
        .expect("subscription open");
    assert_eq!(
        &first.payload[..],
        b"sentinel",
        "the gateway published something"
    );
    Ok(())
}

#[tokio::test]
async fn upgrades_without_a_valid_signature_are_forbidden() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    // None, garbage, and a valid signature for another path.
    for sig in [
        None,
        Some("bm9wZQ==".to_owned()),
        Some(gw.validator.sign_ws("/other")),
    ] {
        match gw.connect_media_with(sig.as_deref()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::FORBIDDEN, "signature {sig:?}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("upgrade with signature {sig:?} was accepted"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_invalid_token_closes_with_1008_and_publishes_nothing() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;
    let tokens = StreamTokens::new(AUTH_TOKEN.as_bytes())?;
    let other_call = tokens.issue("CA_other", StreamGrant::FIRST, unix_now() + 60);
    let expired = tokens.issue(CALL, StreamGrant::FIRST, unix_now() - 1);
    let foreign_key =
        StreamTokens::new(b"another account")?.issue(CALL, StreamGrant::FIRST, unix_now() + 60);
    for params in [
        vec![("token", other_call.as_str())],
        vec![("token", expired.as_str())],
        vec![("token", foreign_key.as_str())],
        vec![("token", "garbage")],
        vec![("agent", "x")],
    ] {
        let mut ws = gw.connect_media().await?;
        send_json(&mut ws, &TwilioMessage::connected()).await?;
        send_json(&mut ws, &start_message(CALL, STREAM, &params)).await?;
        // Whatever follows must not be forwarded either.
        let _ = send_json(&mut ws, &media(2, 1, &[0xff; 160])).await;
        let (code, reason) = expect_close(&mut ws).await?;
        assert_eq!(
            (code, reason.as_str()),
            (1008, "invalid stream token"),
            "{params:?}"
        );
    }
    assert_nothing_published(&gw, &mut inbound, gw.subjects.call_in(CALL)).await
}

#[tokio::test]
async fn a_socket_without_start_is_closed_with_1008() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--start-timeout-seconds", "1"]).await?;
    let mut ws = gw.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    let started = tokio::time::Instant::now();
    let (code, reason) = expect_close(&mut ws).await?;
    assert_eq!((code, reason.as_str()), (1008, "no start"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    Ok(())
}

#[tokio::test]
async fn inbound_frames_reach_the_worker_in_order() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let token = gw.token_for(CALL).await?;
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;

    let mut ws = gw.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(
        &mut ws,
        &start_message(CALL, STREAM, &[("token", &token), ("agent", "front-desk")]),
    )
    .await?;
    let audio1: Vec<u8> = (0..160).map(|i| i as u8).collect();
    let audio2 = vec![0x7f; 160];
    send_json(&mut ws, &media(2, 1, &audio1)).await?;
    send_json(&mut ws, &media(3, 2, &audio2)).await?;
    send_json(&mut ws, &dtmf("5")).await?;
    send_json(&mut ws, &mark_echo("m-1")).await?;
    send_json(&mut ws, &stop()).await?;

    let start = next_inbound(&mut inbound).await?;
    assert_eq!(start.seq, 1);
    let Some(inbound_frame::Frame::Start(s)) = start.frame else {
        panic!("first frame is not start: {start:?}");
    };
    assert_eq!(s.call_sid, CALL);
    assert_eq!(s.stream_sid, STREAM);
    assert_eq!(s.account_sid, ACCOUNT_SID);
    assert_eq!(s.gateway_id, "gw-test");
    assert!(s.started_at_ms > 0);
    assert_eq!(s.custom_parameters.len(), 1, "token must be removed");
    assert_eq!(s.custom_parameters["agent"], "front-desk");

    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 2);
    let Some(inbound_frame::Frame::Audio(a)) = f.frame else {
        panic!("{f:?}")
    };
    assert_eq!(&a.payload[..], &audio1[..]);
    assert_eq!((a.chunk, a.timestamp_ms), (1, 20));

    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 3);
    let Some(inbound_frame::Frame::Audio(a)) = f.frame else {
        panic!("{f:?}")
    };
    assert_eq!(&a.payload[..], &audio2[..]);
    assert_eq!((a.chunk, a.timestamp_ms), (2, 40));

    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 4);
    assert!(matches!(f.frame, Some(inbound_frame::Frame::Dtmf(ref d)) if d.digit == "5"));

    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 5);
    assert!(matches!(f.frame, Some(inbound_frame::Frame::Mark(ref m)) if m.name == "m-1"));

    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 6);
    assert_eq!(stop_reason(&f), Some("stop"));

    // The stream's recording, stored, is reported to the owner after the stop.
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(f.frame, Some(inbound_frame::Frame::Recorded(ref r))
            if r.stream_sid == STREAM && r.attach == 1 && r.error.is_empty()
                && r.recording.as_ref().is_some_and(|c| c.location == format!("{CALL}/1.wav"))),
        "{f:?}"
    );
    // Twilio closes after stop; nothing more is published.
    ws.close(None).await?;
    assert_nothing_published(&gw, &mut inbound, gw.subjects.call_in(CALL)).await
}

#[tokio::test]
async fn outbound_frames_become_twilio_messages() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, _inbound, _start) = gw.started_stream(CALL, STREAM).await?;

    let audio: Vec<u8> = (0..8160u32).map(|i| (i % 251) as u8).collect();
    let frames = [
        outbound_frame::Frame::Heartbeat(Heartbeat {
            worker_id: "worker-1".into(),
        }),
        outbound_frame::Frame::Audio(OutboundAudio {
            payload: Vec::new().into(),
        }),
        outbound_frame::Frame::Audio(OutboundAudio {
            payload: audio.clone().into(),
        }),
        outbound_frame::Frame::Mark(Mark { name: "m-1".into() }),
        outbound_frame::Frame::Clear(Clear {}),
    ];
    for (i, frame) in frames.into_iter().enumerate() {
        gw.send_out(CALL, out(i as u64 + 1, frame)).await?;
    }

    let mut got = Vec::new();
    for _ in 0..4 {
        let msg = next_server_message(&mut ws).await?;
        assert_eq!(msg.stream_sid(), STREAM);
        got.push(msg);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let ServerMessage::Media { media: m1, .. } = &got[0] else {
        panic!("{:?}", got[0])
    };
    let ServerMessage::Media { media: m2, .. } = &got[1] else {
        panic!("{:?}", got[1])
    };
    assert_eq!(b64.decode(&m1.payload)?, &audio[..8000]);
    assert_eq!(b64.decode(&m2.payload)?, &audio[8000..]);
    assert_eq!(got[2], ServerMessage::mark(STREAM, "m-1"));
    assert_eq!(got[3], ServerMessage::clear(STREAM));
    Ok(())
}

#[tokio::test]
async fn bad_frames_are_skipped_and_binary_closes_with_1003() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, start) = gw.started_stream(CALL, STREAM).await?;
    assert_eq!(start.seq, 1);

    send_text(&mut ws, "this is not json").await?;
    send_text(
        &mut ws,
        r#"{"event":"media","streamSid":"MZ11111111111111111111111111111111"}"#,
    )
    .await?;
    send_text(
        &mut ws,
        &format!(
            r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"***","chunk":"1","timestamp":"0"}}}}"#
        ),
    )
    .await?;
    send_json(
        &mut ws,
        &TwilioMessage::media(4, "MZ_someone_else", 1, 0, &[1; 160]),
    )
    .await?;
    send_json(&mut ws, &media(5, 2, &[0x42; 160])).await?;

    // The call survived: the next good frame is forwarded right after start.
    let f = next_inbound(&mut inbound).await?;
    assert_eq!(f.seq, 2);
    let Some(inbound_frame::Frame::Audio(a)) = f.frame else {
        panic!("{f:?}")
    };
    assert_eq!(&a.payload[..], &[0x42; 160]);

    ws.send(WsMessage::Binary(vec![1, 2, 3].into())).await?;
    let (code, _) = expect_close(&mut ws).await?;
    assert_eq!(code, 1003);
    let f = next_inbound(&mut inbound).await?;
    assert_eq!((f.seq, stop_reason(&f)), (3, Some("error")));
    Ok(())
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    send_text(&mut ws, &"x".repeat(100 * 1024)).await?;
    let (code, _) = expect_close(&mut ws).await?;
    assert_eq!(code, 1009);
    let f = next_inbound(&mut inbound).await?;
    assert_eq!(stop_reason(&f), Some("error"));
    Ok(())
}

#[tokio::test]
async fn a_socket_closed_without_stop_ends_with_closed() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    send_json(&mut ws, &media(2, 1, &[0xff; 160])).await?;
    assert!(matches!(
        next_inbound(&mut inbound).await?.frame,
        Some(inbound_frame::Frame::Audio(_))
    ));
    ws.close(None).await?;
    let f = next_inbound(&mut inbound).await?;
    assert_eq!((f.seq, stop_reason(&f)), (3, Some("closed")));

    // An abrupt drop (no close handshake) ends the same way.
    let call2 = "CA22222222222222222222222222222222";
    let (ws, mut inbound, _) = gw.started_stream(call2, STREAM).await?;
    drop(ws);
    let f = next_inbound(&mut inbound).await?;
    assert_eq!(stop_reason(&f), Some("closed"));
    Ok(())
}

#[tokio::test]
async fn hangup_closes_normally_once_the_audio_has_played() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    gw.send_out(
        CALL,
        out(
            1,
            outbound_frame::Frame::Audio(OutboundAudio {
                payload: vec![0x55; 800].into(),
            }),
        ),
    )
    .await?;
    gw.send_out(
        CALL,
        out(
            2,
            outbound_frame::Frame::Hangup(Hangup {
                reason: "end_call".into(),
            }),
        ),
    )
    .await?;
    assert!(matches!(
        next_server_message(&mut ws).await?,
        ServerMessage::Media { .. }
    ));
    // The gateway marks the end of the audio and waits for Twilio to have played it.
    let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? else {
        panic!("expected the hang-up mark")
    };
    // Audio sent after the hang-up is not played.
    gw.send_out(
        CALL,
        out(
            3,
            outbound_frame::Frame::Audio(OutboundAudio {
                payload: vec![0x55; 800].into(),
            }),
        ),
    )
    .await?;
    send_json(&mut ws, &mark_echo(&mark.name)).await?;
    match next_ws(&mut ws).await? {
        WsMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the close frame, got {other:?}"),
    }
    // The hang-up mark is the gateway's own: the worker gets the stop, not the echo.
    let f = next_inbound(&mut inbound).await?;
    assert_eq!((f.seq, stop_reason(&f)), (2, Some("hangup")));
    Ok(())
}

#[tokio::test]
async fn transfer_closes_the_stream_for_now() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    gw.send_out(
        CALL,
        out(
            1,
            outbound_frame::Frame::Transfer(Transfer {
                to: "+15550002222".into(),
                announcement: String::new(),
                ..Default::default()
            }),
        ),
    )
    .await?;
    let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? else {
        panic!("expected the hang-up mark")
    };
    send_json(&mut ws, &mark_echo(&mark.name)).await?;
    let (code, _) = expect_close(&mut ws).await?;
    assert_eq!(code, 1000);
    let f = next_inbound(&mut inbound).await?;
    assert_eq!(stop_reason(&f), Some("transfer"));
    Ok(())
}

#[tokio::test]
async fn max_streams_is_enforced() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--max-streams", "1"]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut first, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    match gw
        .connect_media_with(Some(&gw.validator.sign_ws("/media")))
        .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("second stream accepted over MAX_STREAMS=1"),
    }
    // Once the first ends, there is room again.
    first.close(None).await?;
    let f = next_inbound(&mut inbound).await?;
    assert_eq!(stop_reason(&f), Some("closed"));
    switchboard_testkit::eventually(PATIENCE, "a free stream slot", || async {
        gw.connect_media().await.ok().map(|_| ())
    })
    .await?;
    Ok(())
}
