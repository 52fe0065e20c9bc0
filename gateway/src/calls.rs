//! `POST /calls`: start an outbound call.
//!
//! Placing a call costs money and reaches a stranger's phone, so the route is guarded more
//! tightly than the read-only API, in this order:
//!
//! 1. `Authorization: Bearer <CALLS_TOKEN>`, a token of its own (the dashboard's `ADMIN_TOKEN`
//!    does not place calls): else 401. Checked before the body is read.
//! 2. The body (at most [`MAX_BODY_BYTES`]) is `{to, from, agent_id?}`: else 400 / 413.
//! 3. `to` must be in `CALLS_ALLOWED_TO` (E.164 numbers or prefixes ending in `*`): else 403.
//!    Nothing configured allows nothing (fail closed).
//! 4. At most `CALLS_PER_MINUTE` calls a minute per gateway: else 429 with `Retry-After`.
//!    Refused requests do not use up the allowance.
//!
//! The route is for operators' own services inside the cluster; the ingress exposes only
//! Twilio's routes.
//!
//! The gateway asks Twilio to place the call with its own voice webhook as the TwiML URL (with
//! `?agent=<agent_id>` when given) and its status callback route, so an outbound call then runs
//! exactly like an inbound one: Twilio fetches the TwiML, the worker takes the offer and greets
//! first.

use std::sync::Arc;

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use switchboard_service::redact::{MaskedPhone, Secret};

use crate::body::{BodyError, read_limited};
use crate::metrics as m;
use crate::shared::Shared;
use crate::twilio_rest::NewCall;
use crate::webhook::{STATUS_PATH, VOICE_PATH};

/// The route.
pub const CALLS_PATH: &str = "/calls";
/// Longest agent id accepted (agent ids are short slugs).
const MAX_AGENT_ID: usize = 128;
/// Largest request body accepted (the request is three short strings).
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// How long the body may take to arrive.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The request body.
#[derive(Debug, Deserialize)]
pub struct CallRequest {
    pub to: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// True when `headers` carry `Authorization: Bearer <expected>`, compared in constant time
/// (over digests, so the token's length does not leak either).
pub fn authorized(headers: &HeaderMap, expected: Option<&Secret>) -> bool {
    let Some(expected) = expected.map(Secret::expose).filter(|t| !t.is_empty()) else {
        return false;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let given = Sha256::digest(given.trim().as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.ct_eq(&expected))
}

/// `POST /calls`: `{to, from, agent_id?}` -> 201 `{call_sid, status}`.
pub async fn create(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !authorized(&parts.headers, shared.calls_token.as_ref()) {
        metrics::counter!(m::CALLS_REFUSED, "reason" => m::CALL_UNAUTHORIZED).increment(1);
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    if shared.draining.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let body = match read_limited(&parts.headers, body, MAX_BODY_BYTES, BODY_DEADLINE).await {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge(_)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e @ BodyError::TooSlow(_)) => return error(StatusCode::REQUEST_TIMEOUT, e.to_string()),
        Err(e @ BodyError::Read) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request: CallRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            );
        }
    };
    let to = request.to.trim();
    if to.is_empty() {
        return error(StatusCode::BAD_REQUEST, "`to` must not be empty");
    }
    let Some(from) = request
        .from
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "`from` (a Twilio number) is required",
        );
    };
    if !shared.calls_allowed.allows(to) {
        metrics::counter!(m::CALLS_REFUSED, "reason" => m::CALL_DESTINATION).increment(1);
        tracing::warn!(to = %MaskedPhone(to), "outbound call to a destination not allowed");
        let why = if shared.calls_allowed.is_empty() {
            "no destination is allowed: set CALLS_ALLOWED_TO"
        } else {
            "`to` is not in CALLS_ALLOWED_TO"
        };
        return error(StatusCode::FORBIDDEN, why);
    }
    if let Err(wait) = shared.calls_rate.try_acquire() {
        metrics::counter!(m::CALLS_REFUSED, "reason" => m::CALL_RATE_LIMITED).increment(1);
        tracing::warn!(?wait, "outbound call over CALLS_PER_MINUTE");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many calls: over CALLS_PER_MINUTE",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return response;
    }
    let voice_path = match request.agent_id.as_deref().filter(|a| !a.is_empty()) {
        Some(agent) => {
            if agent.len() > MAX_AGENT_ID || agent.chars().any(char::is_control) {
                return error(StatusCode::BAD_REQUEST, "invalid `agent_id`");
            }
            let query = serde_urlencoded::to_string([("agent", agent)]).unwrap_or_default();
            format!("{VOICE_PATH}?{query}")
        }
        None => VOICE_PATH.to_owned(),
    };
    let call = NewCall {
        to: to.to_owned(),
        from: from.to_owned(),
        url: shared.validator.url(&voice_path),
        status_callback: shared.validator.url(STATUS_PATH),
    };
    match shared.rest.create_call(&call).await {
        Ok(created) => {
            tracing::info!(call_sid = %created.sid, to = %MaskedPhone(to),
                from = %MaskedPhone(from), agent = ?request.agent_id, "outbound call created");
            (
                StatusCode::CREATED,
                Json(serde_json::json!({ "call_sid": created.sid, "status": created.status })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, kind = ?e.kind(), to = %MaskedPhone(to),
                "creating the outbound call failed");
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let token = |t: &str| Some(Secret::new(t));
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, token("s3cret").as_ref()));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, token("s3cret").as_ref()));
        assert!(!authorized(&h, token("s3cre").as_ref()));
        assert!(!authorized(&h, None));
        assert!(!authorized(&h, token("").as_ref()));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, token("s3cret").as_ref()));
    }
}
