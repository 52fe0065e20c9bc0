//! The JSON API: `GET /api/sessions` (filtered, paged, counted), `GET /api/sessions/{call_sid}`,
//! `GET /api/sessions.csv` ([`crate::export`]), `GET /api/analytics` ([`crate::analytics`]),
//! `GET /api/facets` (the console's pick-lists), `GET /api/live` (Server-Sent Events), and for
//! test calls `GET /api/agents` and `POST /api/web-call-ticket` ([`crate::web_call`]), behind
//! the admin bearer token or a console session.

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

/// The analytics overview ([`crate::analytics`]).
pub const ANALYTICS_PATH: &str = "/api/analytics";

/// `GET /api/sessions?status=in_progress`: the calls a worker took that have not ended.
pub const IN_PROGRESS: &str = "in_progress";

/// The choices of the console's pick-lists ([`sessions::facets`]).
pub const FACETS_PATH: &str = "/api/facets";
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
        .route(ANALYTICS_PATH, get(analytics))
        .route(FACETS_PATH, get(facets))
        .route(crate::export::CSV_PATH, get(crate::export::calls_csv))
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
    let filter = filter_params(&params)?;
    let page = sessions::list(&state.pool, &filter, cursor.as_ref(), limit).await?;
    Ok(Json(page))
}

/// The calls list's filter (`agent`, `outcome`, `from`, `q`, `status`, `since`, `until`), shared
/// by the list and its CSV export; a value that cannot be used is a 400.
pub(crate) fn filter_params(params: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let non_empty = |key: &str| params.get(key).filter(|v| !v.is_empty()).cloned();
    let filter = Filter {
        agent: non_empty("agent"),
        outcome: non_empty("outcome"),
        from: non_empty("from"),
        text: non_empty("q"),
        in_progress: match params.get("status").map(String::as_str) {
            None | Some("") => false,
            Some(IN_PROGRESS) => true,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("status must be {IN_PROGRESS:?}, got {other:?}"),
                ));
            }
        },
        since: time_param(params, "since")?,
        until: time_param(params, "until")?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "since must not be after until",
        ));
    }
    Ok(filter)
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

async fn facets(State(state): State<ApiState>) -> Result<Json<sessions::Facets>, ApiError> {
    Ok(Json(sessions::facets(&state.pool).await?))
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
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such call")),
    }
}

async fn analytics(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<crate::analytics::Overview>, ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !["since", "until", "agent"].contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {unknown:?}: the analytics take since, until and agent"),
        ));
    }
    let scope = crate::analytics::Scope {
        since: day_or_time_param(&params, "since", false)?,
        until: day_or_time_param(&params, "until", true)?,
        agent: params.get("agent").filter(|v| !v.is_empty()).cloned(),
    };
    if let (Some(since), Some(until)) = (scope.since, scope.until)
        && since >= until
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "since must be before until",
        ));
    }
    Ok(Json(
        crate::analytics::overview(&state.pool, &scope, &state.prices).await?,
    ))
}

/// An optional time parameter: RFC 3339, or a UTC day `YYYY-MM-DD` (its start; for an end of
/// a range, `end_of_day`, the start of the next day, so the day is included).
fn day_or_time_param(
    params: &HashMap<String, String>,
    key: &str,
    end_of_day: bool,
) -> Result<Option<OffsetDateTime>, ApiError> {
    let Some(text) = params.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &day) {
        let date = if end_of_day {
            date.next_day()
        } else {
            Some(date)
        };
        return Ok(date.map(|d| d.midnight().assume_utc()));
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{key} must be a day such as 2026-01-31 or an RFC 3339 time such as \
                     2026-01-31T00:00:00Z, got {text:?}"
                ),
            )
        })
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
