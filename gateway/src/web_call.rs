//! `GET /web-call?agent=<id>`: a test call from the console, in a browser, with no phone.
//!
//! The browser speaks Twilio's Media Streams messages on the socket (`connected`, `start`,
//! `media`, `mark`, `stop` in; `media`, `mark`, `clear` out), so the same stream actor
//! ([`crate::stream`]) and every worker path serve it. What differs is how the call begins:
//! there is no webhook, so the gateway creates the call itself (a `WB` call id), claims it in
//! the `voice-calls` bucket and offers it to the workers as the webhook would (direction
//! `web`), before the upgrade. The browser's `start` then gets the call id and stream token
//! filled in by the gateway; whatever the browser put there is ignored.
//!
//! Checked before the upgrade, in this order (nothing is offered until all pass):
//!
//! 1. `Origin`, when sent (browsers always send it), must be `PUBLIC_URL`'s origin or
//!    `CONSOLE_URL`'s: else 403. A page elsewhere cannot open calls with a user's credentials.
//! 2. Credentials: `Authorization: Bearer <ADMIN_TOKEN>`, or `?ticket=` a web-call ticket the
//!    persister issued to a signed-in console user ([`switchboard_service::web_call`]): else
//!    401 (none) or 403 (wrong, expired, or for another agent).
//! 3. `agent`: required and a short id: else 400. (Whether it exists is the worker's answer,
//!    from the agents file it has loaded now: `no_agent` is a 503 like any refused offer.)
//! 4. Not draining (503); at most `WEB_CALLS_PER_USER` web calls per user and `WEB_CALLS_MAX`
//!    in all on this instance (429), and a `MAX_STREAMS` permit (503).
//! 5. The call id is claimed once (a ticket used twice: 409) and offered; nobody takes it: 503.
//!
//! A web call has no Twilio call behind it: the stream actor never calls Twilio's REST API for
//! it (a worker's hang-up just closes the socket once the audio has played) and refuses
//! transfers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchboard_proto::{Direction, now_ms};
use switchboard_service::web_call::new_call_id;
use switchboard_twilio::webhook::CallForm;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use crate::claims::OfferClaim;
use crate::metrics as m;
use crate::offer::{self, OfferOutcome};
use crate::shared::Shared;
use crate::stream_token::{StreamGrant, unix_now};

/// The route.
pub const WEB_CALL_PATH: &str = "/web-call";
/// Longest agent id accepted.
const MAX_AGENT_ID: usize = 128;
/// Who the admin token's calls count against.
pub const ADMIN_USER: &str = "admin";
/// The `From` of a web call's offer and record: there is no phone number.
pub const WEB_CALLER: &str = "browser";

/// What a web call's socket needs from the upgrade: the call it belongs to.
#[derive(Debug, Clone)]
pub struct WebCall {
    /// The `WB` call id.
    pub call_sid: String,
    /// The stream token the gateway issued for it (the browser never sees it).
    pub token: String,
}

/// The query string.
#[derive(Debug, Deserialize)]
pub struct WebCallQuery {
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub ticket: Option<String>,
}

/// Open web calls on this instance, in all and per user: one semaphore for all, one per user
/// (a user's entry is dropped once none of its calls is open).
#[derive(Debug)]
pub struct WebCallLimits {
    total: Arc<Semaphore>,
    per_user: usize,
    users: tokio::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One open web call, counted until dropped.
#[derive(Debug)]
pub struct WebCallSlot {
    _total: OwnedSemaphorePermit,
    _user: OwnedSemaphorePermit,
}

/// Which limit a new web call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    PerUser,
    Total,
}

impl WebCallLimits {
    pub fn new(max: usize, per_user: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max)),
            per_user,
            users: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `user`, unless a limit is reached.
    pub async fn acquire(&self, user: &str) -> Result<WebCallSlot, LimitHit> {
        let user_permit = {
            let mut users = self.users.lock().await;
            users.retain(|_, s| s.available_permits() < self.per_user);
            let mine = users
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)));
            mine.clone()
                .try_acquire_owned()
                .map_err(|_| LimitHit::PerUser)?
        };
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| LimitHit::Total)?;
        Ok(WebCallSlot {
            _total: total,
            _user: user_permit,
        })
    }
}

/// A refused upgrade: status, metric reason and message.
#[derive(Debug)]
struct Refused(StatusCode, &'static str, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let Self(status, reason, message) = self;
        metrics::counter!(m::WEB_CALLS_REFUSED, "reason" => reason).increment(1);
        tracing::info!(reason, %message, "web call refused");
        (status, message).into_response()
    }
}

fn refuse(status: StatusCode, reason: &'static str, message: &str) -> Response {
    Refused(status, reason, message.to_owned()).into_response()
}

/// Who is calling: the user the limits count and the call id to use.
fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    query: &WebCallQuery,
) -> Result<(String, String), Refused> {
    if headers.contains_key(header::AUTHORIZATION) {
        return if crate::calls::authorized(headers, shared.admin_token.as_ref()) {
            Ok((ADMIN_USER.to_owned(), new_call_id()))
        } else {
            Err(Refused(
                StatusCode::FORBIDDEN,
                "unauthorized",
                "wrong bearer token".to_owned(),
            ))
        };
    }
    let Some(ticket) = query.ticket.as_deref().filter(|t| !t.is_empty()) else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in to the console (web-call ticket) or use the admin token".to_owned(),
        ));
    };
    let Some(key) = shared.web_call_key.as_ref() else {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "unauthorized",
            "web-call tickets are not accepted here (no WEB_CALL_SECRET)".to_owned(),
        ));
    };
    match key.verify(ticket, &query.agent, unix_now()) {
        Ok(ticket) => Ok((ticket.user, ticket.call_id)),
        Err(error) => Err(Refused(
            StatusCode::FORBIDDEN,
            "unauthorized",
            error.to_string(),
        )),
    }
}

