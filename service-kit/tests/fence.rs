//! Ownership claims and fenced events against a real JetStream: one claim per epoch wins, and
//! once a new owner claimed the call, the old owner's events are refused and it is told so.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_nats::jetstream;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{OwnerReason, owner_seq};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, CallOwner, CallStarted, EVENTS_STREAM};
use switchboard_service::events::{ClaimError, EventPublisher, claim, ensure_stream};
use switchboard_testkit::NatsServer;

fn owner(call_sid: &str, epoch: u32, worker: &str) -> CallEvent {
    CallEvent {
        call_sid: call_sid.into(),
        seq: owner_seq(epoch, 1),
        at_ms: 1,
        body: Some(Body::Owner(CallOwner {
            epoch,
            worker_id: worker.into(),
            reason: if epoch == 0 {
                OwnerReason::Offer
            } else {
                OwnerReason::WorkerLost
            }
            .as_str()
            .into(),
            ..Default::default()
        })),
    }
}

fn started(call_sid: &str, seq: u64) -> CallEvent {
    CallEvent {
        call_sid: call_sid.into(),
        seq,
        at_ms: 1,
        body: Some(Body::Started(CallStarted::default())),
    }
}

#[tokio::test]
async fn concurrent_claims_of_one_epoch_have_exactly_one_winner() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let subjects = Subjects::default();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(jetstream::new(async_nats::connect(nats.url()).await?));
    }
    ensure_stream(&clients[0], &subjects).await?;
    for round in 0..5 {
        let sid = format!("CA{round}");
        let claims = clients.iter().enumerate().map(|(i, js)| {
            let event = owner(&sid, 0, &format!("worker-{i}"));
            let subjects = subjects.clone();
            async move { claim(js, &subjects, &event, 0).await }
        });
        let results = futures::future::join_all(claims).await;
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, ClaimError::Lost), "{e}");
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_new_owner_fences_the_old_one_out() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let subjects = Subjects::default();
    let mut stream = ensure_stream(&js, &subjects).await?;
    let publisher = EventPublisher::spawn(js.clone(), subjects.clone());

    let a = claim(&js, &subjects, &owner("CA1", 0, "worker-a"), 0).await?;
    // A retried claim (same event, same worker) is the same claim.
    let again = claim(&js, &subjects, &owner("CA1", 0, "worker-a"), 0)
        .await
        .map_err(|e| anyhow::anyhow!("retried claim: {e}"))?;
    assert_eq!(again.sequence(), a.sequence());
    // Another worker's claim of the same epoch (same event id) is not.
    assert!(matches!(
        claim(&js, &subjects, &owner("CA1", 0, "worker-b"), 0).await,
        Err(ClaimError::Lost)
    ));

    publisher.publish_fenced(started("CA1", 2), &a);
    publisher.flush().await;
    assert!(!a.lost().is_cancelled());

    // Epoch 1 must name the epoch-0 claim it follows.
    assert!(matches!(
        claim(&js, &subjects, &owner("CA1", 1, "worker-b"), 0).await,
        Err(ClaimError::Lost)
    ));
    let b = claim(&js, &subjects, &owner("CA1", 1, "worker-b"), a.sequence()).await?;
    assert!(b.sequence() > a.sequence());

    // The old owner's next event is refused, dropped, and tells it it lost the call.
    publisher.publish_fenced(started("CA1", 3), &a);
    tokio::time::timeout(Duration::from_secs(5), a.lost().cancelled()).await?;
    publisher.publish_fenced(started("CA1", owner_seq(1, 2)), &b);
    publisher.flush().await;
    assert!(!b.lost().is_cancelled());
    assert_eq!(publisher.backlog(), 0);

    let info = stream.info().await?;
    assert_eq!(info.config.name, EVENTS_STREAM);
    // owner 0, started 2, owner 1, started (1, 2): the refused event is not stored.
    assert_eq!(info.state.messages, 4);
    Ok(())
}
