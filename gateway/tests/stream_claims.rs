//! A stream token opens one stream: the first socket that presents it wins, a second is closed,
//! an older token never displaces a newer stream, and a re-attach token the gateway issues is a
//! new one-time token for the same call. Transfers go only to the agent's numbers.

mod common;

use common::*;
use gateway::claims::{ClaimError, Claims};
use gateway::close;
use gateway::stream_token::{StreamTokens, unix_now};
use switchboard_proto::{InboundFrame, OutboundFrame, Transfer, inbound_frame, outbound_frame};
use switchboard_twilio::media::{ServerMessage, TwilioMessage};

const CALL: &str = "CA0123456789abcdef0123456789abcdef";

/// Opens a socket and presents `token` for `CALL` on stream `stream_sid`.
async fn present(gw: &TestGateway, token: &str, stream_sid: &str) -> anyhow::Result<Ws> {
    let mut ws = gw.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(
        &mut ws,
        &start_message(CALL, stream_sid, &[("token", token)]),
    )
    .await?;
    Ok(ws)
}

fn start_of(frame: &InboundFrame) -> Option<&str> {
    match &frame.frame {
        Some(inbound_frame::Frame::Start(s)) => Some(&s.stream_sid),
        _ => None,
    }
}

#[tokio::test]
async fn a_stream_token_opens_one_stream_only() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let token = gw.token_for(CALL).await?;
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;

    let _first = present(&gw, &token, "MZfirst").await?;
    assert_eq!(
        start_of(&next_inbound(&mut inbound).await?),
        Some("MZfirst")
    );

    // The same token on a second socket, on this replica or another one: closed, and nothing
    // of it reaches the worker.
    let other = TestGateway::start_on(&gw, &[]).await?;
    for replica in [&gw, &other] {
        let mut second = present(replica, &token, "MZsecond").await?;
        let (code, reason) = expect_close(&mut second).await?;
        assert_eq!((code, reason.as_str()), (1008, close::TOKEN_REUSED.reason));
    }
    gw.nats
        .publish(gw.subjects.call_in(CALL), "sentinel".into())
        .await?;
    let next = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut inbound))
        .await?
        .expect("subscription open");
    assert_eq!(
        &next.payload[..],
        b"sentinel",
        "the second socket was forwarded"
    );
    Ok(())
}

#[tokio::test]
async fn a_reattach_token_is_a_new_one_time_token_for_the_call() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let first_token = gw.token_for(CALL).await?;
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;
    let _first = present(&gw, &first_token, "MZfirst").await?;
    assert_eq!(
        start_of(&next_inbound(&mut inbound).await?),
        Some("MZfirst")
    );

    let claims = Claims::open(&async_nats::jetstream::new(gw.nats.clone())).await?;
    let tokens = StreamTokens::new(AUTH_TOKEN.as_bytes())?;
    let expires = unix_now() + 60;
    let (first_attach, reattach) = claims.reattach_token(&tokens, CALL, 0, expires).await?;
    let (later_attach, later) = claims.reattach_token(&tokens, CALL, 0, expires).await?;
    assert_ne!(reattach, later);
    assert_eq!((first_attach, later_attach), (1, 2));
    assert!(
        reattach.starts_with("1.0.") && later.starts_with("2.0."),
        "{reattach} {later}"
    );

    // The re-attach opens a new stream for the call (on any replica).
    let other = TestGateway::start_on(&gw, &[]).await?;
    let _again = present(&other, &reattach, "MZagain").await?;
    assert_eq!(
        start_of(&next_inbound(&mut inbound).await?),
        Some("MZagain")
    );

    // Once: the same re-attach token again is a reused token.
    let mut reused = present(&gw, &reattach, "MZreused").await?;
    assert_eq!(
        expect_close(&mut reused).await?,
        (1008, close::TOKEN_REUSED.reason.to_owned())
    );
    // The webhook's token, older than the call's stream, cannot take the call back.
    let mut stale = present(&gw, &first_token, "MZstale").await?;
    assert_eq!(
        expect_close(&mut stale).await?,
        (close::CALL_LIVE_CODE, close::CALL_LIVE.reason.to_owned())
    );
    // The next re-attach still works.
    let _third = present(&gw, &later, "MZthird").await?;
    assert_eq!(
        start_of(&next_inbound(&mut inbound).await?),
        Some("MZthird")
    );
    // And after it, the first re-attach is stale.
    let mut stale = present(&gw, &reattach, "MZstale2").await?;
    assert_eq!(expect_close(&mut stale).await?.0, close::CALL_LIVE_CODE);

    // No re-attach for a call the gateway never offered.
    let unknown = claims
        .reattach_token(&tokens, "CA_never_offered", 0, expires)
        .await;
    assert!(
        matches!(unknown, Err(ClaimError::UnknownCall(_))),
        "{unknown:?}"
    );
    Ok(())
}

/// Sends a transfer to `to` and reports whether the gateway began it (its hang-up mark comes
/// next) or ignored it (the next message is a mark the test sends after the transfer).
async fn transfer_begins(
    gw: &TestGateway,
    ws: &mut Ws,
    seq: u64,
    to: &str,
) -> anyhow::Result<bool> {
    let frame = |frame| OutboundFrame {
        epoch: 0,
        seq,
        frame: Some(frame),
    };
    gw.send_out(
        CALL,
        frame(outbound_frame::Frame::Transfer(Transfer {
            to: to.into(),
            announcement: String::new(),
            ..Default::default()
        })),
    )
    .await?;
    gw.send_out(
        CALL,
        frame(outbound_frame::Frame::Mark(switchboard_proto::Mark {
            name: "after-transfer".into(),
        })),
    )
    .await?;
    let ServerMessage::Mark { mark, .. } = next_server_message(ws).await? else {
        anyhow::bail!("expected a mark");
    };
    Ok(mark.name != "after-transfer")
}

#[tokio::test]
async fn transfers_go_only_to_the_agents_numbers() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    // The test call dials the front desk's number.
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, "MZ1").await?;
    for (seq, to) in [
        (1, "+15550009999"),
        (2, "+15550001111"),
        (3, "sip:x@example.com"),
    ] {
        assert!(!transfer_begins(&gw, &mut ws, seq, to).await?, "{to}");
    }
    // The call goes on: caller audio is still forwarded.
    send_json(
        &mut ws,
        &TwilioMessage::media(5, "MZ1", 1, 20, &[0xff; 160]),
    )
    .await?;
    let frame = next_inbound(&mut inbound).await?;
    assert!(
        matches!(frame.frame, Some(inbound_frame::Frame::Audio(_))),
        "{frame:?}"
    );
    // Billing's number, reachable through the front desk's handoff, is allowed.
    assert!(transfer_begins(&gw, &mut ws, 4, "+15550003333").await?);
    Ok(())
}

#[tokio::test]
async fn without_an_agents_file_every_transfer_is_refused() -> anyhow::Result<()> {
    let gw = TestGateway::start_without_agents(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, _inbound, _) = gw.started_stream(CALL, "MZ1").await?;
    assert!(!transfer_begins(&gw, &mut ws, 1, "+15550002222").await?);
    Ok(())
}

#[tokio::test]
async fn the_agents_own_transfer_number_is_allowed() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, _inbound, _) = gw.started_stream(CALL, "MZ1").await?;
    assert!(transfer_begins(&gw, &mut ws, 1, "+15550002222").await?);
    Ok(())
}
