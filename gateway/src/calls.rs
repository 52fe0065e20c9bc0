//! `POST /calls`: start an outbound call (authenticated with `ADMIN_TOKEN`).
//!
//! The gateway asks Twilio to place the call with its own voice webhook as the TwiML URL (with
//! `?agent=<agent_id>` when given) and its status callback route, so an outbound call then runs
//! exactly like an inbound one: Twilio fetches the TwiML, the worker takes the offer and greets
//! first.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::shared::Shared;
use crate::twilio_rest::NewCall;
use crate::webhook::{STATUS_PATH, VOICE_PATH};

/// The route.
pub const CALLS_PATH: &str = "/calls";
/// Longest agent id accepted (agent ids are short slugs).
const MAX_AGENT_ID: usize = 128;

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
pub fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected.filter(|t| !t.is_empty()) else {
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
pub async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<CallRequest>, JsonRejection>,
) -> Response {
    if !authorized(&headers, shared.admin_token.as_deref()) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    if shared.draining.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
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
            tracing::info!(call_sid = %created.sid, to, from, agent = ?request.agent_id,
                "outbound call created");
            (
                StatusCode::CREATED,
                Json(serde_json::json!({ "call_sid": created.sid, "status": created.status })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, kind = ?e.kind(), to, "creating the outbound call failed");
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, Some("s3cret")));
        assert!(!authorized(&h, Some("s3cre")));
        assert!(!authorized(&h, None));
        assert!(!authorized(&h, Some("")));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, Some("s3cret")));
    }
}
