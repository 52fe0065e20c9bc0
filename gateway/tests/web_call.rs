//! `GET /web-call`: a browser's test call, spoken in Twilio's Media Streams messages, on a real
//! nats-server with a stand-in worker. No browser: a tokio-tungstenite client sends what the
//! console page sends.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use futures::StreamExt as _;
use switchboard_proto::{
    Clear, Direction, Hangup, InboundFrame, Mark, OfferReply, OutboundAudio, OutboundFrame,
    Transfer, inbound_frame, outbound_frame,
};
use switchboard_service::web_call::{TicketKey, is_web_call, new_call_id};
use switchboard_twilio::media::{MarkName, ServerMessage, TwilioMessage};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;

const ADMIN: &str = "admin-s3cret";
const SECRET: &str = "web-call-s3cret";
const CONSOLE: &str = "http://console.example.com:8081";
/// The streamSid the page picks for itself.
const STREAM: &str = "MZweb0000000000000000000000000001";

fn web_flags() -> Vec<&'static str> {
    vec![
        "--admin-token",
        ADMIN,
        "--web-call-secret",
        SECRET,
        "--console-url",
        CONSOLE,
    ]
}

/// How the page opens the socket.
struct Open<'a> {
    agent: &'a str,
    origin: Option<&'a str>,
    bearer: Option<&'a str>,
    ticket: Option<String>,
}

impl Open<'_> {
    fn admin(agent: &str) -> Open<'_> {
        Open {
            agent,
            origin: Some(PUBLIC_URL),
            bearer: Some(ADMIN),
            ticket: None,
        }
    }
}

