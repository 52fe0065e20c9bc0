//! Transfers that ring and may come back, and keys pressed on the line: the TwiML the gateway
//! updates a live call with, and the routes Twilio reports their progress to.
//!
//! A `Transfer` frame with `timeout_seconds` updates the call with
//! `<Dial timeout action="/twilio-dial-action"><Number statusCallbackEvent="answered"
//! statusCallback="/twilio-dial-status">` ([`dial_twiml`]). Twilio leaves `<Connect>` (the
//! stream stops with reason `transfer`, and the gateway records that it ended the call, so no
//! stream status callback re-attaches it meanwhile) and rings the number:
//!
//! - the human answers: Twilio posts the `<Number>` status callback (`CallStatus=in-progress`,
//!   `ParentCallSid` = the caller's call) to [`dial_status`], which tells the call's owner
//!   `TransferResult { status: "answered" }` on `voice.call.<sid>.in` (after probing it: an owner
//!   that died while the number rang gets its record closed `transferred` by the gateway);
//! - when the dial ends, Twilio requests the `<Dial>` action ([`dial_action`]) with
//!   `DialCallStatus`: the owner is told the status; `completed` / `answered` gets `<Hangup/>`,
//!   and so does a caller who hung up while it rang (the owner then also gets a `stop`, so the
//!   call ends `caller_hung_up`); `busy`, `no-answer`, `failed` or `canceled` with the caller still
//!   on the line takes back the gateway's end of the call and answers the re-attach TwiML of
//!   [`crate::reattach`] (a one-time token under the owner's epoch), so the caller is back with
//!   the agent on a new stream. A second request for the same transfer finds no end to take
//!   back and gets 409.
//!
//! A `SendDigits` frame updates the call with `<Play digits>` followed by the re-attach
//! `<Connect><Stream>` ([`digits_twiml`]): Twilio stops the stream (reason `digits`, which does
//! not end the call), plays the tones, and opens the next stream, which the owner moves the call
//! onto. Twilio documents no way to send tones into a bidirectional stream as audio, so this is
//! the only documented way to press keys; the line is silent while it happens.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_proto::event::{DialStatus, EndReason, StopReason};
use switchboard_proto::{InboundFrame, Message as _, TransferResult, inbound_frame};
use switchboard_twilio::twiml::{self, ConferenceRoom, DialNumber};
use tracing::Instrument as _;

use crate::metrics as m;
use crate::owner::{MIN_PROBE_AFTER, PROBE_FRACTION, ProbeAnswer};
use crate::reattach::{self, Reattach, ReattachError};
use crate::shared::Shared;
use crate::takeover::{LostCall, close_record};
use crate::twilio_rest::{CallUpdate, NewTwimlCall, Updated};
use crate::webhook::{twiml_response, verified_form};

/// `<Dial action>`: Twilio requests it when a transfer's dial ends.
pub const DIAL_ACTION_PATH: &str = "/twilio-dial-action";
/// `<Number statusCallback>`: Twilio reports the transfer's human answering here.
pub const DIAL_STATUS_PATH: &str = "/twilio-dial-status";
/// The `<Dial timeout>` range Twilio accepts.
const TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 5..=600;

/// The TwiML of a transfer to `to` that rings for `timeout_seconds` (clamped to what Twilio
/// takes) and reports back to the gateway.
pub fn dial_twiml(shared: &Shared, to: &str, timeout_seconds: u32) -> String {
    let action = shared.validator.url(DIAL_ACTION_PATH);
    let answered = shared.validator.url(DIAL_STATUS_PATH);
    twiml::Response::new()
        .dial_with(&DialNumber {
            number: to,
            timeout_seconds: timeout_seconds.clamp(*TIMEOUT_RANGE.start(), *TIMEOUT_RANGE.end()),
            action: &action,
            answered_callback: &answered,
        })
        .build()
}

/// The query parameter of a warm transfer's status callback naming the caller's call.
pub const PARENT_QUERY: &str = "parent";

