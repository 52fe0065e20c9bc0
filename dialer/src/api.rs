//! The campaigns API, behind the `ADMIN_TOKEN` bearer:
//! - `POST /api/campaigns`: `{"agent_id", "from", "calls_per_second", "max_concurrent",
//!   "contacts": [{"to", "vars", "time_zone"?}], "name"?, "paused"?, "retry"?,
//!   "calling_hours"?: {"start": "HH:MM", "end": "HH:MM"}, "time_zone"?}` -> `201 {"id"}`;
//!   dialing starts at once unless `"paused": true`;
//! - `GET /api/campaigns`: every campaign with its counts; `GET /api/campaigns/{id}`: one, with
//!   each contact's attempts and result;
//! - `POST /api/campaigns/{id}/pause`, `/resume`, `/cancel`;
//! - `POST /api/campaigns/{id}/contacts`: more contacts, as JSON (`{"contacts": [...]}`) or CSV
//!   (`Content-Type: text/csv`, see [`crate::csv`]); `GET /api/campaigns/{id}/contacts.csv`:
//!   the contacts with their attempts and results;
//! - `GET /api/dnc`, `POST /api/dnc` (`{"numbers": [...], "reason"?}`), `DELETE /api/dnc/{number}`:
//!   the do-not-call list, checked whenever a contact is about to be dialed.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use persister::auth::AdminToken;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use time::Time;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::outcome::RetryPolicy;
use crate::pacer::MIN_CALLS_PER_SECOND;
use crate::store::{self, CallingHours, Control, NewCampaign, NewContact};

/// Routes.
pub const CAMPAIGNS_PATH: &str = persister::campaigns::CAMPAIGNS_PATH;
pub const CAMPAIGN_PATH: &str = "/api/campaigns/{id}";
pub const CONTACTS_PATH: &str = "/api/campaigns/{id}/contacts";
pub const EXPORT_PATH: &str = "/api/campaigns/{id}/contacts.csv";
pub const DNC_PATH: &str = persister::campaigns::DNC_PATH;
pub const DNC_NUMBER_PATH: &str = "/api/dnc/{number}";

/// Largest request body (a campaign of 100,000 contacts with a few variables each).
pub const MAX_BODY_BYTES: usize = persister::campaigns::MAX_BODY_BYTES;
/// Most contacts one request may carry.
pub const MAX_CONTACTS: usize = 100_000;
/// Highest calls per second accepted (Twilio's highest account setting).
pub const MAX_CALLS_PER_SECOND: f64 = 100.0;
/// Most calls at once a campaign may ask for.
pub const MAX_CONCURRENT: u32 = 10_000;
/// Largest `vars` of one contact in the voice webhook's query (the gateway accepts queries of
/// `MAX_QUERY_BYTES`; the agent's id takes the rest).
const MAX_VARS_BYTES: usize = gateway::webhook::MAX_QUERY_BYTES - 200;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub token: Arc<AdminToken>,
    /// Wakes the dial loop (a campaign created or resumed).
    pub wake: Arc<Notify>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(CAMPAIGNS_PATH, post(create).get(list))
        .route(CAMPAIGN_PATH, get(show))
        .route("/api/campaigns/{id}/pause", post(pause))
        .route("/api/campaigns/{id}/resume", post(resume))
        .route("/api/campaigns/{id}/cancel", post(cancel))
        .route(CONTACTS_PATH, post(add_contacts))
        .route(EXPORT_PATH, get(export))
        .route(DNC_PATH, get(list_dnc).post(add_dnc))
        .route(DNC_NUMBER_PATH, delete(remove_dnc))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn database_error(e: sqlx::Error) -> Response {
    tracing::warn!(error = %e, "campaign API query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable",
    )
}

/// One contact as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    pub to: String,
    #[serde(default)]
    pub vars: Map<String, Value>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursRequest {
    start: String,
    end: String,
}

/// `POST /api/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignRequest {
    agent_id: String,
    from: String,
    calls_per_second: f64,
    max_concurrent: u32,
    contacts: Vec<ContactRequest>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    calling_hours: Option<HoursRequest>,
    #[serde(default)]
    time_zone: Option<String>,
}

/// E.164: `+`, a non-zero digit, 6 to 14 more digits.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn parse_time(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    Time::from_hms(h.parse().ok()?, m.parse().ok()?, 0).ok()
}

