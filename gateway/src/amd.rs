//! `POST /twilio-amd`: Twilio's asynchronous answering-machine verdict on an outbound call
//! (`AsyncAmdStatusCallback`, asked for by the dialer), verified like every webhook and
//! published as the call's `amd` event, which the dialer reads to learn that a campaign call
//! reached a voicemail box and the persister stores as the call's `answered_by`. The verdict
//! also goes to the call's owner on `voice.call.<sid>.in` (an `InboundFrame`), whose agent
//! holds its greeting for it.
//!
//! The worker learns that a verdict is coming from the offer (`CallOffer.async_amd`): whoever
//! creates a call with asynchronous AMD puts [`AMD_PARAMETER`]`=`[`ASYNC_AMD`] in the voice
//! webhook URL's query (covered by Twilio's signature like the rest of the URL). Twilio's voice
//! webhook itself does not say whether AMD runs (with `AsyncAmd=true` it carries no
//! `AnsweredBy`).
//!
//! Twilio posts the verdict once per call, so the event has one fixed seq in the gateway's
//! range ([`AMD_SEQ`]): a retried callback becomes the same `Nats-Msg-Id` and JetStream drops
//! the duplicate.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_proto::event::AnsweredBy;
use switchboard_proto::event::GATEWAY_SEQ_BASE;
use switchboard_proto::{AnsweringMachine, CallEvent, call_event, inbound_frame, now_ms};

use crate::shared::Shared;
use crate::webhook::{WebhookError, verified_form};

/// The route.
pub const AMD_PATH: &str = "/twilio-amd";
/// The voice webhook URL's query parameter saying the call was created with asynchronous AMD.
pub const AMD_PARAMETER: &str = "amd";
/// Its value.
pub const ASYNC_AMD: &str = "async";

/// Whether the voice webhook URL says the call runs asynchronous AMD.
pub fn async_amd_from_query(uri: &axum::http::Uri) -> bool {
    let Some(query) = uri.query() else {
        return false;
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs
        .iter()
        .any(|(k, v)| k == AMD_PARAMETER && v == ASYNC_AMD)
}
/// The seq of a call's `amd` event: above the status callbacks' (`GATEWAY_SEQ_BASE + 1 +
/// SequenceNumber`), below the lost-owner events'.
pub const AMD_SEQ: u64 = GATEWAY_SEQ_BASE + 500_000;

/// The `amd` event of a verdict.
pub fn amd_event(call_sid: &str, answered_by: &str, detection_ms: u32, at_ms: i64) -> CallEvent {
    CallEvent {
        call_sid: call_sid.to_owned(),
        seq: AMD_SEQ,
        at_ms,
        body: Some(call_event::Body::Amd(AnsweringMachine {
            answered_by: answered_by.to_owned(),
            detection_ms,
        })),
    }
}

/// `POST /twilio-amd`.
pub async fn verdict(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, pairs) =
        match verified_form(&shared, AMD_PATH, &parts.uri, &parts.headers, body).await {
            Ok(verified) => verified,
            Err(error) => return error.into_response(),
        };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(answered_by) = field("AnsweredBy").and_then(AnsweredBy::parse) else {
        return WebhookError::BadCall("missing or unknown `AnsweredBy`".into()).into_response();
    };
    let detection_ms = field("MachineDetectionDuration")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tracing::info!(call_sid = %form.call_sid, %answered_by, detection_ms, "answering-machine verdict");
    shared.events.publish(amd_event(
        &form.call_sid,
        answered_by.as_str(),
        detection_ms,
        now_ms(),
    ));
    // The owner acts on it (a call without a live owner has nobody to greet).
    let frame = inbound_frame::Frame::Amd(AnsweringMachine {
        answered_by: answered_by.as_str().to_owned(),
        detection_ms,
    });
    crate::dial::publish(&shared, &form.call_sid, frame).await;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_call_in_the_gateway_range() {
        let ev = amd_event("CA1", "machine_end_beep", 2400, 7);
        assert_eq!(ev.kind(), "amd");
        assert_eq!(ev.msg_id(), format!("CA1:{AMD_SEQ}"));
        const { assert!(AMD_SEQ > GATEWAY_SEQ_BASE + 1000 && AMD_SEQ < crate::takeover::LOST_OWNER_SEQ) };
    }

    #[test]
    fn the_voice_url_says_whether_amd_runs() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert!(async_amd_from_query(&uri(
            "/twilio-voice?agent=a&amd=async"
        )));
        assert!(!async_amd_from_query(&uri("/twilio-voice?agent=a")));
        assert!(!async_amd_from_query(&uri("/twilio-voice?amd=yes")));
        assert!(!async_amd_from_query(&uri("/twilio-voice")));
    }
}
