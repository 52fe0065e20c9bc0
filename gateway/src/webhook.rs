//! Twilio's HTTP webhooks: `POST /twilio-voice` (a call arrives) and `POST /twilio-status`
//! (call status callbacks). The re-attach routes (`/twilio-connect-action`,
//! `/twilio-stream-status`) are [`crate::reattach`]'s, verified the same way.
//!
//! Every request is checked against `X-Twilio-Signature` computed over `PUBLIC_URL` + the route
//! (plus the query string, if Twilio was configured with one) and every form pair received. The
//! signature covers the form, so it can only be checked after parsing; what comes before is
//! bounded so that an unsigned request costs next to nothing:
//!
//! 1. no `X-Twilio-Signature` header (or one longer than any signature): 403, body unread;
//! 2. a query string over [`MAX_QUERY_BYTES`]: 414;
//! 3. a body over [`MAX_BODY_BYTES`] (declared or received): 413, as soon as that is known;
//!    one that takes longer than [`BODY_DEADLINE`]: 408;
//! 4. more than [`MAX_FORM_FIELDS`] fields: 413, before decoding any;
//! 5. then the form is decoded and the signature checked (400 / 403).
//!
//! A verified voice webhook claims its CallSid in the `voice-calls` bucket
//! ([`crate::claims`]) before the call is offered. Twilio requests the voice URL once per call,
//! so a second request for the same CallSid is a replay: it is refused with 409 and counted,
//! and gets no offer, no model session and no stream token. (Answering it again with the first
//! TwiML would hand its stream token to whoever replayed the request, racing Twilio for it.)
//! When the bucket is unreachable the webhook answers 503 rather than offer unchecked; Twilio
//! then tries the number's fallback URL.
//!
//! A verified voice webhook opens the call's trace: the root span `webhook` (fields `call_sid`,
//! `direction`), the `offer` request as its child, and the TwiML's `traceparent` `<Parameter>`
//! so the media stream (on whichever replica) continues it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use switchboard_proto::now_ms;
use switchboard_proto::subject::validate_call_sid;
use switchboard_twilio::twiml;
use switchboard_twilio::webhook::CallForm;

use crate::body::{BodyError, read_limited};
use crate::claims::OfferClaim;
use crate::frames::TRACEPARENT_PARAMETER;
use crate::metrics as m;
use crate::offer::{self, OfferOutcome};
use crate::reattach::stream_twiml;
use crate::shared::Shared;
use crate::stream_token::{StreamGrant, unix_now};
use switchboard_service::redact::MaskedPhone;
use switchboard_service::trace;
use tracing::Instrument as _;

/// The voice webhook's path.
pub const VOICE_PATH: &str = "/twilio-voice";
/// The status callback's path.
pub const STATUS_PATH: &str = "/twilio-status";
/// The media socket's path.
pub const MEDIA_PATH: &str = "/media";

