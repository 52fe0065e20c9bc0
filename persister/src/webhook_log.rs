//! A call's webhook deliveries, for the console: `GET /api/sessions/{call_sid}/webhooks`, and
//! `POST /api/webhooks/deliveries/{id}/resend` to send one again.
//!
//! The notifier owns the delivery log (its own database); the persister reads a call's part
//! of it from the notifier's API (`GET /api/webhooks/deliveries?call_sid=<sid>` on
//! `NOTIFIER_URL`, with the admin token both services share) and passes it on, and passes a
//! re-send on to the notifier's route of the same path. The browser
//! stays on the console's origin and its session cookie, the notifier's API stays inside the
//! cluster, and the console needs no build step of its own.
//!
//! Without `NOTIFIER_URL` the route answers 503 saying so; a notifier that cannot be reached
//! or refuses is a 502 naming why. The call's page shows either as a note.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::Value;
use switchboard_service::redact::Secret;

use crate::api::ApiError;
use crate::auth::Access;

/// The console's route.
pub const PATH: &str = "/api/sessions/{call_sid}/webhooks";
/// The notifier's delivery-log route.
pub const LOG_PATH: &str = "/api/webhooks/deliveries";
/// The re-send route, the same on the console and the notifier.
pub const RESEND_PATH: &str = "/api/webhooks/deliveries/{id}/resend";
/// Most deliveries shown for one call (the notifier's own ceiling).
pub const MAX_DELIVERIES: u32 = 500;
/// How long the console waits for the notifier.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the notifier's delivery log is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WebhookLogArgs {
    /// Base URL of the notifier's API (e.g. `http://notifier:8084`): the console shows each
    /// call's webhook deliveries from it. Unset: the console says the log is not configured.
    #[arg(long, env = "NOTIFIER_URL")]
    pub notifier_url: Option<String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookLogConfigError {
    #[error("NOTIFIER_URL must be an http:// or https:// base URL, got {0:?}")]
    Url(String),
    #[error("building the HTTP client of NOTIFIER_URL: {0}")]
    Client(#[source] reqwest::Error),
}

/// The client of the notifier's delivery log.
#[derive(Debug, Clone)]
pub struct WebhookLog {
    base: reqwest::Url,
    token: Secret,
    client: reqwest::Client,
}

impl WebhookLog {
    /// `None` when `NOTIFIER_URL` is not set; `token` is the admin token.
    pub fn new(
        args: &WebhookLogArgs,
        token: &Secret,
    ) -> Result<Option<Self>, WebhookLogConfigError> {
        let Some(url) = args
            .notifier_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let base = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| WebhookLogConfigError::Url(url.to_owned()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookLogConfigError::Client)?;
        Ok(Some(Self {
            base,
            token: token.clone(),
            client,
        }))
    }

    /// `NOTIFIER_URL` with `segments` appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The notifier's deliveries of `call_sid`, newest first, as it serves them.
    pub async fn of_call(&self, call_sid: &str) -> Result<Value, ApiError> {
        let mut url = self.url(&["api", "webhooks", "deliveries"]);
        url.query_pairs_mut()
            .append_pair("call_sid", call_sid)
            .append_pair("limit", &MAX_DELIVERIES.to_string());
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("it answered {status}")));
        }
        // The notifier's answer stands for itself: `{"deliveries": [...]}`.
        let log: Value = response
            .json()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if !log.get("deliveries").is_some_and(Value::is_array) {
            return Err(unavailable("it answered without a delivery list".into()));
        }
        Ok(log)
    }

    /// Asks the notifier to send delivery `id` again; its answer (202, or 404 for no such
    /// delivery) is passed on.
    pub async fn resend(&self, id: &str) -> Result<Response, ApiError> {
        let response = self
            .client
            .post(self.url(&["api", "webhooks", "deliveries", id, "resend"]))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            return Err(unavailable(format!("it answered {status}")));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        Ok((status, Json(answer)).into_response())
    }
}

fn unavailable(why: String) -> ApiError {
    tracing::warn!(%why, "the notifier's delivery log is unavailable");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("the notifier's delivery log is unavailable: {why}"),
    )
}

/// An error and its sources, `: `-separated (an HTTP client's own message names no cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The console's route, behind the same check as the rest of `/api`.
pub fn router(access: Access, log: Option<WebhookLog>) -> Router {
    Router::new()
        .route(PATH, get(of_call))
        .route(RESEND_PATH, axum::routing::post(resend))
        .route_layer(middleware::from_fn_with_state(
            access,
            crate::api::require_token,
        ))
        .with_state(Arc::new(log))
}

async fn of_call(
    State(log): State<Arc<Option<WebhookLog>>>,
    Path(call_sid): Path<String>,
) -> Response {
    let Some(log) = log.as_ref() else {
        return not_configured().into_response();
    };
    match log.of_call(&call_sid).await {
        Ok(deliveries) => Json(deliveries).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn resend(State(log): State<Arc<Option<WebhookLog>>>, Path(id): Path<String>) -> Response {
    let Some(log) = log.as_ref() else {
        return not_configured().into_response();
    };
    log.resend(&id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the webhook delivery log is not configured (set NOTIFIER_URL)",
    )
}
