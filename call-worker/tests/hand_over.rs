//! Drain by hand-over: a worker told to stop asks the gateway to hand each running call to
//! another worker, keeps serving it until the new owner's epoch shows up, then stops without
//! ending the call; the other worker goes on with the conversation.

mod common;

use common::*;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{OwnerReason, epoch_of};
use switchboard_proto::outbound_frame::Frame;
use switchboard_proto::{CallOffer, Role};
use switchboard_testkit::eventually;

const SCRIPT: &str = "[session]\nspeed = 20.0\n\
    hear = [\"Do you open on Saturdays?\", \"Thanks.\"]\n\
    [[response]]\nsay = \"Yes until noon.\"\n\
    [[response]]\nsay = \"You are welcome.\"\n";

#[tokio::test]
async fn a_draining_worker_hands_its_call_to_another() -> anyhow::Result<()> {
    let mut h = Harness::start(SCRIPT, &agents_toml(None, &[]), |c| c.drain_seconds = 4).await?;
    let sid = "CAhandover";
    let mut gw = h.gateway(sid).await?;
    assert!(h.offer(sid, "+15550001111").await?.accepted);
    gw.start().await?;
    let mut echoed = 0;
    gw.speak(600).await?;
    gw.silence(700).await?;
    gw.receive_audio(3 * 250 * 8).await?;
    gw.echo_all(&mut echoed).await?;

    // A second worker joins; the first is told to stop.
    let mut config = call_worker::Config::new(h.nats.url(), h.dir.path().join("agents.toml"));
    config.realtime_url = h.sim.url();
    config.worker_id = Some("worker-two".into());
    let _two = call_worker::Worker::start(config).await?;
    let first = h.worker.take().expect("worker");
    first.shutdown();

    // Near its deadline it asks for the hand-over, still serving the call (epoch 0).
    let asked = gw
        .until("the hand-over request", |f| matches!(f, Frame::HandOver(_)))
        .await?;
    assert!(matches!(asked, Frame::HandOver(_)));
    let offer = CallOffer {
        call_sid: sid.into(),
        gateway_id: "gw-test".into(),
        offered_at_ms: switchboard_proto::now_ms(),
        epoch: 1,
        takeover: OwnerReason::HandOver.as_str().into(),
        previous_worker_id: "worker-test".into(),
        ..Default::default()
    };
    // The draining worker declines; the other one takes it.
    let reply = eventually(WAIT, "another worker takes the call", || async {
        let r = h.offer_with(offer.clone()).await.ok()?;
        r.accepted.then_some(r)
    })
    .await?;
    assert_eq!((reply.worker_id.as_str(), reply.epoch), ("worker-two", 1));
    gw.start_for(1, true).await?;

    // The conversation goes on with the new owner; the old one stops without ending the call.
    gw.speak(600).await?;
    gw.silence(700).await?;
    let mut audio = 0;
    while audio == 0 {
        let f = gw.raw(WAIT).await.expect("the new owner answers");
        if let Some(Frame::Audio(a)) = &f.frame {
            assert_eq!(f.epoch, 1);
            audio += a.payload.len();
        }
    }
    tokio::time::timeout(WAIT, first.wait()).await??;
    h.events_until(sid, "the new owner's caller turn", |evs| {
        evs.iter().any(|e| {
            epoch_of(e.seq) == 1
                && matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::User as i32)
        })
    })
    .await?;
    gw.stop().await?;
    let events = h
        .events_until(sid, "the end", |evs| {
            evs.iter().any(|e| matches!(e.body, Some(Body::Ended(_))))
        })
        .await?;
    let ended: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Ended(b)) => Some((epoch_of(e.seq), b.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        [(1, "caller_hung_up".to_owned())],
        "no worker_shutdown cut"
    );
    let owners: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Owner(o)) => Some((o.epoch, o.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        owners,
        [(0, "offer".to_owned()), (1, "hand_over".to_owned())]
    );
    Ok(())
}