/// Checks contacts and turns them into rows.
pub fn contacts(requests: Vec<ContactRequest>) -> Result<Vec<NewContact>, String> {
    if requests.len() > MAX_CONTACTS {
        return Err(format!("at most {MAX_CONTACTS} contacts per request"));
    }
    requests
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let to = c.to.trim().to_owned();
            if !is_e164(&to) {
                return Err(format!("contacts[{i}].to must be an E.164 number"));
            }
            let vars = Value::Object(c.vars);
            if crate::place::voice_query("", &vars).len() > MAX_VARS_BYTES {
                return Err(format!(
                    "contacts[{i}].vars takes more than {MAX_VARS_BYTES} bytes in the call's URL"
                ));
            }
            Ok(NewContact {
                to,
                vars,
                time_zone: c.time_zone.filter(|z| !z.is_empty()),
            })
        })
        .collect()
}

/// Time zones named by `contacts` (and `zone`) that Postgres does not know, as an error.
async fn check_zones(
    pool: &PgPool,
    contacts: &[NewContact],
    zone: Option<&str>,
) -> Result<(), Response> {
    let mut zones: Vec<String> = contacts
        .iter()
        .filter_map(|c| c.time_zone.clone())
        .chain(zone.map(str::to_owned))
        .collect();
    zones.sort();
    zones.dedup();
    match store::unknown_time_zones(pool, &zones).await {
        Ok(unknown) if unknown.is_empty() => Ok(()),
        Ok(unknown) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("unknown time zone(s): {}", unknown.join(", ")),
        )),
        Err(e) => Err(database_error(e)),
    }
}

fn campaign(request: CampaignRequest) -> Result<NewCampaign, String> {
    if request.agent_id.trim().is_empty() || request.agent_id.len() > 128 {
        return Err("agent_id must be 1 to 128 characters".into());
    }
    if !is_e164(request.from.trim()) {
        return Err("from must be an E.164 number of the account".into());
    }
    let cps = request.calls_per_second;
    if !(cps.is_finite() && (MIN_CALLS_PER_SECOND..=MAX_CALLS_PER_SECOND).contains(&cps)) {
        return Err(format!(
            "calls_per_second must be between {MIN_CALLS_PER_SECOND:.6} and {MAX_CALLS_PER_SECOND}"
        ));
    }
    if !(1..=MAX_CONCURRENT).contains(&request.max_concurrent) {
        return Err(format!("max_concurrent must be 1..={MAX_CONCURRENT}"));
    }
    request.retry.validate()?;
    let hours = match request.calling_hours {
        None => None,
        Some(h) => {
            let (Some(start), Some(end)) = (parse_time(&h.start), parse_time(&h.end)) else {
                return Err("calling_hours.start and .end are HH:MM".into());
            };
            if start == end {
                return Err("calling_hours.start and .end must differ".into());
            }
            Some(CallingHours { start, end })
        }
    };
    Ok(NewCampaign {
        name: request.name,
        agent_id: request.agent_id.trim().to_owned(),
        from: request.from.trim().to_owned(),
        calls_per_second: cps,
        max_concurrent: request.max_concurrent as i32,
        paused: request.paused,
        retry: request.retry,
        hours,
        time_zone: request
            .time_zone
            .filter(|z| !z.is_empty())
            .unwrap_or_else(|| "UTC".to_owned()),
        contacts: contacts(request.contacts)?,
    })
}

async fn create(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let request: CampaignRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid campaign: {e}")),
    };
    let new = match campaign(request) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(refused) = check_zones(&state.pool, &new.contacts, Some(&new.time_zone)).await {
        return refused;
    }
    match store::create_campaign(&state.pool, &new).await {
        Ok(id) => {
            tracing::info!(%id, contacts = new.contacts.len(), paused = new.paused,
                "campaign created");
            state.wake.notify_waiters();
            (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
        }
        Err(e) => database_error(e),
    }
}

async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    match store::list_campaigns(&state.pool).await {
        Ok(campaigns) => Json(json!({"campaigns": campaigns})).into_response(),
        Err(e) => database_error(e),
    }
}

/// A campaign id from the path; a malformed one names no campaign.
fn campaign_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let Some(id) = campaign_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    match store::campaign(&state.pool, id).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such campaign"),
        Err(e) => database_error(e),
    }
}

async fn apply(state: ApiState, headers: HeaderMap, id: String, control: Control) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let Some(id) = campaign_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    match store::control(&state.pool, id, control).await {
        Ok(Some(now)) => {
            state.wake.notify_waiters();
            Json(json!({"id": id, "state": now})).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such campaign"),
        Err(e) => database_error(e),
    }
}