async fn open(gw: &TestGateway, how: &Open<'_>) -> Result<Ws, WsError> {
    let mut url = format!("ws://{}/web-call?agent={}", gw.addr, how.agent);
    if let Some(ticket) = &how.ticket {
        url.push_str(&format!("&ticket={ticket}"));
    }
    let mut req = url.into_client_request()?;
    if let Some(origin) = how.origin {
        req.headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
    }
    if let Some(bearer) = how.bearer {
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {bearer}").parse().expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// The HTTP status an upgrade was refused with.
async fn refused(gw: &TestGateway, how: &Open<'_>) -> u16 {
    match open(gw, how).await {
        Ok(_) => panic!("upgrade was accepted"),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn web_worker_reply() -> OfferReply {
    OfferReply {
        epoch: 0,
        accepted: true,
        worker_id: "worker-1".into(),
        agent_id: "front-desk".into(),
        reason: String::new(),
    }
}

fn out(seq: u64, frame: outbound_frame::Frame) -> OutboundFrame {
    OutboundFrame {
        epoch: 0,
        seq,
        frame: Some(frame),
    }
}

fn mark_echo(name: &str) -> TwilioMessage {
    TwilioMessage::Mark {
        sequence_number: "3".into(),
        stream_sid: STREAM.into(),
        mark: MarkName { name: name.into() },
    }
}

/// Opens a web call as the page does (`connected`, then `start` without a call id or token) and
/// returns the socket, the call id the worker was offered and the call's `.in` subscription
/// with its `start` frame read.
async fn started_web_call(
    gw: &TestGateway,
    worker: &mut FakeWorker,
    how: &Open<'_>,
) -> anyhow::Result<(Ws, String, async_nats::Subscriber, InboundFrame)> {
    let mut all_in = gw.nats.subscribe("voice.call.*.in").await?;
    barrier(&gw.nats).await?;
    let mut ws = open(gw, how).await?;
    let offer = tokio::time::timeout(PATIENCE, worker.offers.recv())
        .await?
        .expect("an offer");
    let call = offer.call_sid.clone();
    assert!(is_web_call(&call), "{call}");
    assert_eq!(offer.direction(), Direction::Web);
    assert_eq!(offer.agent_id, how.agent);
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    // What the page puts in callSid and parameters is not trusted.
    send_json(
        &mut ws,
        &start_message("CAforeign", STREAM, &[("token", "forged")]),
    )
    .await?;
    let msg = tokio::time::timeout(PATIENCE, all_in.next())
        .await?
        .expect("start on .in");
    assert_eq!(msg.subject.as_str(), format!("voice.call.{call}.in"));
    let start = <InboundFrame as switchboard_proto::Message>::decode(msg.payload)?;
    Ok((ws, call, all_in, start))
}

#[tokio::test]
async fn a_web_call_speaks_media_streams_with_barge_in_and_hangs_up_without_twilio()
-> anyhow::Result<()> {
    // Twilio's REST API is a listener that must never be called.
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rest_url = format!("http://{}", rest.local_addr()?);
    let mut flags = web_flags();
    flags.extend_from_slice(&["--twilio-api-base", &rest_url]);
    let gw = TestGateway::start(&flags).await?;
    let mut worker = fake_worker(&gw.nats, web_worker_reply()).await?;
    let (mut ws, call, mut inbound, start) =
        started_web_call(&gw, &mut worker, &Open::admin("front-desk")).await?;
    let Some(inbound_frame::Frame::Start(s)) = start.frame else {
        panic!("expected start, got {start:?}")
    };
    assert_eq!(s.stream_sid, STREAM);

    // The greeting plays.
    gw.send_out(
        &call,
        out(
            1,
            outbound_frame::Frame::Audio(OutboundAudio {
                payload: vec![0x55; 160].into(),
            }),
        ),
    )
    .await?;
    gw.send_out(
        &call,
        out(
            2,
            outbound_frame::Frame::Mark(Mark {
                name: "greeting".into(),
            }),
        ),
    )
    .await?;
    let ServerMessage::Media {
        stream_sid, media, ..
    } = next_server_message(&mut ws).await?
    else {
        panic!("expected the greeting's audio")
    };
    assert_eq!(stream_sid, STREAM);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(&media.payload)?,
        vec![0x55; 160]
    );
    let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? else {
        panic!("expected the greeting's mark")
    };
    assert_eq!(mark.name, "greeting");

    // The caller speaks: media reaches the worker as audio.
    send_json(
        &mut ws,
        &TwilioMessage::media(2, STREAM, 1, 20, &[0x11; 160]),
    )
    .await?;
    let f = next_inbound(&mut inbound).await?;
    let Some(inbound_frame::Frame::Audio(audio)) = f.frame else {
        panic!("expected audio, got {f:?}")
    };
    assert_eq!(audio.payload.as_ref(), &[0x11; 160]);

    // Barge-in: the worker clears what is queued, the page is told to.
    gw.send_out(&call, out(3, outbound_frame::Frame::Clear(Clear {})))
        .await?;
    assert!(matches!(
        next_server_message(&mut ws).await?,
        ServerMessage::Clear { .. }
    ));
    // The page echoes the marks of what it played.
    send_json(&mut ws, &mark_echo("greeting")).await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(&f.frame, Some(inbound_frame::Frame::Mark(m)) if m.name == "greeting"),
        "{f:?}"
    );

    // A transfer has no phone line to go to: refused, the call goes on.
    gw.send_out(
        &call,
        out(
            4,
            outbound_frame::Frame::Transfer(Transfer {
                to: "+15550002222".into(),
                announcement: String::new(),
                ..Default::default()
            }),
        ),
    )
    .await?;
    // The hang-up closes the socket once the audio has played, and calls no one.
    gw.send_out(
        &call,
        out(
            5,
            outbound_frame::Frame::Hangup(Hangup {
                reason: "end_call".into(),
            }),
        ),
    )
    .await?;
    let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? else {
        panic!("expected the hang-up mark (the transfer must not have ended the call)")
    };
    send_json(&mut ws, &mark_echo(&mark.name)).await?;
    let (code, _) = expect_close(&mut ws).await?;
    assert_eq!(code, 1000);
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(&f.frame, Some(inbound_frame::Frame::Stop(s)) if s.reason == "hangup"),
        "{f:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rest.accept())
            .await
            .is_err(),
        "a web call reached Twilio's REST API"
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_wrong_and_cross_origin_upgrades_are_refused() -> anyhow::Result<()> {
    let gw = TestGateway::start(&web_flags()).await?;
    let mut worker = fake_worker(&gw.nats, web_worker_reply()).await?;
    let anonymous = Open {
        bearer: None,
        ..Open::admin("front-desk")
    };
    assert_eq!(refused(&gw, &anonymous).await, 401);
    let wrong = Open {
        bearer: Some("guess"),
        ..Open::admin("front-desk")
    };
    assert_eq!(refused(&gw, &wrong).await, 403);
    // Valid credentials from a page of another site.
    let foreign = Open {
        origin: Some("https://evil.example.com"),
        ..Open::admin("front-desk")
    };
    assert_eq!(refused(&gw, &foreign).await, 403);
    let no_agent = Open::admin("");
    assert_eq!(refused(&gw, &no_agent).await, 400);
    // Nothing was offered for any of them.
    assert!(worker.offers.try_recv().is_err());
    // The console's origin is accepted.
    let console = Open {
        origin: Some(CONSOLE),
        ..Open::admin("front-desk")
    };
    let _ws = open(&gw, &console).await?;
    assert!(worker.offers.recv().await.is_some());
    Ok(())
}

#[tokio::test]
async fn a_console_ticket_opens_one_call_for_its_agent() -> anyhow::Result<()> {
    let gw = TestGateway::start(&web_flags()).await?;
    let mut worker = fake_worker(&gw.nats, web_worker_reply()).await?;
    let key = TicketKey::new(SECRET).unwrap();
    let now = gateway::stream_token::unix_now();
    let call = new_call_id();
    let ticket = key.issue(&call, "front-desk", "console:1", now + 60);
    let with = |ticket: String, agent: &'static str| Open {
        agent,
        origin: Some(CONSOLE),
        bearer: None,
        ticket: Some(ticket),
    };
    // For another agent, expired, or signed with another secret: refused.
    assert_eq!(refused(&gw, &with(ticket.clone(), "sales")).await, 403);
    let expired = key.issue(&new_call_id(), "front-desk", "console:1", now - 1);
    assert_eq!(refused(&gw, &with(expired, "front-desk")).await, 403);
    let forged =
        TicketKey::new("other")
            .unwrap()
            .issue(&new_call_id(), "front-desk", "console:1", now + 60);
    assert_eq!(refused(&gw, &with(forged, "front-desk")).await, 403);
    assert!(worker.offers.try_recv().is_err());

    let how = with(ticket.clone(), "front-desk");
    let (_ws, offered, _inbound, _start) = started_web_call(&gw, &mut worker, &how).await?;
    assert_eq!(offered, call, "the ticket names the call");
    // The same ticket again is a replay.
    assert_eq!(refused(&gw, &with(ticket, "front-desk")).await, 409);
    Ok(())
}

#[tokio::test]
async fn web_calls_are_limited_per_user_in_all_and_by_max_streams() -> anyhow::Result<()> {
    let mut flags = web_flags();
    flags.extend_from_slice(&["--web-calls-per-user", "1", "--web-calls-max", "2"]);
    let gw = TestGateway::start(&flags).await?;
    let _worker = fake_worker(&gw.nats, web_worker_reply()).await?;
    let key = TicketKey::new(SECRET).unwrap();
    let now = gateway::stream_token::unix_now();
    let ticket_for = |user: &str| Open {
        agent: "front-desk",
        origin: Some(CONSOLE),
        bearer: None,
        ticket: Some(key.issue(&new_call_id(), "front-desk", user, now + 60)),
    };
    let first = open(&gw, &Open::admin("front-desk")).await?;
    // The admin token's second call is over its per-user limit; another user still has room.
    assert_eq!(refused(&gw, &Open::admin("front-desk")).await, 429);
    let _second = open(&gw, &ticket_for("console:a")).await?;
    // Two open in all.
    assert_eq!(refused(&gw, &ticket_for("console:b")).await, 429);
    // A closed call frees its place.
    drop(first);
    switchboard_testkit::eventually(PATIENCE, "slot freed", || async {
        open(&gw, &Open::admin("front-desk")).await.ok()
    })
    .await?;

    // Web calls count against MAX_STREAMS like Twilio's streams.
    let mut flags = web_flags();
    flags.extend_from_slice(&["--max-streams", "1"]);
    let gw = TestGateway::start(&flags).await?;
    let _worker = fake_worker(&gw.nats, web_worker_reply()).await?;
    let _ws = gw.connect_media().await?;
    assert_eq!(refused(&gw, &Open::admin("front-desk")).await, 503);
    Ok(())
}

#[tokio::test]
async fn a_web_call_nobody_takes_is_refused_with_503() -> anyhow::Result<()> {
    let gw = TestGateway::start(&web_flags()).await?;
    let _worker = fake_worker(
        &gw.nats,
        OfferReply {
            accepted: false,
            reason: "no_agent".into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        refused(&gw, &Open::admin("nobody")).await,
        StatusCode::SERVICE_UNAVAILABLE.as_u16()
    );
    Ok(())
}
