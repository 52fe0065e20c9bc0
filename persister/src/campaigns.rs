//! Outbound campaigns on the console: the console's `/api/campaigns[/...]` and `/api/dnc[/...]`
//! requests passed on to the dialer's campaigns API (the same paths on `DIALER_URL`, with the
//! admin token both services share).
//!
//! The dialer owns campaigns, contacts, attempts and the do-not-call list (its own database);
//! the console only forwards. The browser stays on the console's origin and its session
//! cookie, the dialer's API stays inside the cluster, and the page needs no build step.
//!
//! Method, path, query, `Content-Type` and body go as the browser sent them (a CSV upload stays
//! CSV); the dialer's answer comes back with its status, `Content-Type` and
//! `Content-Disposition` (the contacts export downloads as a file). Its own refusals (400, 404)
//! are passed on. Without `DIALER_URL` the routes answer 503 saying so; a dialer that cannot be
//! reached, fails, or refuses the shared token is a 502 naming why.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Router, middleware};
use switchboard_service::redact::Secret;

use crate::api::ApiError;
use crate::auth::Access;
use crate::webhook_log::error_chain;

/// The campaigns routes, the same on the console and the dialer.
pub const CAMPAIGNS_PATH: &str = "/api/campaigns";
/// The do-not-call list, the same on the console and the dialer.
pub const DNC_PATH: &str = "/api/dnc";
/// Largest request passed on: the dialer's own limit (a campaign of 100,000 contacts).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How long the console waits for the dialer (creating a large campaign takes a while).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the dialer's campaigns API is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DialerArgs {
    /// Base URL of the dialer's campaigns API (e.g. `http://dialer:8085`): the console's
    /// Campaigns page reads and changes campaigns there. Unset: the page says it is not
    /// configured.
    #[arg(long, env = "DIALER_URL")]
    pub dialer_url: Option<String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DialerConfigError {
    #[error("DIALER_URL must be an http:// or https:// base URL, got {0:?}")]
    Url(String),
    #[error("building the HTTP client of DIALER_URL: {0}")]
    Client(#[source] reqwest::Error),
}

/// The client of the dialer's campaigns API.
#[derive(Debug, Clone)]
pub struct Dialer {
    base: reqwest::Url,
    token: Secret,
    client: reqwest::Client,
}

impl Dialer {
    /// `None` when `DIALER_URL` is not set; `token` is the admin token.
    pub fn new(args: &DialerArgs, token: &Secret) -> Result<Option<Self>, DialerConfigError> {
        let Some(url) = args
            .dialer_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let base =
            crate::upstream::base_url(url).ok_or_else(|| DialerConfigError::Url(url.to_owned()))?;
        let client = crate::upstream::client(TIMEOUT).map_err(DialerConfigError::Client)?;
        Ok(Some(Self {
            base,
            token: token.clone(),
            client,
        }))
    }

    /// `DIALER_URL` with the request's path (already percent-encoded, one of the console's
    /// routes) and query appended.
    fn url(&self, path_and_query: &str) -> Result<reqwest::Url, ApiError> {
        let base = self.base.as_str().trim_end_matches('/');
        reqwest::Url::parse(&format!("{base}{path_and_query}"))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid path: {e}")))
    }

    /// Sends the browser's request on with the admin token and passes the dialer's answer back:
    /// a success or one of its own refusals as it is, anything else as a 502 naming why.
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let mut request = self
            .client
            .request(method, self.url(path_and_query)?)
            .bearer_auth(self.token.expose());
        if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !(status.is_success() || PASSED.contains(&status)) {
            let why = if status == StatusCode::UNAUTHORIZED {
                format!("it answered {status}: its ADMIN_TOKEN is not the console's")
            } else {
                format!("it answered {status}")
            };
            return Err(unavailable(why));
        }
        let mut answer = Response::builder().status(status);
        for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
            if let Some(value) = response.headers().get(&name) {
                answer = answer.header(name, value);
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        answer
            .body(axum::body::Body::from(body))
            .map_err(|e| unavailable(e.to_string()))
    }
}

/// The dialer's refusals of a request, passed on to the browser as they are.
const PASSED: [StatusCode; 3] = [
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::PAYLOAD_TOO_LARGE,
];

fn unavailable(why: String) -> ApiError {
    tracing::warn!(%why, "the dialer's campaigns API is unavailable");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("the dialer is unavailable: {why}"),
    )
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "campaigns are not configured (set DIALER_URL)",
    )
}

/// The console's campaigns routes, behind the same check as the rest of `/api`.
pub fn router(access: Access, dialer: Option<Dialer>) -> Router {
    Router::new()
        .route(CAMPAIGNS_PATH, any(pass_on))
        .route(&format!("{CAMPAIGNS_PATH}/{{*rest}}"), any(pass_on))
        .route(DNC_PATH, any(pass_on))
        .route(&format!("{DNC_PATH}/{{*rest}}"), any(pass_on))
        .route_layer(middleware::from_fn_with_state(
            access,
            crate::api::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(dialer))
}

async fn pass_on(State(dialer): State<Arc<Option<Dialer>>>, request: Request) -> Response {
    let Some(dialer) = dialer.as_ref() else {
        return not_configured().into_response();
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    dialer
        .forward(parts.method, path_and_query, &parts.headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
