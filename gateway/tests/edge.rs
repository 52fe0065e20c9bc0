//! What an unauthenticated request can cost at the edge: webhook bodies are refused before they
//! are read or parsed beyond small limits, a replayed voice webhook opens nothing, and the media
//! upgrade decodes no oversized header.

mod common;

use std::time::Duration;

use common::*;
use gateway::webhook::{MAX_BODY_BYTES, MAX_FORM_FIELDS};

const CALL: &str = "CA0123456789abcdef0123456789abcdef";

/// A request is refused this fast when nothing but its head had to be looked at.
const PROMPT: Duration = Duration::from_secs(2);

fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: gw.example.com\r\n\
         content-type: application/x-www-form-urlencoded\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn an_unsigned_webhook_is_refused_before_its_body_is_read() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    for path in ["/twilio-voice", "/twilio-status"] {
        // Claims a megabyte and sends almost none of it: the answer does not wait for it.
        let (status, took) = raw_request(
            gw.addr,
            &head(path, "content-length: 1048576\r\n"),
            b"CallSid=CA1&",
            false,
        )
        .await?;
        assert_eq!(status, 403, "{path}");
        assert!(took < PROMPT, "{path}: {took:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_megabyte_webhook_is_413_without_being_buffered() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let worker = accepting_worker(&gw.nats).await?;
    let megabyte = "a&".repeat(512 * 1024);
    let signed = "x-twilio-signature: bm9wZQ==\r\n";

    for path in ["/twilio-voice", "/twilio-status"] {
        // Declared: refused on the header alone.
        let (status, took) = raw_request(
            gw.addr,
            &head(
                path,
                &format!("{signed}content-length: {}\r\n", megabyte.len()),
            ),
            megabyte.as_bytes(),
            true,
        )
        .await?;
        assert_eq!(status, 413, "{path}");
        assert!(took < PROMPT, "{path}: {took:?}");

        // Chunked, so the size is not declared: refused once the limit is passed, while the
        // rest of the upload has not even been sent.
        let first = "a&".repeat(MAX_BODY_BYTES / 2 + 1);
        let chunk = format!("{:x}\r\n{first}\r\n", first.len());
        let (status, took) = raw_request(
            gw.addr,
            &head(path, &format!("{signed}transfer-encoding: chunked\r\n")),
            chunk.as_bytes(),
            false,
        )
        .await?;
        assert_eq!(status, 413, "{path}");
        assert!(took < PROMPT, "{path}: {took:?}");
    }

    // Under the size limit but with more fields than any Twilio request.
    let fields: Vec<(String, String)> = (0..=MAX_FORM_FIELDS)
        .map(|i| (format!("F{i}"), String::new()))
        .collect();
    let resp = gw.post_form("/twilio-voice", &fields, None).await?;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await?.contains("form fields"));

    // A query string no Twilio URL has.
    let long = format!("/twilio-voice?agent={}", "a".repeat(2048));
    let resp = gw.post_form(&long, &voice_form(CALL), None).await?;
    assert_eq!(resp.status(), 414);

    // None of it was offered, and a normal webhook still works.
    let mut worker = worker;
    assert!(worker.offers.try_recv().is_err());
    gw.voice_webhook(CALL).await?;
    assert_eq!(
        worker.offers.recv().await.map(|o| o.call_sid).as_deref(),
        Some(CALL)
    );
    Ok(())
}

#[tokio::test]
async fn a_replayed_voice_webhook_offers_nothing() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let mut worker = accepting_worker(&gw.nats).await?;
    let token = gw.token_for(CALL).await?;
    assert!(worker.offers.recv().await.is_some());

    // The same signed request again, as captured: refused, no second offer, no token.
    let replay = gw
        .post_form("/twilio-voice", &voice_form(CALL), None)
        .await?;
    assert_eq!(replay.status(), 409);
    let text = replay.text().await?;
    assert!(
        !text.contains(&token) && !text.contains("<Stream"),
        "{text}"
    );
    barrier(&gw.nats).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(worker.offers.try_recv().is_err(), "a replay was offered");

    // A replay to another replica sharing the bucket is refused the same way.
    let other = TestGateway::start_on(&gw, &[]).await?;
    let replay = other
        .post_form("/twilio-voice", &voice_form(CALL), None)
        .await?;
    assert_eq!(replay.status(), 409);

    // Another call is offered as usual.
    gw.voice_webhook("CA_another_call").await?;
    assert_eq!(
        worker.offers.recv().await.map(|o| o.call_sid).as_deref(),
        Some("CA_another_call")
    );
    Ok(())
}

#[tokio::test]
async fn an_oversized_signature_is_not_decoded() -> anyhow::Result<()> {
    let gw = TestGateway::start(&[]).await?;
    let huge = "A".repeat(64 * 1024);
    let resp = gw
        .post_form("/twilio-voice", &voice_form(CALL), Some(Some(huge.clone())))
        .await?;
    assert_eq!(resp.status(), 403);
    let refused = gw.connect_media_with(Some(&huge)).await;
    assert!(refused.is_err(), "upgrade with a 64 KiB signature accepted");
    Ok(())
}
