//! Taking calls: capacity, routing, repeated offers, drain, probes, and the agents file.

mod common;

use std::time::Duration;

use common::*;
use switchboard_proto::call_event::Body;
use switchboard_proto::outbound_frame::Frame;
use switchboard_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUIET: &str = "[session]\nspeed = 20.0\n";

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

#[tokio::test]
async fn accepts_up_to_max_calls_and_declines_the_rest() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |c| c.max_calls = 1).await?;

    let first = h.offer("CAcap1", "+15550001111").await?;
    assert!(first.accepted, "{first:?}");
    assert_eq!(first.worker_id, "worker-test");
    assert_eq!(first.agent_id, "front-desk");

    let second = h.offer("CAcap2", "+15550001111").await?;
    assert!(!second.accepted);
    assert_eq!(second.reason, "at_capacity");
    assert_eq!(second.worker_id, "worker-test");

    // The same call offered again (a gateway retry) is ours already: accepted, not doubled.
    let again = h.offer("CAcap1", "+15550001111").await?;
    assert!(again.accepted);
    assert_eq!(again.agent_id, "front-desk");

    // The call ends; its slot frees up.
    let mut gw = h.gateway("CAcap1").await?;
    gw.start().await?;
    gw.stop().await?;
    let events = h.ended_events("CAcap1").await?;
    assert_well_formed(&events);
    let third = eventually(WAIT, "a free slot", || async {
        let r = h.offer("CAcap3", "+15550001111").await.ok()?;
        r.accepted.then_some(r)
    })
    .await?;
    assert_eq!(third.agent_id, "front-desk");
    Ok(())
}

#[tokio::test]
async fn declines_numbers_no_agent_answers() -> anyhow::Result<()> {
    let h = Harness::start(QUIET, &agents_toml(None, &[]), |_| {}).await?;
    let reply = h.offer("CAnoagent", "+19998887777").await?;
    assert!(!reply.accepted);
    assert_eq!(reply.reason, "no_agent");
    let mut offer = switchboard_proto::CallOffer {
        call_sid: "CAnoagent2".into(),
        to: "+15550001111".into(),
        agent_id: "ghost".into(),
        ..Default::default()
    };
    let reply = h.offer_with(offer.clone()).await?;
    assert_eq!(reply.reason, "no_agent");
    offer.agent_id = "front-desk".into();
    offer.to = "+19998887777".into();
    let reply = h.offer_with(offer).await?;
    assert!(
        reply.accepted,
        "an explicit agent id wins over routing: {reply:?}"
    );
    // Nothing was recorded for the declined calls.
    assert!(h.stored_events("CAnoagent").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn probes_heartbeats_and_drain() -> anyhow::Result<()> {
    let mut h = Harness::start(QUIET, &agents_toml(None, &[]), |c| c.drain_seconds = 1).await?;
    let addr = h.worker().local_addr();
    assert_eq!(http_get(addr, "/healthz").await?.0, 200);
    assert_eq!(http_get(addr, "/readyz").await?.0, 200);
    let (status, metrics) = http_get(addr, "/metrics").await?;
    // The recorder is process-wide; another test may own it, then /metrics is not routed.
    assert!(status == 200 || status == 404, "{status}");
    if status == 200 {
        assert!(metrics.contains("worker_max_calls") || metrics.contains("worker_offers_total"));
    }

    let mut gw = h.gateway("CAdrain").await?;
    assert!(h.offer("CAdrain", "+15550001111").await?.accepted);
    gw.start().await?;
    assert_eq!(gw.heartbeat().await?, "worker-test");

    let worker = h.worker.take().unwrap();
    worker.shutdown();
    eventually(WAIT, "readyz false", || async {
        let (status, _) = http_get(addr, "/readyz").await.ok()?;
        (status == 503).then_some(())
    })
    .await?;
    // No more offers are taken (nobody else answers them).
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        h.client.request(
            h.subjects.offer(),
            switchboard_proto::Message::encode_to_vec(&switchboard_proto::CallOffer {
                call_sid: "CAlate".into(),
                to: "+15550001111".into(),
                ..Default::default()
            })
            .into(),
        ),
    )
    .await?;
    match late {
        Err(e) => assert_eq!(e.kind(), async_nats::client::RequestErrorKind::NoResponders),
        Ok(msg) => {
            let r =
                <switchboard_proto::OfferReply as switchboard_proto::Message>::decode(msg.payload)?;
            assert!(!r.accepted);
            assert_eq!(r.reason, "draining");
        }
    }
    // The running call is ended at the drain deadline, politely.
    gw.until(
        "hangup",
        |f| matches!(f, Frame::Hangup(h) if h.reason == "worker_shutdown"),
    )
    .await?;
    tokio::time::timeout(WAIT, worker.wait()).await??;
    let events = h.stored_events("CAdrain").await?;
    assert_well_formed(&events);
    match events.last().and_then(|e| e.body.as_ref()) {
        Some(Body::Ended(e)) => assert_eq!(e.reason, "worker_shutdown"),
        other => panic!("last event {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_agents_file_stops_the_worker_with_a_precise_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agents.toml");
    std::fs::write(
        &file,
        "[[agent]]\nid = \"front-desk\"\ninstructions = \"x\"\n[agent.turn_detection]\nthreshold = 2.0\n",
    )?;
    // The agents file is read before anything is connected.
    let config = call_worker::Config::new("nats://127.0.0.1:1", &file);
    let err = match call_worker::Worker::start(config).await {
        Ok(_) => panic!("a bad agents file must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("front-desk"), "{err}");
    assert!(err.contains("turn_detection.threshold"), "{err}");
    Ok(())
}
