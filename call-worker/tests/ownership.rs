//! Ownership of a call against a real nats-server: one claim per call wins, every frame carries
//! the owner's epoch, the owner answers probes and announces itself on every start, and an
//! owner that learns another took the call stops at once, publishing nothing more.

mod common;

use std::time::Duration;

use common::*;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{OwnerReason, owner_seq};
use switchboard_proto::outbound_frame::Frame;
use switchboard_proto::{
    CallEvent, CallOwner, Dtmf, Message as _, OwnerAck, OwnerProbe, inbound_frame,
};
use switchboard_service::events::{claim, last_owner};

const QUIET: &str = "[session]\nspeed = 20.0\n";

/// Claims `epoch` of the call as `worker` would (the test stands in for a worker taking the
/// call over).
async fn take_over(h: &Harness, call_sid: &str, epoch: u32, worker: &str) -> anyhow::Result<()> {
    let owner_subject = h.subjects.event(call_sid, "owner");
    let (previous, _) = last_owner(&h.js, &owner_subject)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .expect("a claim");
    let event = CallEvent {
        call_sid: call_sid.into(),
        seq: owner_seq(epoch, 1),
        at_ms: switchboard_proto::now_ms(),
        body: Some(Body::Owner(CallOwner {
            epoch,
            worker_id: worker.into(),
            reason: OwnerReason::WorkerLost.as_str().into(),
            previous_worker_id: "worker-test".into(),
            ..Default::default()
        })),
    };
    claim(&h.js, &h.subjects, &event, previous).await?;
    Ok(())
}

/// Waits for the owner's announcement.
async fn wait_owner(gw: &mut Gateway) -> anyhow::Result<()> {
    loop {
        match gw.raw(WAIT).await.map(|f| f.frame) {
            Some(Some(Frame::Owner(_))) => return Ok(()),
            Some(_) => {}
            None => anyhow::bail!("no owner frame"),
        }
    }
}

async fn probe(h: &Harness, call_sid: &str, epoch: u32) -> anyhow::Result<Option<OwnerAck>> {
    let request = h.client.request(
        h.subjects.call_owner(call_sid),
        OwnerProbe { epoch }.encode_to_vec().into(),
    );
    match tokio::time::timeout(Duration::from_millis(500), request).await {
        Ok(Ok(msg)) => Ok(Some(OwnerAck::decode(msg.payload)?)),
        // No responders, or no answer.
        Ok(Err(_)) | Err(_) => Ok(None),
    }
}

