//! A call outlives its owner, as the gateway sees it: against a real nats-server, with the test
//! playing the workers over NATS. Heartbeats and probe answers keep the owner; a silent owner
//! that nobody answers for is offered to another worker as a takeover; the new owner's commit
//! clears Twilio's playback, resumes the stream and replays the caller's recent audio; frames of
//! the replaced owner are dropped; a call nobody takes gets the agent's apology and a closed,
//! fenced record.

mod common;

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use callsim::CallConfig;
use callsim::script::CallerScript;
use callsim::twilio_rest::FakeTwilio;
use common::*;
use futures::StreamExt as _;
use switchboard_proto::event::{EndReason, OwnerReason};
use switchboard_proto::{
    CallEvent, CallOffer, HandOver, Heartbeat, InboundFrame, Message as _, OfferReply,
    OutboundAudio, OutboundFrame, Owner, OwnerAck, OwnerProbe, call_event, inbound_frame,
    outbound_frame,
};
use switchboard_twilio::media::{ServerMessage, StopInfo, TwilioMessage};
use switchboard_twilio::twiml::{Instructions, Verb};
use tokio::time::Instant;

const CALL: &str = "CA22222222222222222222222222222222";
const STREAM: &str = "MZ22222222222222222222222222222222";

fn frame(epoch: u32, seq: u64, frame: outbound_frame::Frame) -> OutboundFrame {
    OutboundFrame {
        seq,
        epoch,
        frame: Some(frame),
    }
}

fn heartbeat(epoch: u32, worker: &str) -> OutboundFrame {
    frame(
        epoch,
        1,
        outbound_frame::Frame::Heartbeat(Heartbeat {
            worker_id: worker.into(),
        }),
    )
}

fn audio(epoch: u32, byte: u8) -> OutboundFrame {
    frame(
        epoch,
        2,
        outbound_frame::Frame::Audio(OutboundAudio {
            payload: vec![byte; 160].into(),
        }),
    )
}

fn owner(epoch: u32, worker: &str, apology: &str, transfer_to: &str) -> OutboundFrame {
    frame(
        epoch,
        3,
        outbound_frame::Frame::Owner(Owner {
            worker_id: worker.into(),
            agent_id: "front-desk".into(),
            apology: apology.into(),
            transfer_to: transfer_to.into(),
        }),
    )
}

fn accept(worker: &str, epoch: u32) -> OfferReply {
    OfferReply {
        accepted: true,
        worker_id: worker.into(),
        agent_id: "front-desk".into(),
        reason: String::new(),
        epoch,
    }
}

fn decline(reason: &str) -> OfferReply {
    OfferReply {
        accepted: false,
        worker_id: "worker-2".into(),
        reason: reason.into(),
        ..Default::default()
    }
}

/// Caller audio chunk `chunk` (20 ms each), every byte `byte`.
fn caller_audio(chunk: u32, byte: u8) -> TwilioMessage {
    TwilioMessage::media(
        u64::from(chunk) + 1,
        STREAM,
        chunk,
        chunk * 20,
        &[byte; 160],
    )
}

async fn next_offer(worker: &mut FakeWorker) -> anyhow::Result<CallOffer> {
    tokio::time::timeout(PATIENCE, worker.offers.recv())
        .await
        .context("no offer in time")?
        .context("worker gone")
}

/// The next inbound frame that is not audio.
async fn next_control(inbound: &mut async_nats::Subscriber) -> anyhow::Result<InboundFrame> {
    loop {
        let f = next_inbound(inbound).await?;
        if !matches!(f.frame, Some(inbound_frame::Frame::Audio(_))) {
            return Ok(f);
        }
    }
}

/// The next audio payload (or clear) the gateway writes to Twilio, as a tag: the payload's first
/// byte, or None for a `clear`.
async fn next_played(ws: &mut Ws) -> anyhow::Result<Option<u8>> {
    loop {
        match next_server_message(ws).await? {
            ServerMessage::Media { media, .. } => {
                let bytes = B64.decode(media.payload.as_bytes())?;
                return Ok(bytes.first().copied());
            }
            ServerMessage::Clear { .. } => return Ok(None),
            ServerMessage::Mark { .. } => {}
        }
    }
}

