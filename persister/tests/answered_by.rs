//! Twilio's answering-machine verdict on the record: the `amd` event becomes the call's
//! `answered_by`, shown by `GET /api/sessions/{sid}`.

mod common;

use common::*;
use switchboard_proto::AnsweringMachine;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::GATEWAY_SEQ_BASE;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[tokio::test]
async fn the_verdict_is_on_the_session() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA0000000000000000000000000000a3d1";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    let verdict = Body::Amd(AnsweringMachine {
        answered_by: "machine_end_beep".into(),
        detection_ms: 7400,
    });
    fx.publish(&event(sid, GATEWAY_SEQ_BASE + 500_000, T0 + 8000, verdict))
        .await?;
    fx.wait_events(sid, events.len() as i64 + 1).await?;
    let session = fx.session(sid).await?;
    assert_eq!(session["answered_by"], "machine_end_beep");
    // The rest of the record is untouched by it.
    assert!(session["end_reason"].is_string(), "{session}");

    // A call without detection has none.
    let other = "CA0000000000000000000000000000a3d2";
    let events = realistic_call(other, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(other, events.len() as i64).await?;
    assert!(fx.session(other).await?["answered_by"].is_null());
    Ok(())
}
