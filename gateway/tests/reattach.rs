//! The re-attach path: `<Connect action>` and `<Stream statusCallback>` on the stream TwiML, and
//! `POST /twilio-connect-action` giving a live call a new stream on any gateway, bound to the
//! call's current owner epoch.

mod common;

use common::*;
use gateway::close;
use switchboard_proto::event::owner_seq;
use switchboard_proto::{
    CallEvent, CallOwner, Hangup, InboundFrame, Message as _, OutboundFrame, StreamStart,
    call_event, inbound_frame, outbound_frame,
};
use switchboard_twilio::media::{ServerMessage, TwilioMessage};
use switchboard_twilio::twiml::{Instructions, Verb};

const CALL: &str = "CA0000000000000000000000000000re01";

/// The form Twilio posts to the action URL when `<Connect>` ends: the standard call fields.
fn action_form(call_sid: &str, call_status: &str) -> Vec<(String, String)> {
    let mut pairs = voice_form(call_sid);
    for (k, v) in &mut pairs {
        if k == "CallStatus" {
            *v = call_status.to_owned();
        }
    }
    pairs
}

/// The path and query of an absolute URL under `PUBLIC_URL`.
fn public_path(url: &str) -> &str {
    url.strip_prefix(PUBLIC_URL)
        .expect("an absolute public URL")
}

/// The `<Connect action>` and stream token of a stream document.
fn stream_of(Instructions(verbs): &Instructions) -> (String, String) {
    match verbs.as_slice() {
        [
            Verb::ConnectStream {
                parameters,
                action: Some(action),
                ..
            },
        ] => {
            let token = parameters
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
                .expect("a token parameter");
            (action.clone(), token)
        }
        other => panic!("not a stream document: {other:?}"),
    }
}

async fn post_action(
    gw: &TestGateway,
    path: &str,
    call_status: &str,
) -> anyhow::Result<(u16, String)> {
    let resp = gw
        .post_form(path, &action_form(CALL, call_status), None)
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn start_of(frame: &InboundFrame) -> &StreamStart {
    match &frame.frame {
        Some(inbound_frame::Frame::Start(start)) => start,
        other => panic!("not a start: {other:?}"),
    }
}

/// A worker that took the call over claims epoch `epoch` with an `owner` event.
async fn claim_owner(gw: &TestGateway, epoch: u32) -> anyhow::Result<()> {
    let event = CallEvent {
        call_sid: CALL.to_owned(),
        seq: owner_seq(epoch, 1),
        at_ms: 1,
        body: Some(call_event::Body::Owner(CallOwner {
            epoch,
            worker_id: format!("worker-{epoch}"),
            reason: "worker_lost".to_owned(),
            ..Default::default()
        })),
    };
    async_nats::jetstream::new(gw.nats.clone())
        .publish(
            gw.subjects.event(CALL, "owner"),
            event.encode_to_vec().into(),
        )
        .await?
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_stream_twiml_names_absolute_action_and_status_urls() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let Instructions(verbs) = gw.voice_webhook(CALL).await?;
    let [
        Verb::ConnectStream {
            url,
            action,
            status_callback,
            status_callback_method,
            ..
        },
    ] = verbs.as_slice()
    else {
        panic!("{verbs:?}");
    };
    assert_eq!(url, "wss://gw.example.com/media");
    assert_eq!(
        action.as_deref(),
        Some("https://gw.example.com/twilio-connect-action?attach=0")
    );
    assert_eq!(
        status_callback.as_deref(),
        Some("https://gw.example.com/twilio-stream-status")
    );
    assert_eq!(status_callback_method.as_deref(), Some("POST"));

    // Both routes verify Twilio's signature like the voice webhook.
    for path in ["/twilio-connect-action?attach=0", "/twilio-stream-status"] {
        let resp = gw
            .post_form(path, &action_form(CALL, "in-progress"), Some(None))
            .await?;
        assert_eq!(resp.status(), 403, "{path}");
        let resp = gw
            .post_form(
                path,
                &action_form(CALL, "in-progress"),
                Some(Some("bm90IGEgc2lnbmF0dXJl".into())),
            )
            .await?;
        assert_eq!(resp.status(), 403, "{path}");
    }
    // An unknown stream event is refused.
    let mut form = action_form(CALL, "in-progress");
    form.push(("StreamSid".into(), "MZ1".into()));
    form.push(("StreamEvent".into(), "stream-paused".into()));
    let resp = gw.post_form("/twilio-stream-status", &form, None).await?;
    assert_eq!(resp.status(), 400);
    Ok(())
}

#[tokio::test]
async fn a_live_call_is_reattached_on_another_gateway_under_the_current_epoch() -> anyhow::Result<()>
{
    let a = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&a.nats).await?;
    let (_ws, mut inbound, first) = a.started_stream(CALL, "MZfirst").await?;
    let first = start_of(&first);
    assert_eq!((first.resumed, first.attach, first.epoch), (false, 1, 0));

    // Another worker took the call over meanwhile.
    claim_owner(&a, 2).await?;

    // Gateway A vanished; Twilio requests the action URL of the first stream on gateway B.
    let b = TestGateway::start_on(&a, &[]).await?;
    let (status, body) = post_action(&b, "/twilio-connect-action?attach=0", "in-progress").await?;
    assert_eq!(status, 200, "{body}");
    let (action, token) = stream_of(&Instructions::parse(&body)?);
    assert_eq!(
        action,
        "https://gw.example.com/twilio-connect-action?attach=1"
    );
    assert!(token.starts_with("1.2."), "{token}");

    // The same request again (a replay) gets no second token.
    let (status, _) = post_action(&b, "/twilio-connect-action?attach=0", "in-progress").await?;
    assert_eq!(status, 409);

    // The new stream opens on gateway B and tells the owner of epoch 2 to move the call.
    let mut ws = b.connect_media().await?;
    send_json(&mut ws, &TwilioMessage::connected()).await?;
    send_json(
        &mut ws,
        &start_message(CALL, "MZsecond", &[("token", &token)]),
    )
    .await?;
    let second = next_inbound(&mut inbound).await?;
    let second = start_of(&second);
    assert_eq!(second.stream_sid, "MZsecond");
    assert_eq!((second.resumed, second.attach, second.epoch), (true, 2, 2));

    // When `<Connect>` ends with the call (the caller hung up), the answer is to hang up.
    let (status, body) = post_action(&b, public_path(&action), "completed").await?;
    assert_eq!(status, 200);
    assert_eq!(Instructions::parse(&body)?.0, vec![Verb::Hangup]);
    Ok(())
}