async fn pause(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    apply(s, h, id, Control::Pause).await
}

async fn resume(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    apply(s, h, id, Control::Resume).await
}

async fn cancel(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    apply(s, h, id, Control::Cancel).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsRequest {
    contacts: Vec<ContactRequest>,
}

fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/csv"))
}

async fn add_contacts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let Some(id) = campaign_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    let requests = if is_csv(&headers) {
        match std::str::from_utf8(&body)
            .map_err(|_| "the CSV is not UTF-8".to_owned())
            .and_then(crate::csv::contacts)
        {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    } else {
        match serde_json::from_slice::<ContactsRequest>(&body) {
            Ok(r) => r.contacts,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid contacts: {e}")),
        }
    };
    let new = match contacts(requests) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(refused) = check_zones(&state.pool, &new, None).await {
        return refused;
    }
    match store::add_contacts(&state.pool, id, &new).await {
        Ok(true) => {
            state.wake.notify_waiters();
            Json(json!({"id": id, "added": new.len()})).into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "no such campaign (or it was cancelled)",
        ),
        Err(e) => database_error(e),
    }
}

async fn export(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let Some(id) = campaign_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such campaign");
    };
    match store::campaign(&state.pool, id).await {
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such campaign"),
        Err(e) => return database_error(e),
        Ok(Some(_)) => {}
    }
    match store::contacts(&state.pool, id).await {
        Ok(contacts) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"campaign-{id}.csv\""),
                ),
            ],
            crate::csv::export(&contacts),
        )
            .into_response(),
        Err(e) => database_error(e),
    }
}

async fn list_dnc(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    match store::list_dnc(&state.pool).await {
        Ok(numbers) => Json(json!({"numbers": numbers})).into_response(),
        Err(e) => database_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DncRequest {
    numbers: Vec<String>,
    #[serde(default)]
    reason: String,
}

async fn add_dnc(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    let request: DncRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let numbers: Vec<String> = request
        .numbers
        .iter()
        .map(|n| n.trim().to_owned())
        .collect();
    if let Some(bad) = numbers.iter().find(|n| !is_e164(n)) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{bad:?} is not an E.164 number"),
        );
    }
    match store::add_dnc(&state.pool, &numbers, &request.reason).await {
        Ok(()) => Json(json!({"added": numbers.len()})).into_response(),
        Err(e) => database_error(e),
    }
}

async fn remove_dnc(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    if let Some(refused) = state.token.refusal(&headers) {
        return refused;
    }
    match store::remove_dnc(&state.pool, &number).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "not on the list"),
        Err(e) => database_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers_only() {
        assert!(is_e164("+15550001111"));
        assert!(is_e164("+4930123456"));
        for bad in [
            "15550001111",
            "+0555000111",
            "+1555",
            "+1555000111122223",
            "+1555a001111",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn campaigns_are_checked() {
        let base = || CampaignRequest {
            agent_id: "front-desk".into(),
            from: "+15550001111".into(),
            calls_per_second: 2.0,
            max_concurrent: 5,
            contacts: vec![ContactRequest {
                to: "+15550002222".into(),
                vars: Map::new(),
                time_zone: None,
            }],
            name: String::new(),
            paused: false,
            retry: RetryPolicy::default(),
            calling_hours: None,
            time_zone: None,
        };
        assert!(campaign(base()).is_ok());
        let mut r = base();
        r.calls_per_second = 0.0;
        assert!(campaign(r).unwrap_err().contains("calls_per_second"));
        let mut r = base();
        r.max_concurrent = 0;
        assert!(campaign(r).unwrap_err().contains("max_concurrent"));
        let mut r = base();
        r.contacts[0].to = "555".into();
        assert!(campaign(r).unwrap_err().contains("contacts[0].to"));
        let mut r = base();
        r.calling_hours = Some(HoursRequest {
            start: "25:00".into(),
            end: "10:00".into(),
        });
        assert!(campaign(r).unwrap_err().contains("HH:MM"));
        let mut r = base();
        r.calling_hours = Some(HoursRequest {
            start: "21:00".into(),
            end: "08:30".into(),
        });
        let hours = campaign(r).unwrap().hours.unwrap();
        assert_eq!((hours.start.hour(), hours.end.minute()), (21, 30));
    }
}
