//! The delivery log and its controls, behind the `ADMIN_TOKEN` bearer:
//! - `GET /api/webhooks/deliveries[?endpoint=<url>&state=pending|delivered|failed&call_sid=<sid>&limit=N]`:
//!   the newest deliveries with every attempt (time, status code, latency, error); the console
//!   shows a call's (`call_sid`) on the call's page, through the persister;
//! - `POST /api/webhooks/deliveries/{id}/resend`: makes a delivery (typically a failed one)
//!   due now with a fresh attempt budget, same `webhook-id` and body;
//! - `GET /api/webhooks/endpoints`: the configured endpoints, each with whether it is disabled
//!   (since when and why), so the console can offer the enable action;
//! - `POST /api/webhooks/endpoints/enable?endpoint=<url>`: enables an endpoint disabled by a 410.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use persister::auth::AdminToken;
use persister::webhook_log;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::dispatch::Clock;
use crate::store::{self, State as DeliveryState};

/// Most deliveries one log request returns.
pub const MAX_LIMIT: i64 = 500;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub token: Arc<AdminToken>,
    pub wake: Arc<HashMap<String, Arc<Notify>>>,
    pub clock: Clock,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(webhook_log::LOG_PATH, get(deliveries))
        .route(webhook_log::RESEND_PATH, post(resend))
        .route(webhook_log::ENDPOINTS_PATH, get(endpoints))
        .route(webhook_log::ENABLE_PATH, post(enable))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn database_error(error: sqlx::Error) -> Response {
    tracing::warn!(%error, "webhook API query failed");
    error_response_unavailable()
}

fn error_response_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable",
    )
}

#[derive(Deserialize)]
struct LogQuery {
    endpoint: Option<String>,
    state: Option<String>,
    call_sid: Option<String>,
    limit: Option<i64>,
}

async fn deliveries(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<LogQuery>,
) -> Response {
    if let Some(response) = state.token.refusal(&headers) {
        return response;
    }
    let filter = match query.state.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("failed") => Some(DeliveryState::Failed),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "state must be pending, delivered or failed",
            );
        }
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let filter = store::LogFilter {
        endpoint_url: query.endpoint.as_deref(),
        state: filter,
        call_sid: query.call_sid.as_deref(),
    };
    match store::log(&state.pool, &filter, limit).await {
        Ok(log) => Json(json!({"deliveries": log})).into_response(),
        Err(e) => database_error(e),
    }
}

async fn resend(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = state.token.refusal(&headers) {
        return response;
    }
    match store::resend(&state.pool, &id, state.clock.now()).await {
        Ok(Some(endpoint)) => {
            if let Some(wake) = state.wake.get(&endpoint) {
                wake.notify_one();
            }
            (
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "state": "pending"})),
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such delivery"),
        Err(e) => database_error(e),
    }
}

/// One endpoint in the endpoints listing.
#[derive(Serialize)]
struct ListedEndpoint {
    url: String,
    disabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    disabled_at: Option<time::OffsetDateTime>,
    disabled_reason: Option<String>,
}

/// The configured endpoints (the ones this notifier delivers to), by URL, each with its
/// disabled state; an endpoint disabled earlier but no longer configured is left out.
async fn endpoints(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(response) = state.token.refusal(&headers) {
        return response;
    }
    let disabled = match store::disabled(&state.pool).await {
        Ok(disabled) => disabled,
        Err(e) => return database_error(e),
    };
    let mut urls: Vec<&String> = state.wake.keys().collect();
    urls.sort();
    let endpoints: Vec<ListedEndpoint> = urls
        .into_iter()
        .map(|url| {
            let disabled = disabled.iter().find(|d| &d.url == url);
            ListedEndpoint {
                url: url.clone(),
                disabled: disabled.is_some(),
                disabled_at: disabled.map(|d| d.disabled_at),
                disabled_reason: disabled.and_then(|d| d.disabled_reason.clone()),
            }
        })
        .collect();
    Json(json!({"endpoints": endpoints})).into_response()
}

#[derive(Deserialize)]
struct EndpointQuery {
    endpoint: String,
}

async fn enable(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<EndpointQuery>,
) -> Response {
    if let Some(response) = state.token.refusal(&headers) {
        return response;
    }
    match store::enable(&state.pool, &query.endpoint).await {
        Ok(true) => {
            if let Some(wake) = state.wake.get(&query.endpoint) {
                wake.notify_one();
            }
            (
                StatusCode::OK,
                Json(json!({"endpoint": query.endpoint, "enabled": true})),
            )
                .into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such disabled endpoint"),
        Err(e) => database_error(e),
    }
}
