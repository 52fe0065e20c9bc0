//! SIGTERM drain of the real `gateway` binary: an in-flight call keeps flowing both ways while
//! new webhooks get 503, and the process exits 0 once the call ends.

mod common;

use std::time::Duration;

use anyhow::{Context as _, bail};
use common::*;
use switchboard_proto::{OutboundAudio, OutboundFrame, inbound_frame, outbound_frame};
use switchboard_testkit::{NatsServer, Service};
use switchboard_twilio::media::{ServerMessage, TwilioMessage};
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml::{Instructions, Verb};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const CALL: &str = "CA44444444444444444444444444444444";
const STREAM: &str = "MZ44444444444444444444444444444444";

async fn post_voice(
    http: &reqwest::Client,
    addr: &str,
    validator: &Validator,
    call_sid: &str,
) -> anyhow::Result<reqwest::Response> {
    let form = voice_form(call_sid);
    Ok(http
        .post(format!("http://{addr}/twilio-voice"))
        .header("X-Twilio-Signature", validator.sign("/twilio-voice", &form))
        .form(&form)
        .send()
        .await?)
}

fn sigterm(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM failed");
    }
    Ok(())
}

#[tokio::test]
async fn an_in_flight_call_survives_sigterm_drain() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats_server = NatsServer::start().await?;
    let addr = format!("127.0.0.1:{}", switchboard_testkit::free_port());
    let recordings = tempfile::tempdir()?;
    let mut gateway = Service::spawn(
        "gateway",
        &[
            ("RECORDINGS_URL", recordings.path().display().to_string()),
            ("LISTEN", addr.clone()),
            ("PUBLIC_URL", PUBLIC_URL.to_owned()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
            ("NATS_URL", nats_server.url().to_owned()),
            ("DRAIN_SECONDS", "600".to_owned()),
            ("WORKER_SILENCE_MS", "60000".to_owned()),
        ],
    )?;
    gateway.wait_ready(&addr).await?;
    let nats = async_nats::connect(nats_server.url()).await?;
    let _worker = accepting_worker(&nats).await?;
    let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
    let validator = Validator::new(AUTH_TOKEN, PUBLIC_URL);

    // A call in flight.
    let resp = post_voice(&http, &addr, &validator, CALL).await?;
    assert_eq!(resp.status(), 200);
    let Instructions(verbs) = Instructions::parse(&resp.text().await?)?;
    let token = match verbs.as_slice() {
        [Verb::ConnectStream { parameters, .. }] => parameters
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone())
            .context("no token")?,
        other => bail!("unexpected TwiML {other:?}"),
    };
    let mut inbound = nats.subscribe(format!("voice.call.{CALL}.in")).await?;
    barrier(&nats).await?;
    let mut req = format!("ws://{addr}/media").into_client_request()?;
    req.headers_mut()
        .insert("X-Twilio-Signature", validator.sign_ws("/media").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(&mut ws, &start_message(CALL, STREAM, &[("token", &token)])).await?;
    let start = next_inbound(&mut inbound).await?;
    assert!(matches!(start.frame, Some(inbound_frame::Frame::Start(_))));

    sigterm(gateway.pid().context("no pid")?)?;
    switchboard_testkit::eventually(PATIENCE, "readiness off", || {
        let (http, url) = (http.clone(), format!("http://{addr}/readyz"));
        async move {
            let r = http.get(url).send().await.ok()?;
            (r.status() == 503).then_some(())
        }
    })
    .await?;
    // New calls go elsewhere.
    let other = post_voice(
        &http,
        &addr,
        &validator,
        "CA55555555555555555555555555555555",
    )
    .await?;
    assert_eq!(other.status(), 503);

    // The open call keeps flowing, caller to worker...
    for chunk in 1..=5u32 {
        send_json(
            &mut ws,
            &TwilioMessage::media(
                u64::from(chunk) + 2,
                STREAM,
                chunk,
                chunk * 20,
                &[0x7f; 160],
            ),
        )
        .await?;
        let f = next_inbound(&mut inbound).await?;
        assert!(
            matches!(f.frame, Some(inbound_frame::Frame::Audio(ref a)) if a.chunk == chunk),
            "{f:?}"
        );
    }
    // ... and worker to caller.
    let audio = OutboundFrame {
        epoch: 0,
        seq: 1,
        frame: Some(outbound_frame::Frame::Audio(OutboundAudio {
            payload: vec![0x55; 320].into(),
        })),
    };
    nats.publish(
        format!("voice.call.{CALL}.out"),
        switchboard_proto::Message::encode_to_vec(&audio).into(),
    )
    .await?;
    nats.flush().await?;
    match next_ws(&mut ws).await? {
        WsMessage::Text(text) => {
            let msg: ServerMessage = serde_json::from_str(&text)?;
            assert!(matches!(msg, ServerMessage::Media { .. }), "{msg:?}");
        }
        other => bail!("expected media, got {other:?}"),
    }
    // Still running while the call is open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gateway.try_exit_status().is_none(),
        "exited with a call open"
    );

    // The caller hangs up; the gateway then exits cleanly.
    send_json(
        &mut ws,
        &TwilioMessage::Stop {
            sequence_number: "9".into(),
            stream_sid: STREAM.into(),
            stop: Default::default(),
        },
    )
    .await?;
    let f = next_inbound(&mut inbound).await?;
    assert!(matches!(f.frame, Some(inbound_frame::Frame::Stop(ref s)) if s.reason == "stop"));
    ws.close(None).await?;
    let status = switchboard_testkit::eventually(Duration::from_secs(20), "gateway exit", || {
        std::future::ready(gateway.try_exit_status())
    })
    .await?;
    assert!(status.success(), "gateway exited with {status}");
    Ok(())
}
