//! Transfers that ring and may come back, and keys on the line: the TwiML the gateway updates
//! the call with, `POST /twilio-dial-action` and `POST /twilio-dial-status` telling the owner
//! how the transfer went and bringing an unanswered caller back on a new stream, and
//! `<Play digits>` restarting the stream.

mod common;

use callsim::twilio_rest::{FakeTwilio, RestRequest};
use callsim::{CallConfig, CallerScript};
use common::*;
use switchboard_proto::{
    InboundFrame, OutboundFrame, SendDigits, Transfer, inbound_frame, outbound_frame,
};
use switchboard_twilio::media::{ServerMessage, TwilioMessage};
use switchboard_twilio::twiml::{Instructions, Verb};

const CALL: &str = "CA0000000000000000000000000000dl01";

/// A gateway whose Twilio REST API is callsim's fake (which records every request).
async fn gateway() -> anyhow::Result<(TestGateway, FakeTwilio)> {
    let port = switchboard_testkit::free_port();
    let api = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&["--twilio-api-base", &api]).await?;
    let mut cfg = CallConfig::new(&gw.url(""), AUTH_TOKEN);
    cfg.public_url = Some(PUBLIC_URL.to_owned());
    cfg.account_sid = ACCOUNT_SID.to_owned();
    let fake = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str("[[step]]\nhangup = true\n")?,
    )
    .await?;
    Ok((gw, fake))
}

fn out(frame: outbound_frame::Frame) -> OutboundFrame {
    OutboundFrame {
        epoch: 0,
        seq: 1,
        frame: Some(frame),
    }
}

/// The `Twiml` of the gateway's first update of `CALL`.
async fn update_of(fake: &FakeTwilio) -> anyhow::Result<String> {
    let request: RestRequest =
        switchboard_testkit::eventually(PATIENCE, "the call update", || async {
            fake.requests()
                .await
                .into_iter()
                .find(|r| r.path.ends_with(&format!("/Calls/{CALL}.json")))
        })
        .await?;
    Ok(request.get("Twiml").unwrap_or_default().to_owned())
}

/// Twilio leaves the stream for the update's TwiML.
async fn twilio_stops(ws: &mut Ws, stream_sid: &str) -> anyhow::Result<()> {
    send_json(
        ws,
        &TwilioMessage::Stop {
            sequence_number: "9".into(),
            stream_sid: stream_sid.into(),
            stop: Default::default(),
        },
    )
    .await
}

/// The next frame on `.in` that is not media or a recording report.
async fn next_frame(inbound: &mut async_nats::Subscriber) -> anyhow::Result<inbound_frame::Frame> {
    loop {
        if let InboundFrame {
            frame: Some(frame), ..
        } = next_inbound(inbound).await?
            // Audio, and the report of a stream's recording (sent once it is stored, so it
            // lands among the transfer's frames at a time of its own), are not what these tests
            // follow.
            && !matches!(
                frame,
                inbound_frame::Frame::Audio(_) | inbound_frame::Frame::Recorded(_)
            )
        {
            return Ok(frame);
        }
    }
}

/// Twilio opens the call's next stream with `token`; the owner's resumed `start`.
async fn second_stream(
    gw: &TestGateway,
    inbound: &mut async_nats::Subscriber,
    token: &str,
) -> anyhow::Result<switchboard_proto::StreamStart> {
    let mut ws = gw.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(
        &mut ws,
        &start_message(CALL, "MZsecond", &[("token", token)]),
    )
    .await?;
    loop {
        if let inbound_frame::Frame::Start(start) = next_frame(inbound).await? {
            assert_eq!(start.stream_sid, "MZsecond");
            // The socket stays open until the start is through.
            drop(ws);
            return Ok(start);
        }
    }
}

fn dial_form(call_status: &str, dial_status: Option<&str>) -> Vec<(String, String)> {
    let mut pairs = voice_form(CALL);
    for (k, v) in &mut pairs {
        if k == "CallStatus" {
            *v = call_status.to_owned();
        }
    }
    if let Some(status) = dial_status {
        pairs.push(("DialCallStatus".into(), status.into()));
        pairs.push((
            "DialCallSid".into(),
            "CA00000000000000000000000000000dd1".into(),
        ));
    }
    pairs
}

