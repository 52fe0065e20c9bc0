//! The webhook delivery log, for the console:
//! - `GET /api/sessions/{call_sid}/webhooks`: one call's deliveries (the call's page);
//! - `GET /api/webhooks/deliveries[?endpoint=&state=&call_sid=&limit=]`: deliveries across
//!   calls (the webhooks page), the filters passed on as given;
//! - `GET /api/webhooks/endpoints`: the configured endpoints and which are disabled;
//! - `POST /api/webhooks/deliveries/{id}/resend`: send one again;
//! - `POST /api/webhooks/endpoints/enable?endpoint=<url>`: enable an endpoint disabled by a 410.
//!
//! The notifier owns the delivery log (its own database); the persister reads it from the
//! notifier's API (the same paths on `NOTIFIER_URL`, with the admin token both services share)
//! and passes its answers on. The browser
//! stays on the console's origin and its session cookie, the notifier's API stays inside the
//! cluster, and the console needs no build step of its own.
//!
//! Without `NOTIFIER_URL` the route answers 503 saying so; a notifier that cannot be reached
//! or refuses is a 502 naming why. The call's page shows either as a note.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::Value;
use switchboard_service::redact::Secret;

use crate::api::ApiError;
use crate::auth::Access;

/// The console's route.
pub const PATH: &str = "/api/sessions/{call_sid}/webhooks";
/// The delivery-log route, the same on the console and the notifier.
pub const LOG_PATH: &str = "/api/webhooks/deliveries";
/// The re-send route, the same on the console and the notifier.
pub const RESEND_PATH: &str = "/api/webhooks/deliveries/{id}/resend";
/// The endpoints listing, the same on the console and the notifier.
pub const ENDPOINTS_PATH: &str = "/api/webhooks/endpoints";
/// The enable action (`?endpoint=<url>`), the same on the console and the notifier.
pub const ENABLE_PATH: &str = "/api/webhooks/endpoints/enable";
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
        let base = crate::upstream::base_url(url)
            .ok_or_else(|| WebhookLogConfigError::Url(url.to_owned()))?;
        let client = crate::upstream::client(TIMEOUT).map_err(WebhookLogConfigError::Client)?;
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
    pub async fn of_call(&self, call_sid: &str) -> Result<Response, ApiError> {
        let query = LogQuery {
            call_sid: Some(call_sid.to_owned()),
            limit: Some(MAX_DELIVERIES),
            ..LogQuery::default()
        };
        self.deliveries(&query).await
    }

    /// The notifier's deliveries matching `query`, newest first; its refusal of a filter (400)
    /// is passed on.
    pub async fn deliveries(&self, query: &LogQuery) -> Result<Response, ApiError> {
        let mut url = self.url(&["api", "webhooks", "deliveries"]);
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query.pairs() {
                pairs.append_pair(name, value);
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        let request = self.client.get(url);
        self.forward(request, "deliveries", &[StatusCode::BAD_REQUEST])
            .await
    }

    /// The notifier's endpoints, each with whether it is disabled.
    pub async fn endpoints(&self) -> Result<Response, ApiError> {
        let request = self.client.get(self.url(&["api", "webhooks", "endpoints"]));
        self.forward(request, "endpoints", &[]).await
    }

    /// Asks the notifier to send delivery `id` again; its answer (202, or 404 for no such
    /// delivery) is passed on.
    pub async fn resend(&self, id: &str) -> Result<Response, ApiError> {
        let request = self
            .client
            .post(self.url(&["api", "webhooks", "deliveries", id, "resend"]));
        self.forward(request, "", &[StatusCode::NOT_FOUND]).await
    }

    /// Asks the notifier to enable the endpoint at `endpoint`; its answer (200, or 404 for no
    /// such disabled endpoint) is passed on.
    pub async fn enable(&self, endpoint: &str) -> Result<Response, ApiError> {
        let mut url = self.url(&["api", "webhooks", "endpoints", "enable"]);
        url.query_pairs_mut().append_pair("endpoint", endpoint);
        let request = self.client.post(url);
        self.forward(request, "", &[StatusCode::NOT_FOUND]).await
    }

    /// Sends `request` with the admin token and passes the notifier's JSON answer on when it
    /// is a success or one of `passed` (its own refusals); anything else is a 502 naming why.
    /// A non-empty `list` names the array a success must carry.
    async fn forward(
        &self,
        request: reqwest::RequestBuilder,
        list: &str,
        passed: &[StatusCode],
    ) -> Result<Response, ApiError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !(status.is_success() || passed.contains(&status)) {
            return Err(unavailable(format!("it answered {status}")));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if status.is_success() && !list.is_empty() && !answer.get(list).is_some_and(Value::is_array)
        {
            return Err(unavailable(format!("it answered without a list of {list}")));
        }
        Ok((status, Json(answer)).into_response())
    }
}

/// The delivery log's filters, passed on to the notifier as given (it validates `state` and
/// caps `limit`); a `limit` that is not a whole number is refused here, with a 400.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQuery {
    pub endpoint: Option<String>,
    pub state: Option<String>,
    pub call_sid: Option<String>,
    pub limit: Option<u32>,
}

impl LogQuery {
    /// The text filters that are set, as query pairs.
    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("endpoint", &self.endpoint),
            ("state", &self.state),
            ("call_sid", &self.call_sid),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref()?)))
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
        .route(LOG_PATH, get(deliveries))
        .route(ENDPOINTS_PATH, get(endpoints))
        .route(RESEND_PATH, axum::routing::post(resend))
        .route(ENABLE_PATH, axum::routing::post(enable))
        .route_layer(middleware::from_fn_with_state(
            access,
            crate::api::require_token,
        ))
        .with_state(Arc::new(log))
}

/// The notifier's answer, or why there is none.
async fn answer(
    log: &Option<WebhookLog>,
    ask: impl AsyncFnOnce(&WebhookLog) -> Result<Response, ApiError>,
) -> Response {
    let Some(log) = log.as_ref() else {
        return not_configured().into_response();
    };
    ask(log).await.unwrap_or_else(IntoResponse::into_response)
}

async fn of_call(
    State(log): State<Arc<Option<WebhookLog>>>,
    Path(call_sid): Path<String>,
) -> Response {
    answer(&log, async |log| log.of_call(&call_sid).await).await
}

async fn deliveries(
    State(log): State<Arc<Option<WebhookLog>>>,
    Query(query): Query<LogQuery>,
) -> Response {
    answer(&log, async |log| log.deliveries(&query).await).await
}

async fn endpoints(State(log): State<Arc<Option<WebhookLog>>>) -> Response {
    answer(&log, async |log| log.endpoints().await).await
}

async fn resend(State(log): State<Arc<Option<WebhookLog>>>, Path(id): Path<String>) -> Response {
    answer(&log, async |log| log.resend(&id).await).await
}

#[derive(Deserialize)]
struct EndpointQuery {
    endpoint: String,
}

async fn enable(
    State(log): State<Arc<Option<WebhookLog>>>,
    Query(query): Query<EndpointQuery>,
) -> Response {
    answer(&log, async |log| log.enable(&query.endpoint).await).await
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the webhook delivery log is not configured (set NOTIFIER_URL)",
    )
}
