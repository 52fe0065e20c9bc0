//! `POST /twilio-voice` and `POST /twilio-status` against a real nats-server.

mod common;

use std::time::Duration;

use common::*;
use gateway::stream_token::{StreamTokens, unix_now};
use switchboard_proto::event::GATEWAY_SEQ_BASE;
use switchboard_proto::{
    CallEvent, Direction, EVENTS_STREAM, Message as _, OfferReply, call_event,
};
use switchboard_twilio::twiml::{Instructions, Verb};

const CALL: &str = "CA0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn webhooks_without_a_valid_signature_are_forbidden() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = accepting_worker(&gw.nats).await?;
    let form = voice_form(CALL);

    let missing = gw.post_form("/twilio-voice", &form, Some(None)).await?;
    assert_eq!(missing.status(), 403);

    let garbage = gw
        .post_form("/twilio-voice", &form, Some(Some("bm9wZQ==".into())))
        .await?;
    assert_eq!(garbage.status(), 403);

    // Signed for other parameters (a tampered form).
    let mut tampered = form.clone();
    tampered[0].1 = "CA_someone_else".into();
    let sig = gw.validator.sign("/twilio-voice", &form);
    let resp = gw
        .post_form("/twilio-voice", &tampered, Some(Some(sig)))
        .await?;
    assert_eq!(resp.status(), 403);
    assert!(!resp.text().await?.is_empty());

    // Signed for another URL.
    let sig = gw.validator.sign("/twilio-status", &form);
    let resp = gw
        .post_form("/twilio-voice", &form, Some(Some(sig)))
        .await?;
    assert_eq!(resp.status(), 403);

    let status = gw.post_form("/twilio-status", &form, Some(None)).await?;
    assert_eq!(status.status(), 403);

    // None of these reached a worker.
    assert!(worker.offers.try_recv().is_err());
    Ok(())
}

#[tokio::test]
async fn forms_without_a_usable_call_sid_are_bad_requests() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut no_sid = voice_form(CALL);
    no_sid.retain(|(k, _)| k != "CallSid");
    assert_eq!(
        gw.post_form("/twilio-voice", &no_sid, None).await?.status(),
        400
    );
    for bad in ["CA.1", "CA>", "CA 1", ""] {
        let form = voice_form(bad);
        assert_eq!(
            gw.post_form("/twilio-voice", &form, None).await?.status(),
            400,
            "CallSid {bad:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_accepted_call_gets_a_stream_with_a_token() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = accepting_worker(&gw.nats).await?;

    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    let [
        Verb::ConnectStream {
            url, parameters, ..
        },
    ] = verbs.as_slice()
    else {
        panic!("expected <Connect><Stream>, got {verbs:?}");
    };
    assert_eq!(url, "wss://gw.example.com/media");
    let [(name, token)] = parameters.as_slice() else {
        panic!("expected one parameter, got {parameters:?}");
    };
    assert_eq!(name, "token");
    let tokens = StreamTokens::new(AUTH_TOKEN.as_bytes())?;
    tokens.verify(CALL, token, unix_now())?;
    assert!(tokens.verify("CA_other", token, unix_now()).is_err());
    // Valid for STREAM_TOKEN_TTL_SECONDS (300 by default), not forever.
    assert!(tokens.verify(CALL, token, unix_now() + 301).is_err());

    let offer = tokio::time::timeout(PATIENCE, worker.offers.recv())
        .await?
        .expect("offer");
    assert_eq!(offer.call_sid, CALL);
    assert_eq!(offer.account_sid, ACCOUNT_SID);
    assert_eq!(offer.from, "+15550001234");
    assert_eq!(offer.to, "+15550001111");
    assert_eq!(offer.direction(), Direction::Inbound);
    assert_eq!(offer.gateway_id, "gw-test");
    assert!(offer.offered_at_ms > 0);
    Ok(())
}

#[tokio::test]
async fn outbound_calls_are_offered_as_outbound() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = accepting_worker(&gw.nats).await?;
    let mut form = voice_form(CALL);
    for (k, v) in form.iter_mut() {
        if k == "Direction" {
            *v = "outbound-api".into();
        }
    }
    let resp = gw.post_form("/twilio-voice", &form, None).await?;
    assert_eq!(resp.status(), 200);
    let offer = tokio::time::timeout(PATIENCE, worker.offers.recv())
        .await?
        .expect("offer");
    assert_eq!(offer.direction(), Direction::Outbound);
    Ok(())
}

