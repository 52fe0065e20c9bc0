//! Twilio's HTTP webhooks: `POST /twilio-voice` (a call arrives) and `POST /twilio-status`
//! (call status callbacks).
//!
//! Every request is checked against `X-Twilio-Signature` computed over `PUBLIC_URL` + the route
//! (plus the query string, if Twilio was configured with one) and every form pair received.
//!
//! A verified voice webhook opens the call's trace: the root span `webhook` (fields `call_sid`,
//! `direction`), the `offer` request as its child, and the TwiML's `traceparent` `<Parameter>`
//! so the media stream (on whichever replica) continues it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchboard_proto::now_ms;
use switchboard_proto::subject::validate_call_sid;
use switchboard_twilio::twiml;
use switchboard_twilio::webhook::CallForm;

use crate::frames::{TOKEN_PARAMETER, TRACEPARENT_PARAMETER};
use crate::metrics as m;
use crate::offer::{self, OfferOutcome};
use crate::shared::Shared;
use crate::stream_token::unix_now;
use switchboard_service::trace;
use tracing::Instrument as _;

/// The voice webhook's path.
pub const VOICE_PATH: &str = "/twilio-voice";
/// The status callback's path.
pub const STATUS_PATH: &str = "/twilio-status";
/// The media socket's path.
pub const MEDIA_PATH: &str = "/media";

const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// `POST /twilio-voice`: offer the call to a worker and answer with the stream TwiML, or tell
/// the caller everyone is busy.
pub async fn voice(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.draining.is_cancelled() {
        // Twilio then tries the number's fallback URL; the load balancer already sends new
        // webhooks elsewhere because /readyz is false.
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let form = match verified_form(&shared, VOICE_PATH, &uri, &headers, &body) {
        Ok(form) => form,
        Err(error) => return error.into_response(),
    };
    let span = tracing::info_span!(parent: None, "webhook",
        call_sid = %form.call_sid, direction = %form.direction);
    answer_call(shared, uri, form).instrument(span).await
}

/// The verified voice webhook, inside the call's `webhook` span.
async fn answer_call(shared: Arc<Shared>, uri: Uri, form: CallForm) -> Response {
    let offered_at_ms = now_ms();
    let mut call_offer = offer::call_offer(&form, &shared.gateway_id, offered_at_ms);
    // `POST /calls` names the agent in the TwiML URL's query (covered by the signature).
    if let Some(agent) = agent_from_query(&uri) {
        call_offer.agent_id = agent;
    }
    let outcome = offer::offer(
        &shared.nats,
        &shared.subjects,
        &call_offer,
        shared.offer_timeout,
    )
    .await;
    match outcome {
        OfferOutcome::Accepted {
            worker_id,
            agent_id,
        } => {
            metrics::counter!(m::OFFERS_ACCEPTED).increment(1);
            tracing::info!(call_sid = %form.call_sid, %worker_id, %agent_id, from = %form.from,
                to = %form.to, "call accepted");
            let expires = unix_now().saturating_add(shared.token_ttl_seconds);
            let token = shared.tokens.issue(&form.call_sid, expires);
            let url = shared.validator.ws_url(MEDIA_PATH);
            // The webhook span's context (none when tracing is off).
            let trace_headers = trace::headers();
            let mut parameters = vec![(TOKEN_PARAMETER, token.as_str())];
            if let Some(traceparent) = trace_headers.get(TRACEPARENT_PARAMETER) {
                parameters.push((TRACEPARENT_PARAMETER, traceparent.as_str()));
            }
            let doc = twiml::Response::new()
                .connect_stream(&url, &parameters)
                .build();
            twiml_response(doc)
        }
        OfferOutcome::Rejected { reason } => {
            metrics::counter!(m::OFFERS_REJECTED, "reason" => reason.clone()).increment(1);
            tracing::warn!(call_sid = %form.call_sid, %reason, from = %form.from, to = %form.to,
                "no worker took the call");
            shared
                .events
                .publish(offer::rejected_event(&form, &reason, now_ms()));
            let doc = twiml::Response::new()
                .say(&shared.busy_message)
                .hangup()
                .build();
            twiml_response(doc)
        }
    }
}

/// `POST /twilio-status`: a call status callback, verified and published as a `status` call
/// event (see [`crate::status`]). Accepted while draining too: it is about a call already known.
pub async fn status(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pairs) = match verified_form_and_pairs(&shared, STATUS_PATH, &uri, &headers, &body) {
        Ok(verified) => verified,
        Err(error) => return error.into_response(),
    };
    if form.call_status.is_empty() {
        return WebhookError::BadCall("missing form field `CallStatus`".into()).into_response();
    }
    let sip_response_code = pairs
        .iter()
        .find(|(k, _)| k == "SipResponseCode")
        .and_then(|(_, v)| v.parse().ok());
    tracing::info!(call_sid = %form.call_sid, status = %form.call_status,
        duration_s = ?form.call_duration, sequence = ?form.sequence_number, "call status");
    shared.events.publish(crate::status::status_event(
        &form,
        sip_response_code,
        now_ms(),
    ));
    StatusCode::NO_CONTENT.into_response()
}

/// The `agent` query parameter of the webhook URL, if any.
fn agent_from_query(uri: &Uri) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    pairs
        .into_iter()
        .find(|(k, v)| k == "agent" && !v.is_empty())
        .map(|(_, v)| v)
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("malformed form body")]
    MalformedForm,
    #[error("missing X-Twilio-Signature")]
    MissingSignature,
    #[error("invalid X-Twilio-Signature")]
    BadSignature,
    #[error("{0}")]
    BadCall(String),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MissingSignature | Self::BadSignature => StatusCode::FORBIDDEN,
            Self::MalformedForm | Self::BadCall(_) => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Decodes the form, checks the signature over it, and picks out the call fields: 400 for a
/// malformed form or CallSid, 403 for a missing or wrong signature.
fn verified_form(
    shared: &Shared,
    path: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<CallForm, WebhookError> {
    verified_form_and_pairs(shared, path, uri, headers, body).map(|(form, _)| form)
}

/// [`verified_form`], also returning every pair received.
fn verified_form_and_pairs(
    shared: &Shared,
    path: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(CallForm, Vec<(String, String)>), WebhookError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| WebhookError::MalformedForm)?;
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        metrics::counter!(m::BAD_SIGNATURES, "route" => path).increment(1);
        return Err(WebhookError::MissingSignature);
    };
    let signed_path = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    if !shared.validator.validate(&signed_path, &pairs, signature) {
        metrics::counter!(m::BAD_SIGNATURES, "route" => path).increment(1);
        tracing::warn!(path, "webhook with an invalid X-Twilio-Signature");
        return Err(WebhookError::BadSignature);
    }
    let form = CallForm::from_pairs(&pairs).map_err(|e| WebhookError::BadCall(e.to_string()))?;
    validate_call_sid(&form.call_sid).map_err(|e| WebhookError::BadCall(e.to_string()))?;
    Ok((form, pairs))
}

fn twiml_response(doc: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], doc).into_response()
}
