//! Answering-machine detection at the gateway: the voice webhook URL's `amd=async` reaches the
//! offer, and a verified `POST /twilio-amd` reaches the call's owner on `.in`.

mod common;

use std::time::Duration;

use common::*;
use switchboard_proto::inbound_frame;

const CALL: &str = "CA0123456789abcdef0123456789abcdea";
const OTHER: &str = "CA0123456789abcdef0123456789abcdeb";

#[tokio::test]
async fn the_voice_url_tells_the_offer_that_amd_runs() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = accepting_worker(&gw.nats).await?;
    let mut outbound = voice_form(CALL);
    outbound.retain(|(k, _)| k != "Direction");
    outbound.push(("Direction".into(), "outbound-api".into()));
    let path = "/twilio-voice?agent=front-desk&amd=async";
    let resp = gw.post_form(path, &outbound, None).await?;
    anyhow::ensure!(resp.status().is_success(), "{}", resp.status());
    let offer = worker.offers.recv().await.expect("an offer");
    assert!(offer.async_amd, "{offer:?}");

    gw.voice_webhook(OTHER).await?;
    let offer = worker.offers.recv().await.expect("an offer");
    assert!(!offer.async_amd, "an inbound call waits for nothing");
    Ok(())
}

#[tokio::test]
async fn a_verdict_reaches_the_calls_owner() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut owner = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;
    let form = |answered_by: &str| {
        vec![
            ("CallSid".to_owned(), CALL.to_owned()),
            ("AccountSid".to_owned(), ACCOUNT_SID.to_owned()),
            ("AnsweredBy".to_owned(), answered_by.to_owned()),
            ("MachineDetectionDuration".to_owned(), "4200".to_owned()),
        ]
    };

    // Unknown words and unsigned posts reach nobody.
    let refused = gw.post_form("/twilio-amd", &form("robot"), None).await?;
    assert_eq!(refused.status(), 400);
    let unsigned = gw
        .post_form("/twilio-amd", &form("human"), Some(None))
        .await?;
    assert_eq!(unsigned.status(), 403);

    let resp = gw
        .post_form("/twilio-amd", &form("machine_end_beep"), None)
        .await?;
    assert_eq!(resp.status(), 204);
    let frame = tokio::time::timeout(Duration::from_secs(5), next_inbound(&mut owner)).await??;
    assert_eq!(frame.seq, 0, "outside any stream");
    match frame.frame {
        Some(inbound_frame::Frame::Amd(verdict)) => {
            assert_eq!(verdict.answered_by, "machine_end_beep");
            assert_eq!(verdict.detection_ms, 4200);
        }
        other => anyhow::bail!("expected the verdict first, got {other:?}"),
    }
    Ok(())
}