/// A warm transfer of `call_sid` to `to`: the caller is put on hold in a conference named after
/// the call (a REST update, which ends the stream), then the human is called with TwiML that
/// says `whisper` (Twilio's voice) and joins them to it. When that call is not answered, the
/// status callback brings the caller back ([`dial_status`]); when it cannot be placed, the
/// caller is brought back here.
pub async fn warm_transfer(
    shared: &Shared,
    call_sid: &str,
    to: &str,
    caller_id: &str,
    whisper: &str,
    timeout_seconds: u32,
) {
    let action = shared.validator.url(DIAL_ACTION_PATH);
    let hold = twiml::Response::new()
        .conference(&ConferenceRoom {
            name: call_sid,
            starts: false,
            action: Some(&action),
        })
        .build();
    match shared
        .rest
        .update_call(call_sid, &CallUpdate::Twiml(hold))
        .await
    {
        Ok(Updated::Applied) => {}
        Ok(Updated::AlreadyEnded) => return,
        Err(error) => {
            metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind())).increment(1);
            tracing::warn!(%error, "putting the caller on hold failed");
            return;
        }
    }
    let human = twiml::Response::new()
        .say(whisper)
        .conference(&ConferenceRoom {
            name: call_sid,
            starts: true,
            action: None,
        })
        .build();
    let call = NewTwimlCall {
        to: to.to_owned(),
        from: caller_id.to_owned(),
        twiml: human,
        timeout_seconds: timeout_seconds.clamp(*TIMEOUT_RANGE.start(), *TIMEOUT_RANGE.end()),
        status_callback: shared
            .validator
            .url(&format!("{DIAL_STATUS_PATH}?{PARENT_QUERY}={call_sid}")),
    };
    match shared.rest.create_twiml_call(&call).await {
        Ok(created) => {
            tracing::info!(human_call = %created.sid, "warm transfer: calling the human")
        }
        Err(error) => {
            metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind())).increment(1);
            tracing::warn!(%error, "warm transfer: the human's call could not be placed");
            return_caller(shared, call_sid, DialStatus::Failed).await;
        }
    }
}

/// A warm transfer's human did not take the call: the owner is told, and the caller is taken
/// out of the conference onto a new stream.
async fn return_caller(shared: &Shared, call_sid: &str, status: DialStatus) {
    publish_result(shared, call_sid, status).await;
    let doc = match come_back(shared, call_sid).await {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            tracing::debug!("the caller was brought back already");
            return;
        }
        Err(error) => {
            metrics::counter!(m::CLAIM_ERRORS, "what" => "reattach").increment(1);
            tracing::error!(%error, "cannot bring the caller back");
            return;
        }
    };
    match shared
        .rest
        .update_call(call_sid, &CallUpdate::Twiml(doc))
        .await
    {
        Ok(Updated::Applied) => {
            metrics::counter!(m::REATTACHES, "via" => m::REATTACH_VIA_DIAL).increment(1);
            tracing::info!("warm transfer not taken: the caller is back with the agent");
        }
        Ok(Updated::AlreadyEnded) => tracing::debug!("the caller had hung up"),
        Err(error) => {
            metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind())).increment(1);
            tracing::warn!(%error, "taking the caller off hold failed");
        }
    }
}

/// The TwiML that presses `digits` on `call_sid`'s line and brings the call back on a new
/// stream (the call's next stream token is issued here).
pub async fn digits_twiml(
    shared: &Shared,
    call_sid: &str,
    digits: &str,
) -> Result<Reattach, ReattachError> {
    let before = twiml::Response::new().play_digits(digits);
    reattach::reattach_after(shared, call_sid, None, before).await
}

/// Tells the owner of `call_sid` how its transfer went.
async fn publish_result(shared: &Shared, call_sid: &str, status: DialStatus) {
    metrics::counter!(m::TRANSFER_RESULTS, "status" => status.as_str()).increment(1);
    let result = inbound_frame::Frame::TransferResult(TransferResult {
        status: status.as_str().to_owned(),
    });
    publish(shared, call_sid, result).await;
}

/// The human took the caller of `call_sid`: before the owner is told (which ends its call and
/// its subscriptions), it is probed. One that died while the number rang cannot record the end
/// (no gateway watches an owner while the call has no stream, and no stream comes back now), so
/// on "no responders" (its subscriptions went with its process) the gateway closes the record
/// itself, `transferred`, under its own fencing claim. An owner that answers, or says nothing
/// within the probe's time, records the end itself.
async fn close_if_owner_gone(shared: &Shared, call_sid: &str) {
    let js = async_nats::jetstream::new(shared.nats.clone());
    let subject = shared.subjects.event(call_sid, "owner");
    let owner = match switchboard_service::events::last_owner_message(&js, &subject).await {
        Ok(Some(last)) => last.owner,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "reading the call's owner after its transfer failed");
            return;
        }
    };
    let probe_timeout = (shared.worker_silence / PROBE_FRACTION).max(MIN_PROBE_AFTER);
    let answer = crate::takeover::probe(
        shared.nats.clone(),
        shared.subjects.call_owner(call_sid),
        owner.epoch,
        probe_timeout,
    )
    .await;
    if answer != ProbeAnswer::NoResponders {
        return;
    }
    tracing::warn!(worker_id = %owner.worker_id, epoch = owner.epoch,
        "the call's owner is gone and the human took the caller: closing the record");
    let lost = LostCall {
        call_sid: call_sid.to_owned(),
        gateway_id: shared.gateway_id.clone(),
        epoch: owner.epoch,
        previous_worker_id: owner.worker_id,
        agent_id: owner.agent_id,
        gap_ms: 0,
        duration_ms: 0,
        reason: EndReason::Transferred,
    };
    // The caller's last stream ended when the transfer began, and its recording went to the
    // owner that died (and into its own `recording` event), so this `ended` carries none.
    let recording = std::future::ready(None);
    if let Err(error) = close_record(&js, &shared.events, &shared.subjects, &lost, recording).await
    {
        tracing::error!(%error, "closing the record of a transferred call failed");
    }
}