/// Reads the gateway's `rejected` event for `call_sid` from JetStream.
async fn rejected_event(gw: &TestGateway, call_sid: &str) -> anyhow::Result<(CallEvent, String)> {
    let js = async_nats::jetstream::new(gw.nats.clone());
    let stream = js.get_stream(EVENTS_STREAM).await?;
    let subject = gw.subjects.event(call_sid, "rejected");
    let msg = switchboard_testkit::eventually(PATIENCE, "rejected event", || {
        let (stream, subject) = (&stream, subject.clone());
        async move { stream.get_last_raw_message_by_subject(&subject).await.ok() }
    })
    .await?;
    let msg_id = msg
        .headers
        .get("Nats-Msg-Id")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    Ok((CallEvent::decode(msg.payload)?, msg_id))
}

#[tokio::test]
async fn without_workers_the_caller_hears_busy_and_a_rejection_is_recorded() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--busy-message", "Everyone is busy & sorry."]).await?;
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    assert_eq!(
        verbs,
        vec![Verb::Say("Everyone is busy & sorry.".into()), Verb::Hangup]
    );

    let (event, msg_id) = rejected_event(&gw, CALL).await?;
    assert_eq!(event.call_sid, CALL);
    assert_eq!(event.seq, GATEWAY_SEQ_BASE);
    assert_eq!(msg_id, format!("{CALL}:{GATEWAY_SEQ_BASE}"));
    let Some(call_event::Body::Rejected(rejected)) = event.body else {
        panic!("expected a rejected body, got {:?}", event.body);
    };
    assert_eq!(rejected.reason, "no_workers");
    assert_eq!(rejected.from, "+15550001234");
    assert_eq!(rejected.to, "+15550001111");
    Ok(())
}

fn declined(reason: &str) -> OfferReply {
    OfferReply {
        epoch: 0,
        accepted: false,
        worker_id: "worker-1".into(),
        agent_id: String::new(),
        reason: reason.into(),
    }
}

/// The offers the fake worker has seen so far.
fn offers_seen(worker: &mut FakeWorker) -> Vec<String> {
    std::iter::from_fn(|| worker.offers.try_recv().ok())
        .map(|o| o.call_sid)
        .collect()
}

#[tokio::test]
async fn workers_that_stay_full_mean_busy_after_every_attempt() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = fake_worker(&gw.nats, declined("at_capacity")).await?;
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    assert!(matches!(verbs.as_slice(), [Verb::Say(text), Verb::Hangup] if text.contains("busy")));
    let (event, _) = rejected_event(&gw, CALL).await?;
    let Some(call_event::Body::Rejected(rejected)) = event.body else {
        panic!()
    };
    assert_eq!(rejected.reason, "at_capacity");
    assert_eq!(
        offers_seen(&mut worker).len(),
        gateway::offer::OFFER_ATTEMPTS as usize,
        "offered again after each decline"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_or_draining_worker_s_decline_is_offered_again() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let accept = OfferReply {
        epoch: 0,
        accepted: true,
        worker_id: "worker-2".into(),
        agent_id: "front-desk".into(),
        reason: String::new(),
    };
    let mut worker = fake_worker_replying(
        &gw.nats,
        vec![declined("at_capacity"), declined("draining"), accept],
    )
    .await?;
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    assert!(
        matches!(verbs.as_slice(), [Verb::ConnectStream { .. }]),
        "the third attempt is taken: {verbs:?}"
    );
    assert_eq!(offers_seen(&mut worker), vec![CALL; 3]);
    Ok(())
}