fn result(frame: &inbound_frame::Frame) -> Option<&str> {
    match frame {
        inbound_frame::Frame::TransferResult(r) => Some(r.status.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn an_unanswered_transfer_brings_the_caller_back_once() -> anyhow::Result<()> {
    let (gw, fake) = gateway().await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, "MZfirst").await?;
    gw.send_out(
        CALL,
        out(outbound_frame::Frame::Transfer(Transfer {
            to: "+15550002222".into(),
            announcement: String::new(),
            timeout_seconds: 12,
            ..Default::default()
        })),
    )
    .await?;
    // A dial that rings for the agent's timeout and reports back, with absolute URLs.
    let Instructions(verbs) = Instructions::parse(&update_of(&fake).await?)?;
    assert_eq!(
        verbs,
        vec![Verb::Dial {
            number: "+15550002222".into(),
            timeout_seconds: Some(12),
            action: Some("https://gw.example.com/twilio-dial-action".into()),
            status_callback: Some("https://gw.example.com/twilio-dial-status".into()),
            status_callback_event: Some("answered".into()),
        }]
    );
    twilio_stops(&mut ws, "MZfirst").await?;
    let stop = next_frame(&mut inbound).await?;
    assert!(
        matches!(&stop, inbound_frame::Frame::Stop(s) if s.reason == "transfer"),
        "{stop:?}"
    );

    // Nobody answers: the owner hears why, and the caller gets a new stream.
    let resp = gw
        .post_form(
            "/twilio-dial-action",
            &dial_form("in-progress", Some("no-answer")),
            None,
        )
        .await?;
    assert_eq!(resp.status(), 200);
    let Instructions(verbs) = Instructions::parse(&resp.text().await?)?;
    let [
        Verb::ConnectStream {
            action, parameters, ..
        },
    ] = verbs.as_slice()
    else {
        panic!("{verbs:?}");
    };
    assert_eq!(
        action.as_deref(),
        Some("https://gw.example.com/twilio-connect-action?attach=1")
    );
    let token = &parameters
        .iter()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1;
    assert_eq!(result(&next_frame(&mut inbound).await?), Some("no-answer"));

    // The same request again brings nobody back a second time.
    let resp = gw
        .post_form(
            "/twilio-dial-action",
            &dial_form("in-progress", Some("no-answer")),
            None,
        )
        .await?;
    assert_eq!(resp.status(), 409);

    // The caller's new stream reaches the owner as a resumed start.
    let start = second_stream(&gw, &mut inbound, token).await?;
    assert_eq!((start.resumed, start.attach), (true, 2));
    Ok(())
}

#[tokio::test]
async fn answered_and_finished_transfers_reach_the_owner_and_hang_up() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut inbound = gw.nats.subscribe(gw.subjects.call_in(CALL)).await?;
    barrier(&gw.nats).await?;

    // The dialed call's `answered` callback names the caller's call as its parent.
    let mut answered = dial_form("in-progress", None);
    for (k, v) in &mut answered {
        if k == "CallSid" {
            *v = "CA00000000000000000000000000000dd1".into();
        }
    }
    answered.push(("ParentCallSid".into(), CALL.into()));
    answered.push(("CallbackSource".into(), "call-progress-events".into()));
    let resp = gw.post_form("/twilio-dial-status", &answered, None).await?;
    assert_eq!(resp.status(), 204);
    assert_eq!(result(&next_frame(&mut inbound).await?), Some("answered"));

    // The bridged call ended: hang up.
    let resp = gw
        .post_form(
            "/twilio-dial-action",
            &dial_form("in-progress", Some("completed")),
            None,
        )
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        Instructions::parse(&resp.text().await?)?.0,
        vec![Verb::Hangup]
    );
    assert_eq!(result(&next_frame(&mut inbound).await?), Some("completed"));
    // The caller hung up while it rang: hang up too, never a new stream.
    let resp = gw
        .post_form(
            "/twilio-dial-action",
            &dial_form("completed", Some("canceled")),
            None,
        )
        .await?;
    assert_eq!(
        Instructions::parse(&resp.text().await?)?.0,
        vec![Verb::Hangup]
    );
    assert_eq!(result(&next_frame(&mut inbound).await?), Some("canceled"));
    let stop = next_frame(&mut inbound).await?;
    assert!(
        matches!(&stop, inbound_frame::Frame::Stop(s) if s.reason == "stop"),
        "{stop:?}"
    );

    // Bad requests.
    let status = |resp: reqwest::Response| resp.status().as_u16();
    let no_parent = dial_form("in-progress", None);
    assert_eq!(
        status(
            gw.post_form("/twilio-dial-status", &no_parent, None)
                .await?
        ),
        400
    );
    let unknown = dial_form("in-progress", Some("ringing"));
    assert_eq!(
        status(gw.post_form("/twilio-dial-action", &unknown, None).await?),
        400
    );
    for path in ["/twilio-dial-action", "/twilio-dial-status"] {
        let form = dial_form("in-progress", Some("no-answer"));
        assert_eq!(
            status(gw.post_form(path, &form, Some(None)).await?),
            403,
            "{path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn keys_are_played_and_the_call_comes_back_on_its_next_stream() -> anyhow::Result<()> {
    let (gw, fake) = gateway().await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, "MZfirst").await?;

    // Keys `<Play digits>` cannot play are refused and the stream goes on.
    gw.send_out(
        CALL,
        out(outbound_frame::Frame::SendDigits(SendDigits {
            digits: "12a".into(),
        })),
    )
    .await?;
    gw.send_out(
        CALL,
        out(outbound_frame::Frame::Mark(switchboard_proto::Mark {
            name: "after-keys".into(),
        })),
    )
    .await?;
    let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? else {
        panic!("expected the mark");
    };
    assert_eq!(mark.name, "after-keys");

    gw.send_out(
        CALL,
        out(outbound_frame::Frame::SendDigits(SendDigits {
            digits: "1w2#".into(),
        })),
    )
    .await?;
    let Instructions(verbs) = Instructions::parse(&update_of(&fake).await?)?;
    let [
        Verb::PlayDigits(digits),
        Verb::ConnectStream {
            parameters, action, ..
        },
    ] = verbs.as_slice()
    else {
        panic!("{verbs:?}");
    };
    assert_eq!(digits, "1w2#");
    assert_eq!(
        action.as_deref(),
        Some("https://gw.example.com/twilio-connect-action?attach=1")
    );
    let token = &parameters
        .iter()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1;

    // Twilio leaves the stream to play them: `digits`, which ends nothing.
    twilio_stops(&mut ws, "MZfirst").await?;
    let stop = next_frame(&mut inbound).await?;
    assert!(
        matches!(&stop, inbound_frame::Frame::Stop(s) if s.reason == "digits"),
        "{stop:?}"
    );
    // Its `<Connect>` action is not followed with a second stream (the keys' one is issued) ...
    let mut form = voice_form(CALL);
    form.retain(|(k, _)| k != "CallStatus");
    form.push(("CallStatus".into(), "in-progress".into()));
    let resp = gw
        .post_form("/twilio-connect-action?attach=0", &form, None)
        .await?;
    assert_eq!(resp.status(), 409);
    // ... and the next stream opens.
    let start = second_stream(&gw, &mut inbound, token).await?;
    assert_eq!((start.resumed, start.attach), (true, 2));
    Ok(())
}

#[tokio::test]
async fn a_warm_transfer_holds_the_caller_and_an_unanswered_human_brings_them_back()
-> anyhow::Result<()> {
    let (gw, fake) = gateway().await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, mut inbound, _) = gw.started_stream(CALL, "MZfirst").await?;
    gw.send_out(
        CALL,
        out(outbound_frame::Frame::Transfer(Transfer {
            to: "+15550002222".into(),
            timeout_seconds: 20,
            whisper: "Maria wants to move her appointment.".into(),
            caller_id: "+15550001111".into(),
            ..Default::default()
        })),
    )
    .await?;
    // On hold in the conference named after the call ...
    let Instructions(hold) = Instructions::parse(&update_of(&fake).await?)?;
    assert_eq!(
        hold,
        vec![Verb::Conference {
            name: CALL.into(),
            starts: false,
            ends: true,
            action: Some("https://gw.example.com/twilio-dial-action".into()),
        }]
    );
    // (This fake does not know the call, so it answers the hold with 404: the caller is gone,
    // and the human is not called. The e2e tests follow a placed call through.)
    twilio_stops(&mut ws, "MZfirst").await?;
    let stop = next_frame(&mut inbound).await?;
    assert!(
        matches!(&stop, inbound_frame::Frame::Stop(s) if s.reason == "transfer"),
        "{stop:?}"
    );

    // The human's call rings out: its final status callback takes the caller off hold.
    let path = format!("/twilio-dial-status?parent={CALL}");
    let mut form = dial_form("no-answer", None);
    for (k, v) in &mut form {
        if k == "CallSid" {
            *v = "CA00000000000000000000000000000dd2".into();
        }
    }
    let resp = gw.post_form(&path, &form, None).await?;
    assert_eq!(resp.status(), 204);
    assert_eq!(result(&next_frame(&mut inbound).await?), Some("no-answer"));
    let back: RestRequest = switchboard_testkit::eventually(PATIENCE, "the re-attach", || async {
        fake.requests()
            .await
            .into_iter()
            .filter(|r| r.path.ends_with(&format!("/Calls/{CALL}.json")))
            .nth(1)
    })
    .await?;
    let Instructions(verbs) = Instructions::parse(back.get("Twiml").unwrap_or_default())?;
    assert!(
        matches!(verbs.as_slice(), [Verb::ConnectStream { action: Some(a), .. }]
            if a == "https://gw.example.com/twilio-connect-action?attach=1"),
        "{verbs:?}"
    );
    Ok(())
}
