//! The JSON API: `GET /api/sessions`, `GET /api/sessions/{call_sid}`, `GET /api/live`
//! (Server-Sent Events), and for test calls `GET /api/agents` and `POST /api/web-call-ticket`
//! ([`crate::web_call`]), behind the admin bearer token or a console session.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use switchboard_service::recordings::RecordingStore;

use crate::auth::{Access, Verdict};
use crate::sessions::{self, Cursor, DEFAULT_LIMIT, Filter, MAX_LIMIT};

/// A call's recording as `audio/wav` ([`sessions::recording_url`]).
pub const RECORDING_PATH: &str = "/api/sessions/{call_sid}/recording";

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub access: Access,
    pub live: crate::live::Live,
    /// For the Twilio part of a cost, priced when read.
    pub prices: Arc<crate::pricing::Prices>,
    /// Test calls from the console ([`crate::web_call`]).
    pub web_calls: Arc<crate::web_call::WebCalls>,
    /// Where the calls' recordings are (`RECORDINGS_URL`).
    pub recordings: RecordingStore,
}

/// The `/api` routes, every one of them authenticated.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{call_sid}", get(get_session))
        .route(RECORDING_PATH, get(get_recording))
        .route("/api/live", get(live))
        .route(crate::web_call::AGENTS_PATH, get(crate::web_call::agents))
        .route(
            crate::web_call::TICKET_PATH,
            axum::routing::post(crate::web_call::ticket),
        )
        .route_layer(middleware::from_fn_with_state(
            state.access.clone(),
            require_token,
        ))
        .with_state(state)
}

/// An error as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::warn!(%error, "session query failed");
        metrics::counter!(crate::metrics::API_DB_ERRORS).increment(1);
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The check of every `/api` route: the admin token, or a console session.
pub(crate) async fn require_token(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The dashboard's browser calls the API with its session cookie instead of the token.
    match access.check(request.headers()).await? {
        Verdict::Allowed => Ok(next.run(request).await),
        Verdict::WrongToken => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token")),
        Verdict::Missing => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        )),
    }
}

async fn list_sessions(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<sessions::SessionPage>, ApiError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let cursor = params
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| Cursor::decode(c))
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let non_empty = |key: &str| params.get(key).filter(|v| !v.is_empty()).cloned();
    let filter = Filter {
        agent: non_empty("agent"),
        outcome: non_empty("outcome"),
        from: non_empty("from"),
        since: time_param(&params, "since")?,
        until: time_param(&params, "until")?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "since must not be after until",
        ));
    }
    let page = sessions::list(&state.pool, &filter, cursor.as_ref(), limit).await?;
    Ok(Json(page))
}

/// An optional RFC 3339 time parameter; a value that does not parse is a 400, not ignored.
fn time_param(
    params: &HashMap<String, String>,
    key: &str,
) -> Result<Option<OffsetDateTime>, ApiError> {
    match params.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(Some)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{key} must be an RFC 3339 time such as 2026-01-01T00:00:00Z"),
                )
            }),
    }
}

async fn live(State(state): State<ApiState>) -> impl IntoResponse {
    state.live.sse()
}

async fn get_session(
    State(state): State<ApiState>,
    Path(call_sid): Path<String>,
) -> Result<Json<sessions::SessionDetail>, ApiError> {
    match sessions::get(&state.pool, &call_sid, &state.prices).await? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not found")),
    }
}

/// The call's recording, `audio/wav`; 404 when the call has none (or no longer: retention).
async fn get_recording(
    State(state): State<ApiState>,
    Path(call_sid): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no recording");
    let location = sessions::recording_location(&state.pool, &call_sid)
        .await?
        .ok_or_else(not_found)?;
    match state.recordings.get(&location).await {
        Ok(Some(wav)) => Ok((
            [
                (header::CONTENT_TYPE, "audio/wav"),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            wav,
        )
            .into_response()),
        Ok(None) => Err(not_found()),
        Err(error) => {
            tracing::warn!(%error, %location, "reading a recording failed");
            metrics::counter!(crate::metrics::RECORDING_READ_ERRORS).increment(1);
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "recording store unavailable",
            ))
        }
    }
}