/// The signature header (lower case, as `HeaderMap` stores names).
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Largest webhook body accepted. Twilio's voice webhooks and status callbacks are 1-2 KiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Most form fields accepted. Twilio sends about 30 (status callbacks a few more).
pub const MAX_FORM_FIELDS: usize = 128;
/// Longest query string accepted (Twilio's is empty, or `agent=<id>` on outbound calls).
pub const MAX_QUERY_BYTES: usize = 1024;
/// Longest `X-Twilio-Signature` accepted: a base64 HMAC-SHA1 is 28 characters.
pub const MAX_SIGNATURE_BYTES: usize = 64;
/// How long a webhook body may take to arrive (Twilio sends it at once).
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// `POST /twilio-voice`: offer the call to a worker and answer with the stream TwiML, or tell
/// the caller everyone is busy.
pub async fn voice(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if shared.draining.is_cancelled() {
        // Twilio then tries the number's fallback URL; the load balancer already sends new
        // webhooks elsewhere because /readyz is false.
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let (parts, body) = request.into_parts();
    let form = match verified_form(&shared, VOICE_PATH, &parts.uri, &parts.headers, body).await {
        Ok((form, _)) => form,
        Err(error) => return error.into_response(),
    };
    let span = tracing::info_span!(parent: None, "webhook",
        call_sid = %form.call_sid, direction = %form.direction);
    answer_call(shared, parts.uri, form).instrument(span).await
}

/// The verified voice webhook, inside the call's `webhook` span.
async fn answer_call(shared: Arc<Shared>, uri: Uri, form: CallForm) -> Response {
    let offered_at_ms = now_ms();
    let mut call_offer = offer::call_offer(&form, &shared.gateway_id, offered_at_ms);
    // `POST /calls` names the agent in the TwiML URL's query (covered by the signature).
    let requested_agent = agent_from_query(&uri);
    let agent = shared
        .agents
        .agent_for(&form.to, requested_agent.as_deref());
    if let Some(requested) = requested_agent {
        call_offer.agent_id = requested;
    }
    call_offer.vars = vars_from_query(&uri);
    call_offer.async_amd = crate::amd::async_amd_from_query(&uri);
    let claim = match shared.claims().await {
        Ok(claims) => claims.claim_offer(&form.call_sid, &agent).await,
        Err(error) => Err(error),
    };
    match claim {
        Ok(OfferClaim::First) => {}
        Ok(OfferClaim::Replay) => {
            metrics::counter!(m::WEBHOOK_REPLAYS).increment(1);
            tracing::warn!("voice webhook for a call already offered refused (replay)");
            return (StatusCode::CONFLICT, "call already offered").into_response();
        }
        Err(error) => {
            metrics::counter!(m::CLAIM_ERRORS, "what" => "offer").increment(1);
            tracing::error!(%error, "cannot claim the call; refusing the webhook");
            return (StatusCode::SERVICE_UNAVAILABLE, "replay check unavailable").into_response();
        }
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
            tracing::info!(call_sid = %form.call_sid, %worker_id, %agent_id,
                from = %MaskedPhone(&form.from), to = %MaskedPhone(&form.to), "call accepted");
            let expires = unix_now().saturating_add(shared.token_ttl_seconds);
            // The webhook's stream is the call's first (attach 0); the claim above makes this
            // the only attach-0 token ever issued for the call.
            let grant = StreamGrant::FIRST;
            let token = shared.tokens.issue(&form.call_sid, grant, expires);
            // The webhook span's context (none when tracing is off).
            let trace_headers = trace::headers();
            let traceparent = trace_headers
                .get(TRACEPARENT_PARAMETER)
                .map(|value| value.as_str());
            // With `<Connect action>` and `<Stream statusCallback>`, so the call can get a new
            // stream when this one fails ([`crate::reattach`]).
            twiml_response(stream_twiml(&shared, grant.attach, &token, traceparent))
        }
        OfferOutcome::Rejected { reason } => {
            metrics::counter!(m::OFFERS_REJECTED, "reason" => reason.clone()).increment(1);
            tracing::warn!(call_sid = %form.call_sid, %reason, from = %MaskedPhone(&form.from),
                to = %MaskedPhone(&form.to), "no worker took the call");
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
pub async fn status(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, pairs) =
        match verified_form(&shared, STATUS_PATH, &parts.uri, &parts.headers, body).await {
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

/// The prefix of the webhook URL's query parameters that carry facts about the person called.
pub const VAR_PARAMETER_PREFIX: &str = "var.";

/// The `var.<name>` query parameters of the webhook URL (a campaign contact's variables).
pub fn vars_from_query(uri: &Uri) -> std::collections::HashMap<String, String> {
    let Some(query) = uri.query() else {
        return Default::default();
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(VAR_PARAMETER_PREFIX)?;
            (!name.is_empty() && !name.chars().any(char::is_control)).then(|| (name.to_owned(), v))
        })
        .collect()
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
    #[error(transparent)]
    Body(BodyError),
    #[error("more than {MAX_FORM_FIELDS} form fields")]
    TooManyFields,
    #[error("query string longer than {MAX_QUERY_BYTES} bytes")]
    UriTooLong,
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
            Self::MalformedForm | Self::BadCall(_) | Self::Body(BodyError::Read) => {
                StatusCode::BAD_REQUEST
            }
            Self::Body(BodyError::TooLarge(_)) | Self::TooManyFields => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Body(BodyError::TooSlow(_)) => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
        };
        (status, self.to_string()).into_response()
    }
}

/// Reads the form under the limits of the module docs, checks the signature over it, and
/// picks out the call fields; also returns every pair received.
pub(crate) async fn verified_form(
    shared: &Shared,
    path: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(CallForm, Vec<(String, String)>), WebhookError> {
    let refused = |reason: &'static str| {
        metrics::counter!(m::WEBHOOKS_REFUSED, "route" => path, "reason" => reason).increment(1);
    };
    let Some(signature) = headers
        .get(SIGNATURE_HEADER)
        .filter(|v| v.len() <= MAX_SIGNATURE_BYTES)
        .and_then(|v| v.to_str().ok())
    else {
        metrics::counter!(m::BAD_SIGNATURES, "route" => path).increment(1);
        return Err(WebhookError::MissingSignature);
    };
    if uri.query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        refused(m::WEBHOOK_URI_TOO_LONG);
        return Err(WebhookError::UriTooLong);
    }
    let body = read_limited(headers, body, MAX_BODY_BYTES, BODY_DEADLINE)
        .await
        .map_err(|error| {
            match error {
                BodyError::TooLarge(_) => refused(m::WEBHOOK_TOO_LARGE),
                BodyError::TooSlow(_) => refused(m::WEBHOOK_TOO_SLOW),
                BodyError::Read => {}
            }
            tracing::warn!(path, %error, "webhook body refused");
            WebhookError::Body(error)
        })?;
    if form_fields(&body) > MAX_FORM_FIELDS {
        refused(m::WEBHOOK_TOO_MANY_FIELDS);
        tracing::warn!(path, "webhook with too many form fields refused");
        return Err(WebhookError::TooManyFields);
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&body).map_err(|_| WebhookError::MalformedForm)?;
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

/// How many fields a form body has (an upper bound: empty pairs count too).
fn form_fields(body: &[u8]) -> usize {
    if body.is_empty() {
        0
    } else {
        body.iter().filter(|&&b| b == b'&').count() + 1
    }
}

/// A TwiML document as an HTTP answer.
pub(crate) fn twiml_response(doc: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], doc).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_come_from_var_parameters_only() {
        let uri: Uri = "/twilio-voice?agent=desk&var.name=Jane%20Doe&var.=x&other=1&var.plan=gold"
            .parse()
            .unwrap();
        let vars = vars_from_query(&uri);
        assert_eq!(vars.len(), 2, "{vars:?}");
        assert_eq!(vars["name"], "Jane Doe");
        assert_eq!(vars["plan"], "gold");
        assert!(vars_from_query(&"/twilio-voice".parse().unwrap()).is_empty());
    }

    #[test]
    fn form_fields_are_counted_before_decoding() {
        assert_eq!(form_fields(b""), 0);
        assert_eq!(form_fields(b"a=1"), 1);
        assert_eq!(form_fields(b"a=1&b=2"), 2);
        assert_eq!(form_fields(&b"a&".repeat(200)), 201);
    }
}
