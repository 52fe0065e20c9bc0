//! Test calls from the console: the agents a user may call, and the ticket that lets the
//! browser open `GET /web-call` on the gateway.
//!
//! The gateway has no access to the console's sessions, so a signed-in browser asks the
//! persister for a web-call ticket (`POST /api/web-call-ticket`, `{agent}`), signed with
//! `WEB_CALL_SECRET`, which the gateway shares ([`switchboard_service::web_call`]). The answer
//! holds the call id the ticket opens and the WebSocket URL to open, on the gateway's
//! `WEB_CALL_URL`. `GET /api/agents` lists the agents of `AGENTS_FILE` for the page's picker;
//! whether an agent exists is the worker's answer when the gateway offers the call.
//! Both routes sit behind the API's authentication (session cookie or admin token).

use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_agents::Agents;
use switchboard_service::web_call::{TICKET_TTL, TicketKey, new_call_id};

use crate::api::{ApiError, ApiState};
use crate::auth::Caller;

/// The route that issues tickets.
pub const TICKET_PATH: &str = "/api/web-call-ticket";
/// The route that lists the agents.
pub const AGENTS_PATH: &str = "/api/agents";
/// The gateway's route the ticket opens.
pub const GATEWAY_PATH: &str = "/web-call";
/// Longest agent id accepted.
const MAX_AGENT_ID: usize = 128;

/// The settings of test calls from the console.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WebCallArgs {
    /// The gateway's public base URL, e.g. `https://agent.example.com`: the page opens
    /// `wss://agent.example.com/web-call` there. Unset: no test calls.
    #[arg(long, env = "WEB_CALL_URL")]
    pub web_call_url: Option<String>,
    /// Key of web-call tickets, the same value as the gateway's. Unset: no test calls.
    #[arg(long, env = "WEB_CALL_SECRET", hide_env_values = true)]
    pub web_call_secret: Option<switchboard_service::redact::Secret>,
    /// The agents file the page offers agents from (the workers' `AGENTS_FILE`).
    #[arg(long, env = "AGENTS_FILE")]
    pub agents_file: Option<PathBuf>,
}

/// What the console needs to start web calls. Unconfigured parts make the routes answer 503
/// with what to set.
#[derive(Debug, Default)]
pub struct WebCalls {
    /// `WEB_CALL_SECRET`.
    pub key: Option<TicketKey>,
    /// `WEB_CALL_URL` as a WebSocket base (`ws://` or `wss://`, no trailing slash).
    pub socket_base: Option<String>,
    /// `AGENTS_FILE`, read on each listing (the workers reload it; the list follows).
    pub agents_file: Option<PathBuf>,
}

/// Why the web-call settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum WebCallConfigError {
    #[error("WEB_CALL_URL must be the gateway's http(s) base URL, got {0:?}")]
    Url(String),
}

impl WebCalls {
    /// From the settings (each optional).
    pub fn new(args: &WebCallArgs) -> Result<Self, WebCallConfigError> {
        let socket_base = match args
            .web_call_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(url) => Some(socket_base(url).ok_or_else(|| WebCallConfigError::Url(url.into()))?),
        };
        Ok(Self {
            key: args
                .web_call_secret
                .as_ref()
                .and_then(|s| TicketKey::new(s.expose())),
            socket_base,
            agents_file: args.agents_file.clone(),
        })
    }

    /// The origin the page connects to (for the console's `connect-src`).
    pub fn socket_origin(&self) -> Option<&str> {
        self.socket_base.as_deref()
    }
}

/// `https://gw.example.com/` -> `wss://gw.example.com` (None: not an http(s) URL with a host,
/// or one with a path, query or fragment).
fn socket_base(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url.split_once("://")?;
    let ws = match scheme.to_ascii_lowercase().as_str() {
        "https" => "wss",
        "http" => "ws",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{ws}://{}", rest.to_ascii_lowercase()))
}

/// `GET /api/agents`: `{agents: [{id, record}]}` from `AGENTS_FILE` (`record`: whether the
/// agent's calls are recorded, which the call page uses to say why a call has no recording).
pub async fn agents(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let Some(file) = state.web_calls.agents_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no agents file: set AGENTS_FILE",
        ));
    };
    let agents = tokio::task::spawn_blocking(move || Agents::load(file))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read the agents file");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        })?;
    let list: Vec<Value> = agents
        .all()
        .iter()
        .map(|agent| json!({ "id": agent.id, "record": agent.record }))
        .collect();
    Ok(Json(json!({ "agents": list })))
}

/// The ticket request.
#[derive(Debug, Deserialize)]
pub struct TicketRequest {
    pub agent: String,
}

/// `POST /api/web-call-ticket`: `{agent}` -> 201 `{call_sid, ticket, url, expires_in}`.
pub async fn ticket(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<TicketRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let agent = request.agent.trim();
    if agent.is_empty() || agent.len() > MAX_AGENT_ID || agent.chars().any(char::is_control) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid `agent`"));
    }
    let web = &state.web_calls;
    let (Some(key), Some(base)) = (web.key.as_ref(), web.socket_base.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "web calls are not configured: set WEB_CALL_URL and WEB_CALL_SECRET",
        ));
    };
    // The API's middleware let the request in; this names whom.
    let caller = state
        .access
        .caller(&headers)
        .await?
        .unwrap_or(Caller::Admin);
    let call_sid = new_call_id();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(TICKET_TTL)
        .as_secs();
    let ticket = key.issue(&call_sid, agent, caller.user(), expires);
    let query = serde_urlencoded::to_string([("agent", agent), ("ticket", ticket.as_str())])
        .unwrap_or_default();
    tracing::info!(%call_sid, agent, user = caller.user(), "web-call ticket issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "call_sid": call_sid,
            "ticket": ticket,
            "url": format!("{base}{GATEWAY_PATH}?{query}"),
            "expires_in": TICKET_TTL.as_secs(),
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_url_becomes_a_socket_base() {
        assert_eq!(
            socket_base("https://GW.example.com/").as_deref(),
            Some("wss://gw.example.com")
        );
        assert_eq!(
            socket_base("http://127.0.0.1:8080").as_deref(),
            Some("ws://127.0.0.1:8080")
        );
        assert_eq!(socket_base("https://gw.example.com/x"), None);
        assert_eq!(socket_base("gw.example.com"), None);
        assert_eq!(socket_base("ftp://gw"), None);
    }
}