/// The upgrade handler.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<WebCallQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .ok()
            .and_then(crate::config::origin_of)
            .is_some_and(|o| shared.web_call_origins.contains(&o));
        if !allowed {
            return refuse(
                StatusCode::FORBIDDEN,
                "origin",
                "web calls are not accepted from this origin",
            );
        }
    }
    let Ok(Query(query)) = query else {
        return refuse(StatusCode::BAD_REQUEST, "agent", "malformed query string");
    };
    let (user, call_sid) = match caller(&shared, &headers, &query) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    let agent = query.agent.trim();
    if agent.is_empty() || agent.len() > MAX_AGENT_ID || agent.chars().any(char::is_control) {
        return refuse(StatusCode::BAD_REQUEST, "agent", "`agent` is required");
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if shared.draining.is_cancelled() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "draining", "draining");
    }
    let slot = match shared.web_calls.acquire(&user).await {
        Ok(slot) => slot,
        Err(LimitHit::PerUser) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "per_user",
                "too many web calls open: over WEB_CALLS_PER_USER",
            );
        }
        Err(LimitHit::Total) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "web_calls_max",
                "too many web calls open: over WEB_CALLS_MAX",
            );
        }
    };
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        metrics::counter!(m::STREAMS_REFUSED, "reason" => "max_streams").increment(1);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "max_streams",
            "too many streams",
        );
    };
    let span = tracing::info_span!(parent: None, "webhook", %call_sid, direction = "web");
    let agent = agent.to_owned();
    let started = async {
        let claim = match shared.claims().await {
            Ok(claims) => claims.claim_offer(&call_sid, &agent).await,
            Err(error) => Err(error),
        };
        match claim {
            Ok(OfferClaim::First) => {}
            Ok(OfferClaim::Replay) => {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    "replay",
                    "this web-call ticket was used already",
                ));
            }
            Err(error) => {
                metrics::counter!(m::CLAIM_ERRORS, "what" => "offer").increment(1);
                tracing::error!(%error, "cannot claim the web call");
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "replay check unavailable",
                ));
            }
        }
        let form = CallForm {
            call_sid: call_sid.clone(),
            from: WEB_CALLER.to_owned(),
            ..Default::default()
        };
        let mut call_offer = offer::call_offer(&form, &shared.gateway_id, now_ms());
        call_offer.set_direction(Direction::Web);
        call_offer.agent_id.clone_from(&agent);
        match offer::offer(
            &shared.nats,
            &shared.subjects,
            &call_offer,
            shared.offer_timeout,
        )
        .await
        {
            OfferOutcome::Accepted { worker_id, .. } => {
                metrics::counter!(m::OFFERS_ACCEPTED).increment(1);
                tracing::info!(%worker_id, %agent, %user, "web call accepted");
                let expires = unix_now().saturating_add(shared.token_ttl_seconds);
                Ok(WebCall {
                    token: shared.tokens.issue(&call_sid, StreamGrant::FIRST, expires),
                    call_sid: call_sid.clone(),
                })
            }
            OfferOutcome::Rejected { reason } => {
                metrics::counter!(m::OFFERS_REJECTED, "reason" => reason.clone()).increment(1);
                metrics::counter!(m::WEB_CALLS_REFUSED, "reason" => reason.clone()).increment(1);
                tracing::warn!(%reason, %agent, "no worker took the web call");
                shared
                    .events
                    .publish(offer::rejected_event(&form, &reason, now_ms()));
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no worker took the call: {reason}"),
                )
                    .into_response())
            }
        }
    }
    .instrument(span)
    .await;
    let web = match started {
        Ok(web) => web,
        Err(response) => return response,
    };
    metrics::counter!(m::WEB_CALLS).increment(1);
    let tracked = shared.tracker.token();
    crate::media::sized(ws)
        .on_failed_upgrade(|error| tracing::warn!(%error, "web call upgrade failed"))
        .on_upgrade(move |socket| async move {
            crate::stream::run(socket, shared, Some(web)).await;
            drop(permit);
            drop(slot);
            drop(tracked);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_count_per_user_and_in_all() {
        let limits = WebCallLimits::new(3, 2);
        let a1 = limits.acquire("a").await.unwrap();
        let _a2 = limits.acquire("a").await.unwrap();
        assert_eq!(limits.acquire("a").await.unwrap_err(), LimitHit::PerUser);
        let _b1 = limits.acquire("b").await.unwrap();
        assert_eq!(limits.acquire("c").await.unwrap_err(), LimitHit::Total);
        drop(a1);
        let c1 = limits.acquire("c").await.unwrap();
        assert_eq!(limits.acquire("a").await.unwrap_err(), LimitHit::Total);
        // A user without open calls is forgotten.
        drop(c1);
        let _b2 = limits.acquire("b").await.unwrap();
        assert!(!limits.users.lock().await.contains_key("c"));
    }
}