#[tokio::test]
async fn the_owner_claims_announces_itself_and_answers_probes() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAown1").await?;
    let reply = h.offer("CAown1", "+15550001111").await?;
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(reply.epoch, 0);
    gw.start().await?;
    // The first frame after the start is the owner's announcement, with the agent's fallback.
    let first = loop {
        let f = gw.raw(WAIT).await.expect("frames");
        if !matches!(f.frame, Some(Frame::Heartbeat(_))) {
            break f.frame;
        }
    };
    match first {
        Some(Frame::Owner(o)) => {
            assert_eq!(o.worker_id, "worker-test");
            assert_eq!(o.agent_id, "front-desk");
            assert_eq!(o.transfer_to, "+15550002222");
            assert_eq!(o.apology, call_worker::agents::DEFAULT_APOLOGY);
        }
        other => panic!("expected the owner frame first, got {other:?}"),
    }
    // Heartbeats come every 250 ms, with the epoch.
    let started = tokio::time::Instant::now();
    let mut beats = 0;
    while beats < 4 {
        let f = gw.raw(WAIT).await.expect("frames");
        assert_eq!(f.epoch, 0);
        if matches!(f.frame, Some(Frame::Heartbeat(_))) {
            beats += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let ack = probe(&h, "CAown1", 0).await?.expect("the owner answers");
    assert_eq!((ack.worker_id.as_str(), ack.epoch), ("worker-test", 0));

    // The claim is the call's first event; an offer of the call to another worker after a lost
    // reply cannot claim it again.
    let events = h
        .events_until("CAown1", "owner and started", |e| e.len() >= 2)
        .await?;
    match &events[0].body {
        Some(Body::Owner(o)) => {
            assert_eq!((o.epoch, o.reason.as_str()), (0, "offer"));
            assert_eq!(
                (o.worker_id.as_str(), o.agent_id.as_str()),
                ("worker-test", "front-desk")
            );
        }
        other => panic!("{other:?}"),
    }
    let owner_subject = h.subjects.event("CAown1", "owner");
    let rival = CallEvent {
        call_sid: "CAown1".into(),
        seq: 1,
        at_ms: 1,
        body: Some(Body::Owner(CallOwner {
            worker_id: "worker-other".into(),
            ..Default::default()
        })),
    };
    assert!(claim(&h.js, &h.subjects, &rival, 0).await.is_err());
    assert!(
        last_owner(&h.js, &owner_subject)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_some()
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_offers_of_one_call_to_two_workers_are_taken_once() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |_| {}).await?;
    let mut config = call_worker::Config::new(h.nats.url(), h.dir.path().join("agents.toml"));
    config.realtime_url = h.sim.url();
    config.worker_id = Some("worker-two".into());
    let _two = call_worker::Worker::start(config).await?;
    for round in 0..8 {
        let sid = format!("CAtwice{round}");
        let (a, b) = tokio::join!(h.offer(&sid, "+15550001111"), h.offer(&sid, "+15550001111"));
        let (a, b) = (a?, b?);
        let accepted: Vec<_> = [&a, &b].into_iter().filter(|r| r.accepted).collect();
        assert!(!accepted.is_empty(), "{a:?} {b:?}");
        // Both answers name one owner: the same worker twice (a repeated offer), or one
        // worker and the other's `claim_lost`.
        for r in [&a, &b] {
            if r.accepted {
                assert_eq!(r.worker_id, accepted[0].worker_id);
            } else {
                assert_eq!(r.reason, "claim_lost", "{r:?}");
            }
        }
        let events = h.events_until(&sid, "the claim", |e| !e.is_empty()).await?;
        let claims = events
            .iter()
            .filter(|e| matches!(e.body, Some(Body::Owner(_))))
            .count();
        assert_eq!(claims, 1);
    }
    Ok(())
}

/// After another owner claimed the call: the old owner answers no probe, sends no frame, and
/// stores no event (no `ended` either).
async fn assert_stopped(h: &Harness, gw: &mut Gateway, call_sid: &str) -> anyhow::Result<()> {
    let stored = h.stored_events(call_sid).await?.len();
    // Heartbeats stop within one interval (allow for one already in flight).
    let mut after = 0;
    while let Some(f) = gw.raw(Duration::from_millis(600)).await {
        assert_eq!(f.epoch, 0);
        after += 1;
        assert!(after <= 2, "the old owner keeps sending: {f:?}");
    }
    assert!(
        probe(h, call_sid, 0).await?.is_none(),
        "the old owner still answers"
    );
    // The caller keeps talking to the stream: the old owner records nothing of it.
    gw.send(inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }))
        .await?;
    gw.stop().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = h.stored_events(call_sid).await?;
    assert_eq!(events.len(), stored, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.body, Some(Body::Ended(_))))
    );
    Ok(())
}

#[tokio::test]
async fn an_owner_refused_by_the_fence_stops_at_once() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |_| {}).await?;
    let mut gw = h.gateway("CAfence").await?;
    assert!(h.offer("CAfence", "+15550001111").await?.accepted);
    gw.start().await?;
    wait_owner(&mut gw).await?;
    h.events_until("CAfence", "started", |e| e.len() >= 2)
        .await?;
    take_over(&h, "CAfence", 1, "worker-new").await?;
    // The owner does not know yet; its next event (the keypad line) is refused, which tells it.
    gw.send(inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_stopped(&h, &mut gw, "CAfence").await
}

#[tokio::test]
async fn a_probe_or_start_of_a_newer_epoch_stops_the_old_owner() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |_| {}).await?;
    for (sid, by_probe) in [("CAprobe", true), ("CAstart", false)] {
        let mut gw = h.gateway(sid).await?;
        assert!(h.offer(sid, "+15550001111").await?.accepted);
        gw.start().await?;
        wait_owner(&mut gw).await?;
        // A start for an older epoch than ours (none here) or ours again is served; a newer
        // one means the gateway committed another owner.
        take_over(&h, sid, 1, "worker-new").await?;
        if by_probe {
            assert!(probe(&h, sid, 1).await?.is_none());
        } else {
            gw.start_for(1, true).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_stopped(&h, &mut gw, sid).await?;
    }
    Ok(())
}
