//! Every refusal at the edge is counted under its contract name. Alone in its test binary
//! because the metrics recorder is process-wide.

mod common;

use common::*;
use gateway::metrics as m;
use switchboard_proto::{OutboundFrame, Transfer, outbound_frame};
use switchboard_twilio::media::TwilioMessage;

const CALL: &str = "CA0123456789abcdef0123456789abcdef";

async fn metrics(gw: &TestGateway) -> anyhow::Result<String> {
    Ok(gw.http.get(gw.url("/metrics")).send().await?.text().await?)
}

#[tokio::test]
async fn refusals_are_counted() -> anyhow::Result<()> {
    let recorder = switchboard_service::telemetry::install_metrics();
    assert!(recorder.is_some());
    let gw = TestGateway::start_with_metrics(
        &["--calls-token", "calls", "--calls-allowed-to", "+1555*"],
        recorder,
    )
    .await?;
    let _worker = accepting_worker(&gw.nats).await?;

    // A replayed webhook.
    let token = gw.token_for(CALL).await?;
    let replay = gw
        .post_form("/twilio-voice", &voice_form(CALL), None)
        .await?;
    assert_eq!(replay.status(), 409);

    // A reused stream token (once the first socket holds the call).
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;
    let mut first = gw.connect_media().await?;
    send_json(&mut first, &TwilioMessage::connected()).await?;
    send_json(
        &mut first,
        &start_message(CALL, "MZ1", &[("token", &token)]),
    )
    .await?;
    next_inbound(&mut inbound).await?;
    let mut second = gw.connect_media().await?;
    send_json(&mut second, &TwilioMessage::connected()).await?;
    send_json(
        &mut second,
        &start_message(CALL, "MZ2", &[("token", &token)]),
    )
    .await?;
    assert_eq!(expect_close(&mut second).await?.0, 1008);

    // A transfer outside the agent's list.
    gw.send_out(
        CALL,
        OutboundFrame {
            seq: 1,
            epoch: 0,
            frame: Some(outbound_frame::Frame::Transfer(Transfer {
                to: "+19005550100".into(),
                announcement: String::new(),
                ..Default::default()
            })),
        },
    )
    .await?;

    // An oversized webhook.
    let fields: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("F{i}"), "x".repeat(8)))
        .collect();
    assert_eq!(
        gw.post_form("/twilio-status", &fields, None)
            .await?
            .status(),
        413
    );

    // POST /calls: no token, a destination outside the list.
    let calls = |token: &str, to: &str| {
        gw.http
            .post(gw.url("/calls"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"to":"{to}","from":"+15550001111"}}"#))
            .send()
    };
    assert_eq!(calls("wrong", "+15550002222").await?.status(), 401);
    assert_eq!(calls("calls", "+19005550100").await?.status(), 403);

    let expected = [
        format!("{} 1", m::WEBHOOK_REPLAYS),
        format!(
            r#"{}{{reason="{}"}} 1"#,
            m::STREAMS_REFUSED,
            m::REFUSED_TOKEN_REUSED
        ),
        format!("{} 1", m::TRANSFERS_REFUSED),
        format!(
            r#"{}{{route="/twilio-status",reason="{}"}} 1"#,
            m::WEBHOOKS_REFUSED,
            m::WEBHOOK_TOO_LARGE
        ),
        format!(
            r#"{}{{reason="{}"}} 1"#,
            m::CALLS_REFUSED,
            m::CALL_UNAUTHORIZED
        ),
        format!(
            r#"{}{{reason="{}"}} 1"#,
            m::CALLS_REFUSED,
            m::CALL_DESTINATION
        ),
    ];
    let body = switchboard_testkit::eventually(PATIENCE, "every refusal counted", || async {
        let body = metrics(&gw).await.ok()?;
        expected
            .iter()
            .all(|line| body.contains(line.as_str()))
            .then_some(body)
    })
    .await;
    match body {
        Ok(_) => Ok(()),
        Err(_) => anyhow::bail!("missing one of {expected:#?} in\n{}", metrics(&gw).await?),
    }
}
