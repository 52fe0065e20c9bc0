//! A call's webhook deliveries, for the console: `GET /api/sessions/{call_sid}/webhooks`.
//!
//! The notifier owns the delivery log (its own database); the persister reads a call's part
//! of it from the notifier's API (`GET /api/webhooks/deliveries?call_sid=<sid>` on
//! `NOTIFIER_URL`, with the admin token both services share) and passes it on. The browser
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
pub const NOTIFIER_LOG_PATH: &str = "/api/webhooks/deliveries";
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

    /// The notifier's deliveries of `call_sid`, newest first, as it serves them.
    pub async fn of_call(&self, call_sid: &str) -> Result<Value, ApiError> {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{NOTIFIER_LOG_PATH}",
            url.path().trim_end_matches('/')
        ));
        url.query_pairs_mut()
            .append_pair("call_sid", call_sid)
            .append_pair("limit", &MAX_DELIVERIES.to_string());
        let unavailable = |why: String| {
            tracing::warn!(%why, "the notifier's delivery log is unavailable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the notifier's delivery log is unavailable: {why}"),
            )
        };
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
        let log: Value = response
            .json()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if !log.get("deliveries").is_some_and(Value::is_array) {
            return Err(unavailable("it answered without a delivery list".into()));
        }
        Ok(log)
    }
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
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook delivery log is not configured (set NOTIFIER_URL)",
        )
        .into_response();
    };
    match log.of_call(&call_sid).await {
        Ok(deliveries) => Json(deliveries).into_response(),
        Err(error) => error.into_response(),
    }
}
