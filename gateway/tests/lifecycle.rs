//! Graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use switchboard_proto::inbound_frame;
use switchboard_twilio::media::TwilioMessage;

const CALL: &str = "CA33333333333333333333333333333333";
const STREAM: &str = "MZ33333333333333333333333333333333";

async fn get(gw: &TestGateway, path: &str) -> anyhow::Result<(u16, String)> {
    let resp = gw.http.get(gw.url(path)).send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test]
async fn draining_waits_for_open_streams_to_end() -> anyhow::Result<()> {
    let mut gw = TestGateway::start(&["--drain-seconds", "600"]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;

    gw.shutdown();
    switchboard_testkit::eventually(PATIENCE, "readiness off", || async {
        (get(&gw, "/readyz").await.ok()?.0 == 503).then_some(())
    })
    .await?;
    // A call offered just before the drain may still connect its media.
    let late = gw.connect_media().await?;
    drop(late);
    // Serving continues while the stream is open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&gw, "/healthz").await?.0, 200);

    send_json(
        &mut ws,
        &TwilioMessage::Stop {
            sequence_number: "3".into(),
            stream_sid: STREAM.into(),
            stop: Default::default(),
        },
    )
    .await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(matches!(f.frame, Some(inbound_frame::Frame::Stop(ref s)) if s.reason == "stop"));
    ws.close(None).await?;
    // Well before the 600 s drain deadline.
    gw.served(PATIENCE).await
}

#[tokio::test]
async fn without_streams_shutdown_is_immediate() -> anyhow::Result<()> {
    let mut gw = TestGateway::start(&[]).await?;
    gw.shutdown();
    gw.served(Duration::from_secs(5)).await
}