/// Sends heartbeats of `epoch` every 200 ms until dropped (a live owner).
fn heartbeats(gw: &TestGateway, epoch: u32, worker: &'static str) -> tokio::task::JoinHandle<()> {
    let nats = gw.nats.clone();
    let subject = gw.subjects.call_out(CALL);
    tokio::spawn(async move {
        loop {
            let _ = nats
                .publish(
                    subject.clone(),
                    heartbeat(epoch, worker).encode_to_vec().into(),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test]
async fn a_lost_owner_is_replaced_and_the_new_owner_hears_the_gap() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--worker-silence-ms", "1500"]).await?;
    let mut workers =
        fake_worker_replying(&gw.nats, vec![accept("worker-1", 0), accept("worker-2", 1)]).await?;
    let (mut ws, mut inbound, start) = gw.started_stream(CALL, STREAM).await?;
    let Some(inbound_frame::Frame::Start(first)) = start.frame else {
        anyhow::bail!("expected start, got {start:?}");
    };
    assert_eq!((first.epoch, first.resumed), (0, false));
    next_offer(&mut workers).await?;

    // Worker 1 owns the call and speaks.
    gw.send_out(CALL, owner(0, "worker-1", "", "")).await?;
    gw.send_out(CALL, audio(0, 0x11)).await?;
    assert_eq!(next_played(&mut ws).await?, Some(0x11));
    let silent_from = Instant::now();

    // Then it dies (kill -9: no subscription answers the probe) while the caller speaks.
    for chunk in 1..=10 {
        send_json(&mut ws, &caller_audio(chunk, 0x40 + chunk as u8)).await?;
    }
    let offer = next_offer(&mut workers).await?;
    let detected = silent_from.elapsed();
    assert_eq!(offer.call_sid, CALL);
    assert_eq!(offer.epoch, 1);
    assert_eq!(offer.takeover, OwnerReason::WorkerLost.as_str());
    assert_eq!(offer.previous_worker_id, "worker-1");
    assert_eq!(offer.agent_id, "front-desk");
    assert!(offer.owner_silent_since_ms > 0);
    assert!(
        detected >= Duration::from_millis(250) && detected < Duration::from_millis(1400),
        "no responders is lost at the first probe, after a fifth of the silence: {detected:?}"
    );

    // Worker 2's accept commits: Twilio's playback is cleared ...
    assert_eq!(next_played(&mut ws).await?, None, "clear first");
    // ... and worker 2 gets the resumed start, then the caller's recent audio, replayed.
    let resumed = next_control(&mut inbound).await?;
    let Some(inbound_frame::Frame::Start(resumed)) = resumed.frame else {
        anyhow::bail!("expected the resumed start, got {resumed:?}");
    };
    assert_eq!(resumed.epoch, 1);
    assert!(resumed.resumed);
    assert_eq!(resumed.stream_sid, STREAM);
    assert_eq!(resumed.started_at_ms, first.started_at_ms);
    let mut replayed = Vec::new();
    while replayed.len() < 10 {
        let f = next_inbound(&mut inbound).await?;
        if let Some(inbound_frame::Frame::Audio(a)) = f.frame
            && a.replayed
        {
            replayed.push((a.chunk, a.timestamp_ms, a.payload[0]));
        }
    }
    let expected: Vec<_> = (1..=10u32).map(|c| (c, c * 20, 0x40 + c as u8)).collect();
    assert_eq!(replayed, expected, "in order, with the original timestamps");

    // Live audio follows, not marked replayed.
    send_json(&mut ws, &caller_audio(11, 0x7f)).await?;
    loop {
        let f = next_inbound(&mut inbound).await?;
        if let Some(inbound_frame::Frame::Audio(a)) = f.frame
            && !a.replayed
            && a.chunk == 11
        {
            break;
        }
    }

    // The dead owner's late frames are dropped; the new owner's play.
    gw.send_out(CALL, audio(0, 0x22)).await?;
    gw.send_out(CALL, audio(1, 0x33)).await?;
    assert_eq!(next_played(&mut ws).await?, Some(0x33));
    Ok(())
}

#[tokio::test]
async fn heartbeats_and_probe_answers_keep_the_owner() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--worker-silence-ms", "900"]).await?;
    let mut workers = fake_worker_replying(&gw.nats, vec![accept("worker-1", 0)]).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;

    // Heartbeats for well over the silence limit keep it.
    let beats = heartbeats(&gw, 0, "worker-1");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    beats.abort();

    // Then a worker that sends nothing but answers every probe: alive all the same.
    let mut probes = gw.nats.subscribe(gw.subjects.call_owner(CALL)).await?;
    barrier(&gw.nats).await?;
    let nats = gw.nats.clone();
    let answering = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(msg) = probes.next().await {
            if let Ok(probe) = OwnerProbe::decode(msg.payload.clone()) {
                seen.push(probe.epoch);
            }
            if let Some(reply) = msg.reply {
                let ack = OwnerAck {
                    worker_id: "worker-1".into(),
                    epoch: 0,
                };
                let _ = nats.publish(reply, ack.encode_to_vec().into()).await;
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        workers.offers.try_recv().is_err(),
        "an owner that answers its probes is not replaced"
    );
    answering.abort();

    send_json(&mut ws, &caller_audio(1, 0x55)).await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(matches!(f.frame, Some(inbound_frame::Frame::Audio(_))));
    Ok(())
}

#[tokio::test]
async fn an_unanswered_probe_is_lost_only_when_the_silence_reaches_the_limit() -> anyhow::Result<()>
{
    let gw = TestGateway::start(&["--worker-silence-ms", "1500"]).await?;
    let mut workers =
        fake_worker_replying(&gw.nats, vec![accept("worker-1", 0), accept("worker-2", 1)]).await?;
    // A paused worker: its subscription is still there, it answers nothing.
    let mut probes = gw.nats.subscribe(gw.subjects.call_owner(CALL)).await?;
    barrier(&gw.nats).await?;
    let (_ws, _inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;
    gw.send_out(CALL, heartbeat(0, "worker-1")).await?;
    let silent_from = Instant::now();

    let probe = tokio::time::timeout(PATIENCE, probes.next())
        .await?
        .context("probe subscription ended")?;
    let probed = silent_from.elapsed();
    assert_eq!(OwnerProbe::decode(probe.payload)?.epoch, 0);
    assert!(probed >= Duration::from_millis(250), "{probed:?}");

    let offer = next_offer(&mut workers).await?;
    let lost = silent_from.elapsed();
    assert_eq!(offer.takeover, OwnerReason::WorkerLost.as_str());
    assert!(
        lost >= Duration::from_millis(1450) && lost < Duration::from_millis(2500),
        "lost at WORKER_SILENCE_MS: {lost:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hand_over_keeps_playing_the_old_owner_until_the_new_one_commits() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--worker-silence-ms", "1500"]).await?;
    let mut workers = fake_worker_replying(
        &gw.nats,
        vec![
            accept("worker-1", 0),
            decline("at_capacity"),
            accept("worker-2", 1),
        ],
    )
    .await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;
    let beats = heartbeats(&gw, 0, "worker-1");
    gw.send_out(CALL, owner(0, "worker-1", "", "")).await?;
    gw.send_out(
        CALL,
        frame(0, 4, outbound_frame::Frame::HandOver(HandOver {})),
    )
    .await?;

    let first = next_offer(&mut workers).await?;
    assert_eq!(first.takeover, OwnerReason::HandOver.as_str());
    assert_eq!(first.epoch, 1);
    assert_eq!(first.previous_worker_id, "worker-1");
    // Declined at first (a full worker), offered again with backoff, then taken.
    let second = next_offer(&mut workers).await?;
    assert_eq!(second.epoch, 1);

    // The draining owner's audio before the commit plays, with nothing cleared.
    let committed = async {
        loop {
            let f = next_control(&mut inbound).await?;
            if let Some(inbound_frame::Frame::Start(s)) = f.frame {
                return anyhow::Ok(s);
            }
        }
    };
    let start = committed.await?;
    assert_eq!((start.epoch, start.resumed), (1, true));
    beats.abort();
    assert_eq!(next_played(&mut ws).await?, None, "clear at the commit");
    gw.send_out(CALL, audio(0, 0x22)).await?;
    gw.send_out(CALL, audio(1, 0x33)).await?;
    assert_eq!(next_played(&mut ws).await?, Some(0x33));
    Ok(())
}

#[tokio::test]
async fn a_frame_of_a_newer_epoch_commits_without_an_accept() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut workers = fake_worker_replying(&gw.nats, vec![accept("worker-1", 0)]).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;
    gw.send_out(CALL, audio(0, 0x11)).await?;
    assert_eq!(next_played(&mut ws).await?, Some(0x11));

    gw.send_out(CALL, audio(2, 0x33)).await?;
    assert_eq!(next_played(&mut ws).await?, None, "clear first");
    assert_eq!(next_played(&mut ws).await?, Some(0x33));
    let f = next_control(&mut inbound).await?;
    let Some(inbound_frame::Frame::Start(s)) = f.frame else {
        anyhow::bail!("expected the resumed start, got {f:?}");
    };
    assert_eq!((s.epoch, s.resumed), (2, true));
    gw.send_out(CALL, audio(1, 0x22)).await?;
    gw.send_out(CALL, audio(2, 0x44)).await?;
    assert_eq!(
        next_played(&mut ws).await?,
        Some(0x44),
        "epoch 1 is older now"
    );
    Ok(())
}

/// The call's events in VOICE_EVENTS.
async fn call_events(gw: &TestGateway) -> anyhow::Result<Vec<CallEvent>> {
    let js = async_nats::jetstream::new(gw.nats.clone());
    let stored = switchboard_testkit::events::call_events(&js, &gw.subjects, CALL).await?;
    Ok(stored.into_iter().map(|s| s.event).collect())
}

/// The gateway's record of a call it closed: its owner claim, then `ended` (seq after it). The
/// stream's `recording` event, which the gateway publishes once the WAV is stored (before or
/// after these), is not part of it.
async fn gateway_record(
    gw: &TestGateway,
) -> anyhow::Result<(switchboard_proto::CallOwner, switchboard_proto::CallEnded)> {
    let events = switchboard_testkit::eventually(PATIENCE, "owner and ended events", || async {
        let events: Vec<CallEvent> = call_events(gw)
            .await
            .ok()?
            .into_iter()
            .filter(|e| !matches!(e.body, Some(call_event::Body::Recording(_))))
            .collect();
        (events.len() >= 2).then_some(events)
    })
    .await?;
    match (&events[0].body, &events[1].body) {
        (Some(call_event::Body::Owner(claim)), Some(call_event::Body::Ended(ended)))
            if events[1].seq > events[0].seq =>
        {
            Ok((claim.clone(), ended.clone()))
        }
        _ => anyhow::bail!("expected the gateway's owner claim, then ended: {events:?}"),
    }
}

/// Twilio's `stop` (the caller hung up, or the call left `<Connect>`).
fn twilio_stop() -> TwilioMessage {
    TwilioMessage::Stop {
        sequence_number: "99".into(),
        stream_sid: STREAM.into(),
        stop: StopInfo {
            account_sid: ACCOUNT_SID.into(),
            call_sid: CALL.into(),
        },
    }
}

#[tokio::test]
async fn nobody_taking_the_call_gets_the_apology_and_a_closed_fenced_record() -> anyhow::Result<()>
{
    let port = switchboard_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&[
        "--worker-silence-ms",
        "900",
        "--takeover-timeout-ms",
        "1500",
        "--twilio-api-base",
        &base,
    ])
    .await?;
    let mut cfg = CallConfig::new(&gw.url(""), AUTH_TOKEN);
    cfg.public_url = Some(PUBLIC_URL.to_owned());
    cfg.account_sid = ACCOUNT_SID.to_owned();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str("[[step]]\nhangup = true\n")?,
    )
    .await?;
    let mut workers = fake_worker_replying(
        &gw.nats,
        vec![accept("worker-1", 0), decline("at_capacity")],
    )
    .await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;
    gw.send_out(
        CALL,
        owner(0, "worker-1", "Sorry, one moment please.", "+15550002222"),
    )
    .await?;
    let lost_from = Instant::now();

    // Offered as a takeover, declined again and again until TAKEOVER_TIMEOUT_MS.
    assert_eq!(next_offer(&mut workers).await?.epoch, 1);
    let update = switchboard_testkit::eventually(PATIENCE, "the apology", || {
        let twilio = &twilio;
        async move {
            twilio
                .requests()
                .await
                .into_iter()
                .find(|r| r.path.ends_with(&format!("/Calls/{CALL}.json")))
        }
    })
    .await?;
    let given_up = lost_from.elapsed();
    assert!(
        given_up >= Duration::from_millis(1600),
        "not before probe + takeover timeout: {given_up:?}"
    );
    assert!(workers.offers.try_recv().is_ok(), "offered more than once");
    let Instructions(verbs) = Instructions::parse(update.get("Twiml").context("no Twiml")?)?;
    assert_eq!(
        verbs,
        vec![
            Verb::Say("Sorry, one moment please.".into()),
            Verb::dial("+15550002222")
        ]
    );

    // A zombie's late frames are not played; Twilio leaves the stream for the new TwiML.
    gw.send_out(CALL, audio(0, 0x22)).await?;
    send_json(&mut ws, &twilio_stop()).await?;
    while let tokio_tungstenite::tungstenite::Message::Text(text) = next_ws(&mut ws).await? {
        if let Ok(ServerMessage::Media { .. }) = ServerMessage::parse(&text) {
            anyhow::bail!("the lost owner's audio was played");
        }
    }
    let stop = next_control(&mut inbound).await?;
    assert!(matches!(stop.frame, Some(inbound_frame::Frame::Stop(_))));

    // The record: the gateway's fencing claim of epoch 1, then `ended` with `worker_lost`.
    let (claim, ended) = gateway_record(&gw).await?;
    assert_eq!(claim.epoch, 1);
    assert_eq!(claim.worker_id, "gw-test");
    assert_eq!(claim.reason, OwnerReason::WorkerLost.as_str());
    assert_eq!(claim.previous_worker_id, "worker-1");
    assert!(claim.gap_ms >= 1800, "{}", claim.gap_ms);
    assert_eq!(ended.reason, EndReason::WorkerLost.as_str());

    // The claim fences the old owner: an event it publishes under its epoch-0 fence (the
    // sequence before the gateway's claim) is refused.
    let js = async_nats::jetstream::new(gw.nats.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        switchboard_service::events::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
        gw.subjects.event(CALL, "owner").as_str(),
    );
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    let zombie = js
        .send_publish(
            gw.subjects.event(CALL, "transcript"),
            async_nats::jetstream::message::PublishMessage::build()
                .headers(headers)
                .payload("late".into()),
        )
        .await?
        .await;
    assert!(zombie.is_err(), "a zombie's event must be refused");
    Ok(())
}

#[tokio::test]
async fn a_caller_hanging_up_while_the_call_is_offered_still_closes_the_record()
-> anyhow::Result<()> {
    let gw = TestGateway::start(&[
        "--worker-silence-ms",
        "900",
        "--takeover-timeout-ms",
        "20000",
    ])
    .await?;
    let mut workers = fake_worker_replying(
        &gw.nats,
        vec![accept("worker-1", 0), decline("at_capacity")],
    )
    .await?;
    let (mut ws, _inbound, _) = gw.started_stream(CALL, STREAM).await?;
    next_offer(&mut workers).await?;
    gw.send_out(CALL, owner(0, "worker-1", "", "")).await?;
    assert_eq!(next_offer(&mut workers).await?.epoch, 1);

    // The owner is gone and nobody has taken the call yet: the caller hangs up.
    send_json(&mut ws, &twilio_stop()).await?;
    let (claim, ended) = gateway_record(&gw).await?;
    assert_eq!((claim.epoch, claim.worker_id.as_str()), (1, "gw-test"));
    assert_eq!(
        ended.reason,
        switchboard_proto::event::StopReason::Stop
            .end_reason()
            .as_str()
    );
    Ok(())
}