#[tokio::test]
async fn a_decline_no_other_worker_would_change_is_final() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = fake_worker(&gw.nats, declined("no_agent")).await?;
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    assert!(matches!(verbs.as_slice(), [Verb::Say(_), Verb::Hangup]));
    let (event, _) = rejected_event(&gw, CALL).await?;
    let Some(call_event::Body::Rejected(rejected)) = event.body else {
        panic!()
    };
    assert_eq!(rejected.reason, "no_agent");
    assert_eq!(offers_seen(&mut worker).len(), 1, "offered once");
    Ok(())
}

#[tokio::test]
async fn a_worker_that_never_answers_times_out_to_busy() -> anyhow::Result<()> {
    let gw = TestGateway::start(&["--offer-timeout-ms", "300"]).await?;
    // Subscribed in the queue group, but never replies.
    let _silent = gw
        .nats
        .queue_subscribe(gw.subjects.offer(), "call-workers".to_owned())
        .await?;
    barrier(&gw.nats).await?;
    let started = tokio::time::Instant::now();
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(verbs.as_slice(), [Verb::Say(_), Verb::Hangup]));
    let (event, _) = rejected_event(&gw, CALL).await?;
    let Some(call_event::Body::Rejected(rejected)) = event.body else {
        panic!()
    };
    assert_eq!(rejected.reason, "timeout");
    Ok(())
}

#[tokio::test]
async fn status_callbacks_become_status_events() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut form = voice_form(CALL);
    form.push(("CallDuration".into(), "42".into()));
    form.push(("SequenceNumber".into(), "3".into()));
    form.push(("SipResponseCode".into(), "200".into()));
    for (k, v) in form.iter_mut() {
        if k == "CallStatus" {
            *v = "completed".into();
        }
    }
    let resp = gw.post_form("/twilio-status", &form, None).await?;
    assert_eq!(resp.status(), 204);
    // Twilio retries a callback it could not deliver: the same event, deduplicated.
    let resp = gw.post_form("/twilio-status", &form, None).await?;
    assert_eq!(resp.status(), 204);
    let mut ringing = voice_form(CALL);
    ringing.push(("SequenceNumber".into(), "1".into()));
    assert_eq!(
        gw.post_form("/twilio-status", &ringing, None)
            .await?
            .status(),
        204
    );

    let js = async_nats::jetstream::new(gw.nats.clone());
    let subject = gw.subjects.event(CALL, "status");
    switchboard_testkit::eventually(PATIENCE, "two status events", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(EVENTS_STREAM).await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.messages >= 2).then_some(())
        }
    })
    .await?;
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    // Give a duplicate the chance to land, then count exactly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stream.info().await?.state.messages,
        2,
        "retry not deduplicated"
    );

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await?;
    let mut batch = consumer.fetch().max_messages(10).messages().await?;
    let mut events = Vec::new();
    while let Some(msg) = futures::StreamExt::next(&mut batch).await {
        let msg = msg.map_err(|e| anyhow::anyhow!(e))?;
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        events.push((CallEvent::decode(msg.payload.clone())?, msg_id));
    }
    assert_eq!(events.len(), 2);
    let (completed, msg_id) = &events[0];
    assert_eq!(completed.call_sid, CALL);
    assert_eq!(completed.seq, GATEWAY_SEQ_BASE + 4);
    assert_eq!(msg_id, &format!("{CALL}:{}", GATEWAY_SEQ_BASE + 4));
    let Some(call_event::Body::Status(status)) = &completed.body else {
        panic!("expected a status body, got {:?}", completed.body);
    };
    assert_eq!(status.status, "completed");
    assert_eq!(status.sequence_number, 3);
    assert_eq!(status.duration_seconds, 42);
    assert_eq!(status.sip_response_code, 200);
    let (ringing, _) = &events[1];
    assert_eq!(ringing.seq, GATEWAY_SEQ_BASE + 2);
    assert!(matches!(&ringing.body, Some(call_event::Body::Status(s)) if s.status == "ringing"));

    let mut no_sid = form.clone();
    no_sid.retain(|(k, _)| k != "CallSid");
    assert_eq!(
        gw.post_form("/twilio-status", &no_sid, None)
            .await?
            .status(),
        400
    );
    Ok(())
}
