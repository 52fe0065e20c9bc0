//! Outbound calls and call control through Twilio's REST API, against callsim's fake Twilio:
//! `POST /calls` -> Twilio dials -> voice webhook with the agent -> media stream -> status
//! callbacks become events; a transfer frame -> a REST update with `<Dial>`.

mod common;

use std::time::Duration;

use anyhow::Context as _;
use callsim::CallConfig;
use callsim::script::CallerScript;
use callsim::twilio_rest::FakeTwilio;
use common::*;
use futures::StreamExt as _;
use switchboard_proto::event::GATEWAY_SEQ_BASE;
use switchboard_proto::{
    CallEvent, Direction, EVENTS_STREAM, InboundFrame, Message as _, OutboundFrame, Transfer,
    call_event, inbound_frame, outbound_frame,
};
use switchboard_twilio::twiml::{Instructions, Verb};

const CALLS: &str = "calls-secret";

/// The `POST /calls` settings of these tests: the token and the destinations allowed.
const CALLS_FLAGS: [&str; 4] = [
    "--calls-token",
    CALLS,
    "--calls-allowed-to",
    "+15550002222,+1555777*",
];

/// A gateway whose Twilio REST API is a fake that places calls back onto it.
async fn setup(script: &str) -> anyhow::Result<(TestGateway, FakeTwilio)> {
    setup_with(script, &[]).await
}

async fn setup_with(script: &str, extra: &[&str]) -> anyhow::Result<(TestGateway, FakeTwilio)> {
    let port = switchboard_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--twilio-api-base", &base];
    args.extend_from_slice(&CALLS_FLAGS);
    args.extend_from_slice(extra);
    let gw = TestGateway::start(&args).await?;
    let mut cfg = CallConfig::new(&gw.url(""), AUTH_TOKEN);
    cfg.public_url = Some(PUBLIC_URL.to_owned());
    cfg.account_sid = ACCOUNT_SID.to_owned();
    let fake = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(script)?,
    )
    .await?;
    Ok((gw, fake))
}

async fn post_calls(
    gw: &TestGateway,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = gw
        .http
        .post(gw.url("/calls"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or_default()))
}

#[tokio::test]
async fn calls_requires_the_calls_token_and_a_valid_body() -> anyhow::Result<()> {
    let (gw, fake) = setup("[[step]]\nhangup = true\n").await?;
    let body = r#"{"to":"+15550002222","from":"+15550001111"}"#;
    assert_eq!(post_calls(&gw, None, body).await?.0, 401);
    assert_eq!(post_calls(&gw, Some("wrong"), body).await?.0, 401);
    assert_eq!(post_calls(&gw, Some(CALLS), "{not json").await?.0, 400);
    assert_eq!(
        post_calls(&gw, Some(CALLS), r#"{"from":"+15550001111"}"#)
            .await?
            .0,
        400
    );
    // A body far over the limit is refused without being parsed.
    let huge = format!(
        r#"{{"to":"+15550002222","from":"{}"}}"#,
        "1".repeat(1 << 20)
    );
    assert_eq!(post_calls(&gw, Some(CALLS), &huge).await?.0, 413);
    // Nothing reached Twilio.
    assert!(fake.requests().await.is_empty());
    Ok(())
}

#[tokio::test]
async fn twilio_errors_become_bad_gateway() -> anyhow::Result<()> {
    // A gateway with the wrong REST credentials: the fake answers 401.
    let port = switchboard_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--twilio-api-base", &base];
    args.extend_from_slice(&CALLS_FLAGS);
    let gw = TestGateway::start(&args).await?;
    let mut cfg = CallConfig::new(&gw.url(""), "another-token");
    cfg.account_sid = ACCOUNT_SID.to_owned();
    let _fake = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::demo(),
    )
    .await?;
    let (status, body) = post_calls(
        &gw,
        Some(CALLS),
        r#"{"to":"+15550002222","from":"+15550001111"}"#,
    )
    .await?;
    assert_eq!(status, 502);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Authenticate"),
        "{body}"
    );
    Ok(())
}

async fn next_in(sub: &mut async_nats::Subscriber) -> anyhow::Result<(String, InboundFrame)> {
    let msg = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .context("no inbound frame in time")?
        .context("subscription ended")?;
    Ok((msg.subject.to_string(), InboundFrame::decode(msg.payload)?))
}

