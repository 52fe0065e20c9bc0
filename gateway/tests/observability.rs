//! Health, readiness and metrics routes, and the drain deadline. Alone in its test binary
//! because the metrics recorder is process-wide.

mod common;

use common::*;
use switchboard_proto::inbound_frame;
use switchboard_twilio::media::TwilioMessage;

const CALL: &str = "CA44444444444444444444444444444444";
const STREAM: &str = "MZ44444444444444444444444444444444";

fn media(seq: u64) -> TwilioMessage {
    TwilioMessage::media(seq, STREAM, seq as u32, seq as u32 * 20, &[0xff; 160])
}

async fn get(gw: &TestGateway, path: &str) -> anyhow::Result<(u16, String)> {
    let resp = gw.http.get(gw.url(path)).send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test]
async fn health_metrics_and_the_drain_deadline() -> anyhow::Result<()> {
    let metrics = switchboard_service::telemetry::install_metrics();
    assert!(metrics.is_some());
    let mut gw = TestGateway::start_with_metrics(&["--drain-seconds", "1"], metrics).await?;
    let _worker = accepting_worker(&gw.nats).await?;

    assert_eq!(get(&gw, "/healthz").await?.0, 200);
    assert_eq!(get(&gw, "/readyz").await?.0, 200);

    let (mut ws, mut inbound, _) = gw.started_stream(CALL, STREAM).await?;
    send_json(&mut ws, &media(2)).await?;
    next_inbound(&mut inbound).await?;

    let (status, body) = get(&gw, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(body.contains("gateway_active_streams 1"), "{body}");
    assert!(body.contains("gateway_offers_accepted_total 1"), "{body}");
    assert!(
        body.contains(r#"gateway_frames_in_total{event="media"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"gateway_frames_in_total{event="start"} 1"#),
        "{body}"
    );

    // A frame for another stream is ignored (not forwarded) and counted; the call goes on.
    let TwilioMessage::Media { media: m, .. } = media(4) else {
        unreachable!()
    };
    let foreign = TwilioMessage::Media {
        sequence_number: "4".into(),
        stream_sid: "MZ_someone_else".into(),
        media: m,
    };
    send_json(&mut ws, &foreign).await?;
    send_json(&mut ws, &media(5)).await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(f.frame, Some(inbound_frame::Frame::Audio(ref a)) if a.chunk == 5),
        "{f:?}"
    );
    let (_, body) = get(&gw, "/metrics").await?;
    assert!(body.contains("gateway_wrong_stream_sid_total 1"), "{body}");

    // Stop signal: not ready, no new calls, but the open stream keeps working.
    gw.shutdown();
    switchboard_testkit::eventually(PATIENCE, "readiness off", || async {
        (get(&gw, "/readyz").await.ok()?.0 == 503).then_some(())
    })
    .await?;
    let resp = gw
        .post_form("/twilio-voice", &voice_form("CA_new_call"), None)
        .await?;
    assert_eq!(resp.status(), 503);
    send_json(&mut ws, &media(3)).await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(f.frame, Some(inbound_frame::Frame::Audio(_))),
        "{f:?}"
    );

    // DRAIN_SECONDS later the stream is closed with 1001 and the worker told why.
    let (code, _) = expect_close(&mut ws).await?;
    assert_eq!(code, 1001);
    let f = next_inbound(&mut inbound).await?;
    assert!(
        matches!(f.frame, Some(inbound_frame::Frame::Stop(ref s)) if s.reason == "drain_deadline"),
        "{f:?}"
    );
    gw.served(PATIENCE).await
}