#[tokio::test]
async fn a_call_the_gateway_ended_is_not_reattached() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let (mut ws, _inbound, _) = gw.started_stream(CALL, "MZfirst").await?;
    gw.send_out(
        CALL,
        OutboundFrame {
            frame: Some(outbound_frame::Frame::Hangup(Hangup {
                reason: "end_call".into(),
            })),
            ..Default::default()
        },
    )
    .await?;
    // The hang-up mark, echoed: everything played, the gateway closes the stream.
    let mark = loop {
        if let ServerMessage::Mark { mark, .. } = next_server_message(&mut ws).await? {
            break mark.name;
        }
    };
    send_json(
        &mut ws,
        &TwilioMessage::Mark {
            sequence_number: "9".into(),
            stream_sid: "MZfirst".into(),
            mark: switchboard_twilio::media::MarkName { name: mark },
        },
    )
    .await?;
    assert_eq!(expect_close(&mut ws).await?.0, close::NORMAL.code);

    // Twilio leaves `<Connect>` and requests the action URL with the call still in progress
    // (the REST hang-up is on its way): the answer is to hang up, never a new stream.
    let (status, body) = post_action(&gw, "/twilio-connect-action?attach=0", "in-progress").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(Instructions::parse(&body)?.0, vec![Verb::Hangup]);
    Ok(())
}

#[tokio::test]
async fn a_failed_stream_with_no_new_one_is_reattached_by_a_rest_update() -> anyhow::Result<()> {
    use callsim::twilio_rest::FakeTwilio;
    use callsim::{CallConfig, CallerScript};

    let port = switchboard_testkit::free_port();
    let api = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&["--twilio-api-base", &api]).await?;
    let _worker = accepting_worker(&gw.nats).await?;
    let mut cfg = CallConfig::new(&gw.url(""), AUTH_TOKEN);
    cfg.public_url = Some(PUBLIC_URL.to_owned());
    cfg.account_sid = ACCOUNT_SID.to_owned();
    let fake = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str("[[step]]\npause_ms = 8000\n[[step]]\nhangup = true\n")?,
    )
    .await?;
    let mut inbound = gw.nats.subscribe("voice.call.*.in").await?;
    barrier(&gw.nats).await?;

    // Twilio places a call to the gateway (as after `POST /calls`).
    let created: serde_json::Value = gw
        .http
        .post(format!(
            "{api}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
        ))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[
            ("To", "+15550001111"),
            ("From", "+15550001234"),
            ("Url", &format!("{PUBLIC_URL}/twilio-voice")),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let call_sid = created["sid"].as_str().unwrap_or_default().to_owned();
    let first = loop {
        let frame = next_inbound(&mut inbound).await?;
        if let Some(inbound_frame::Frame::Start(start)) = frame.frame {
            break start;
        }
    };
    assert_eq!(first.call_sid, call_sid);

    // Twilio reports the stream failed, and nothing requests the action URL.
    let mut form = action_form(&call_sid, "in-progress");
    form.retain(|(k, _)| k == "CallSid" || k == "AccountSid");
    form.extend([
        ("StreamSid".to_owned(), first.stream_sid.clone()),
        ("StreamName".to_owned(), first.stream_sid.clone()),
        ("StreamEvent".to_owned(), "stream-error".to_owned()),
        ("StreamError".to_owned(), "connection lost".to_owned()),
        ("Timestamp".to_owned(), "2026-01-01T00:00:00Z".to_owned()),
    ]);
    let resp = gw.post_form("/twilio-stream-status", &form, None).await?;
    assert_eq!(resp.status(), 204);

    // After the grace period the gateway updates the live call with a new stream (absolute
    // URLs: the fake refuses anything else, as Twilio does), and the call's second stream
    // starts under the same owner epoch.
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let frame = next_inbound(&mut inbound).await?;
            if let Some(inbound_frame::Frame::Start(start)) = frame.frame {
                return anyhow::Ok(start);
            }
        }
    })
    .await??;
    assert_eq!(second.call_sid, call_sid);
    assert_ne!(second.stream_sid, first.stream_sid);
    assert_eq!((second.resumed, second.attach, second.epoch), (true, 2, 0));
    let updates: Vec<_> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json")))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let twiml = updates[0].get("Twiml").unwrap_or_default();
    assert!(
        twiml.contains("action=\"https://gw.example.com/twilio-connect-action?attach=1\""),
        "{twiml}"
    );
    Ok(())
}