#[tokio::test]
async fn an_outbound_call_runs_and_is_transferred_by_rest() -> anyhow::Result<()> {
    // The callee listens for a long time: only the transfer ends the call.
    let (gw, fake) = setup("[[step]]\npause_ms = 30000\n[[step]]\nhangup = true\n").await?;
    let mut worker = accepting_worker(&gw.nats).await?;
    let mut inbound = gw.nats.subscribe("voice.call.*.in").await?;
    barrier(&gw.nats).await?;

    let (status, body) = post_calls(
        &gw,
        Some(CALLS),
        r#"{"to":"+15550002222","from":"+15550001111","agent_id":"sales"}"#,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let call_sid = body["call_sid"].as_str().context("call_sid")?.to_owned();
    assert_eq!(body["status"], "queued");

    // What the gateway asked Twilio for.
    let requests = fake.requests().await;
    let create = requests.first().context("no create request")?;
    assert_eq!(
        create.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    assert_eq!(create.get("To"), Some("+15550002222"));
    assert_eq!(create.get("From"), Some("+15550001111"));
    assert_eq!(
        create.get("Url"),
        Some("https://gw.example.com/twilio-voice?agent=sales")
    );
    assert_eq!(
        create.get("StatusCallback"),
        Some("https://gw.example.com/twilio-status")
    );
    let events: Vec<&str> = create
        .form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(events, ["initiated", "ringing", "answered", "completed"]);

    // Twilio fetched the TwiML: the offer names the agent and says outbound.
    let offer = tokio::time::timeout(PATIENCE, worker.offers.recv())
        .await?
        .context("offer")?;
    assert_eq!(offer.call_sid, call_sid);
    assert_eq!(offer.agent_id, "sales");
    assert_eq!(offer.direction(), Direction::Outbound);
    assert_eq!(
        (offer.from.as_str(), offer.to.as_str()),
        ("+15550001111", "+15550002222")
    );

    // The stream runs: start, then caller audio.
    let (subject, start) = next_in(&mut inbound).await?;
    assert_eq!(subject, format!("voice.call.{call_sid}.in"));
    assert!(
        matches!(start.frame, Some(inbound_frame::Frame::Start(ref s)) if s.call_sid == call_sid)
    );
    let (_, audio) = next_in(&mut inbound).await?;
    assert!(matches!(audio.frame, Some(inbound_frame::Frame::Audio(_))));

    // The worker transfers the call.
    gw.send_out(
        &call_sid,
        OutboundFrame {
            epoch: 0,
            seq: 1,
            frame: Some(outbound_frame::Frame::Transfer(Transfer {
                to: "+15550009999".into(),
                announcement: "Connecting you to sales.".into(),
                ..Default::default()
            })),
        },
    )
    .await?;
    let stop = loop {
        let (_, frame) = next_in(&mut inbound).await?;
        if let Some(inbound_frame::Frame::Stop(stop)) = frame.frame {
            break stop;
        }
    };
    assert_eq!(stop.reason, "transfer");

    let call = switchboard_testkit::eventually(PATIENCE, "call completed", || async {
        let calls = fake.calls().await;
        let call = calls.get(&call_sid)?.clone();
        (call.status == "completed").then_some(call)
    })
    .await?;
    assert_eq!(call.transferred_to.as_deref(), Some("+15550009999"));
    let Instructions(verbs) = Instructions::parse(call.twiml.first().context("no TwiML")?)?;
    assert_eq!(
        verbs,
        vec![
            Verb::Say("Connecting you to sales.".into()),
            Verb::dial("+15550009999")
        ]
    );
    let update = fake
        .requests()
        .await
        .into_iter()
        .find(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json")))
        .context("no update request")?;
    assert!(update.get("Twiml").is_some());
    let report = call.report.context("no call report")?;
    assert!(report.connected);

    // Twilio's status callbacks became the call's status events, in order.
    let js = async_nats::jetstream::new(gw.nats.clone());
    let subject = gw.subjects.event(&call_sid, "status");
    let statuses = switchboard_testkit::eventually(PATIENCE, "four status events", || {
        let (js, subject) = (js.clone(), subject.to_string());
        async move {
            let stream = js.get_stream(EVENTS_STREAM).await.ok()?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    filter_subject: subject,
                    ..Default::default()
                })
                .await
                .ok()?;
            let mut batch = consumer
                .fetch()
                .max_messages(10)
                .expires(Duration::from_millis(300))
                .messages()
                .await
                .ok()?;
            let mut out = Vec::new();
            while let Some(Ok(msg)) = batch.next().await {
                out.push(CallEvent::decode(msg.payload.clone()).ok()?);
            }
            (out.len() == 4).then_some(out)
        }
    })
    .await?;
    let seen: Vec<(u64, String)> = statuses
        .iter()
        .map(|e| match &e.body {
            Some(call_event::Body::Status(s)) => (e.seq, s.status.clone()),
            other => panic!("not a status event: {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (GATEWAY_SEQ_BASE + 1, "initiated".to_owned()),
            (GATEWAY_SEQ_BASE + 2, "ringing".to_owned()),
            (GATEWAY_SEQ_BASE + 3, "in-progress".to_owned()),
            (GATEWAY_SEQ_BASE + 4, "completed".to_owned()),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_hangup_also_completes_the_call_by_rest() -> anyhow::Result<()> {
    let (gw, fake) = setup("[[step]]\npause_ms = 30000\n[[step]]\nhangup = true\n").await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let mut inbound = gw.nats.subscribe("voice.call.*.in").await?;
    barrier(&gw.nats).await?;
    let (status, body) = post_calls(
        &gw,
        Some(CALLS),
        r#"{"to":"+15550002222","from":"+15550001111"}"#,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let call_sid = body["call_sid"].as_str().context("call_sid")?.to_owned();
    let (_, start) = next_in(&mut inbound).await?;
    assert!(matches!(start.frame, Some(inbound_frame::Frame::Start(_))));
    gw.send_out(
        &call_sid,
        OutboundFrame {
            epoch: 0,
            seq: 1,
            frame: Some(outbound_frame::Frame::Hangup(switchboard_proto::Hangup {
                reason: "end_call".into(),
            })),
        },
    )
    .await?;
    let stop = loop {
        let (_, frame) = next_in(&mut inbound).await?;
        if let Some(inbound_frame::Frame::Stop(stop)) = frame.frame {
            break stop;
        }
    };
    assert_eq!(stop.reason, "hangup");
    let update = switchboard_testkit::eventually(PATIENCE, "Status=completed", || async {
        fake.requests()
            .await
            .into_iter()
            .find(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json")))
    })
    .await?;
    assert_eq!(update.get("Status"), Some("completed"));
    switchboard_testkit::eventually(PATIENCE, "call completed", || async {
        (fake.calls().await.get(&call_sid)?.status == "completed").then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn calls_go_only_to_allowed_destinations() -> anyhow::Result<()> {
    let (gw, fake) = setup("[[step]]\nhangup = true\n").await?;
    for to in [
        "+15550003333",
        "+15557761234",
        "+4415557770000",
        "sip:+15557771234@x",
    ] {
        let body = format!(r#"{{"to":"{to}","from":"+15550001111"}}"#);
        let (status, body) = post_calls(&gw, Some(CALLS), &body).await?;
        assert_eq!(status, 403, "{to}: {body}");
        assert_eq!(body["error"], "`to` is not in CALLS_ALLOWED_TO");
    }
    assert!(
        fake.requests().await.is_empty(),
        "a refused call reached Twilio"
    );
    // An exact entry and a prefix entry.
    for to in ["+15550002222", "+15557771234"] {
        let body = format!(r#"{{"to":"{to}","from":"+15550001111"}}"#);
        let (status, body) = post_calls(&gw, Some(CALLS), &body).await?;
        assert_eq!(status, 201, "{to}: {body}");
    }
    let dialed: Vec<String> = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with("/Calls.json"))
        .filter_map(|r| r.get("To").map(str::to_owned))
        .collect();
    assert_eq!(dialed, ["+15550002222", "+15557771234"]);
    Ok(())
}

#[tokio::test]
async fn without_an_allowlist_no_call_is_placed() -> anyhow::Result<()> {
    let port = switchboard_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&["--twilio-api-base", &base, "--calls-token", CALLS]).await?;
    let (status, body) = post_calls(
        &gw,
        Some(CALLS),
        r#"{"to":"+15550002222","from":"+15550001111"}"#,
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "no destination is allowed: set CALLS_ALLOWED_TO"
    );
    Ok(())
}

#[tokio::test]
async fn calls_are_rate_limited_with_retry_after() -> anyhow::Result<()> {
    let (gw, fake) = setup_with("[[step]]\nhangup = true\n", &["--calls-per-minute", "2"]).await?;
    let body = r#"{"to":"+15550002222","from":"+15550001111"}"#;
    // Refused requests do not use up the allowance.
    assert_eq!(post_calls(&gw, Some("wrong"), body).await?.0, 401);
    let refused = r#"{"to":"+15550003333","from":"+15550001111"}"#;
    assert_eq!(post_calls(&gw, Some(CALLS), refused).await?.0, 403);
    assert_eq!(post_calls(&gw, Some(CALLS), body).await?.0, 201);
    assert_eq!(post_calls(&gw, Some(CALLS), body).await?.0, 201);

    let resp = gw
        .http
        .post(gw.url("/calls"))
        .bearer_auth(CALLS)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .context("no Retry-After")?
        .to_str()?
        .parse()?;
    // One call every 30 s.
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let created = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with("/Calls.json"))
        .count();
    assert_eq!(created, 2);
    Ok(())
}