/// Publishes `frame` to the owner of `call_sid` (outside any stream: `seq` 0).
pub(crate) async fn publish(shared: &Shared, call_sid: &str, frame: inbound_frame::Frame) {
    let payload = InboundFrame {
        seq: 0,
        frame: Some(frame),
    }
    .encode_to_vec();
    if let Err(error) = shared
        .nats
        .publish(shared.subjects.call_in(call_sid), payload.into())
        .await
    {
        metrics::counter!(m::NATS_PUBLISH_ERRORS).increment(1);
        tracing::warn!(%error, "publishing to the call's owner failed");
    }
}

/// `POST /twilio-dial-action`: a transfer's dial ended; hang up, or bring the caller back.
pub async fn dial_action(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, pairs) =
        match verified_form(&shared, DIAL_ACTION_PATH, &parts.uri, &parts.headers, body).await {
            Ok(verified) => verified,
            Err(error) => return error.into_response(),
        };
    let Some(status) = field(&pairs, "DialCallStatus").and_then(DialStatus::parse) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing or unknown `DialCallStatus`",
        )
            .into_response();
    };
    let span = tracing::info_span!(parent: None, "dial_action", call_sid = %form.call_sid, %status);
    async move {
        publish_result(&shared, &form.call_sid, status).await;
        if !status.connected() && form.call_status != "in-progress" {
            // The caller hung up while it rang: the call is over for the owner too.
            publish(
                &shared,
                &form.call_sid,
                crate::frames::stop(StopReason::Stop),
            )
            .await;
        }
        if status.connected() || form.call_status != "in-progress" {
            tracing::info!(call_status = %form.call_status, "transfer over: hanging up");
            return twiml_response(twiml::Response::new().hangup().build());
        }
        match come_back(&shared, &form.call_sid).await {
            Ok(Some(doc)) => {
                metrics::counter!(m::REATTACHES, "via" => m::REATTACH_VIA_DIAL).increment(1);
                tracing::info!("transfer not answered: the caller is back with the agent");
                twiml_response(doc)
            }
            Ok(None) => {
                metrics::counter!(m::WEBHOOK_REPLAYS).increment(1);
                tracing::warn!("dial action for a transfer already followed");
                (StatusCode::CONFLICT, "transfer already followed").into_response()
            }
            Err(error) => {
                metrics::counter!(m::CLAIM_ERRORS, "what" => "reattach").increment(1);
                tracing::error!(%error, "cannot bring the caller back");
                (StatusCode::SERVICE_UNAVAILABLE, "re-attach unavailable").into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Takes back the gateway's end of a transfer and re-attaches the call (None: it was not
/// ended by a transfer, or was re-attached already).
async fn come_back(shared: &Shared, call_sid: &str) -> Result<Option<String>, ReattachError> {
    let claims = shared.claims().await?;
    if !claims
        .clear_ended(call_sid, StopReason::Transfer.as_str())
        .await?
    {
        return Ok(None);
    }
    match reattach::reattach(shared, call_sid, None).await? {
        Reattach::Stream(doc) => Ok(Some(doc)),
        Reattach::Ended(_) | Reattach::Stale => Ok(None),
    }
}

/// `POST /twilio-dial-status`: the transfer's human answered (`CallStatus=in-progress` of the
/// dialed call, whose `ParentCallSid` is the caller's).
pub async fn dial_status(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, pairs) =
        match verified_form(&shared, DIAL_STATUS_PATH, &parts.uri, &parts.headers, body).await {
            Ok(verified) => verified,
            Err(error) => return error.into_response(),
        };
    // A cold transfer's dialed call is a child of the caller's; a warm transfer's call to the
    // human names the caller's call in its (signed) callback URL.
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let warm_parent = query
        .iter()
        .find(|(k, _)| k == PARENT_QUERY)
        .map(|(_, v)| v.as_str());
    let Some(parent) = warm_parent
        .or_else(|| field(&pairs, "ParentCallSid"))
        .filter(|p| !p.is_empty())
    else {
        return (StatusCode::BAD_REQUEST, "missing `ParentCallSid`").into_response();
    };
    if switchboard_proto::subject::validate_call_sid(parent).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid `ParentCallSid`").into_response();
    }
    let span = tracing::info_span!(parent: None, "dial_status", call_sid = %parent,
        status = %form.call_status);
    let status = DialStatus::parse(&form.call_status);
    async {
        match status {
            _ if form.call_status == "in-progress" => {
                close_if_owner_gone(&shared, parent).await;
                publish_result(&shared, parent, DialStatus::Answered).await;
            }
            // The human's call of a warm transfer ended unanswered.
            Some(status) if warm_parent.is_some() && !status.connected() => {
                return_caller(&shared, parent, status).await;
            }
            _ => {}
        }
    }
    .instrument(span)
    .await;
    StatusCode::NO_CONTENT.into_response()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
