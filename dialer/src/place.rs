//! Placing one claimed call through Twilio's REST API.
//!
//! The call runs like any outbound call: Twilio fetches the gateway's voice webhook (naming the
//! campaign's agent), reports its progress to the gateway's status route, and asks for
//! asynchronous answering-machine detection whose verdict goes to the gateway's AMD route. The
//! gateway turns both into call events, which is how the dialer learns each call's result
//! ([`crate::results`]).
//!
//! Twilio answers 429 with error 20429 when too many REST requests are in flight at once: the
//! call was not created, so the request is repeated with the shared backoff, and the contact
//! never fails for it; if the campaign is paused or cancelled meanwhile (or the dialer stops),
//! the claim is given back instead. Any other refusal ends the attempt as `failed` (its retry rule then
//! applies). A request whose answer was lost (timeout, connection reset) may have created the
//! call, so it is not repeated: the attempt ends as `failed` rather than risk dialing twice.

use std::sync::Arc;
use std::time::Duration;

use gateway::amd::{AMD_PARAMETER, AMD_PATH, ASYNC_AMD};
use gateway::twilio_rest::{CreatedCall, NewCall, RestError, TwilioRest};
use gateway::webhook::{STATUS_PATH, VAR_PARAMETER_PREFIX, VOICE_PATH};
use sqlx::PgPool;
use switchboard_service::backoff::Backoff;
use switchboard_service::redact::MaskedPhone;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::pacer::Clock;
use crate::store::{self, AttemptKey, Claimed};

/// Twilio's error code for too many concurrent REST requests.
pub const TOO_MANY_REQUESTS_CODE: u32 = 20429;
/// Seconds Twilio lets the phone ring before `no-answer`.
pub const RING_TIMEOUT_SECONDS: &str = "30";

/// What every placement needs.
#[derive(Clone)]
pub struct Placer {
    pub rest: TwilioRest,
    /// The gateway's public base URL (no trailing slash).
    pub public_url: Arc<str>,
    pub pool: PgPool,
    pub clock: Clock,
}

/// True for Twilio's "too many concurrent requests" answer.
pub fn is_too_many_requests(error: &RestError) -> bool {
    matches!(error, RestError::Status { status, code, .. }
        if *status == 429 || *code == TOO_MANY_REQUESTS_CODE)
}

impl Placer {
    /// The call Twilio is asked to place for `claimed`.
    pub fn new_call(&self, claimed: &Claimed) -> NewCall {
        let query = voice_query(&claimed.agent_id, &claimed.vars);
        NewCall {
            to: claimed.to.clone(),
            from: claimed.from.clone(),
            url: format!("{}{VOICE_PATH}?{query}", self.public_url),
            status_callback: format!("{}{STATUS_PATH}", self.public_url),
        }
    }

    /// The asynchronous answering-machine detection parameters.
    pub fn amd_params(&self) -> [(&'static str, String); 5] {
        [
            ("MachineDetection", "DetectMessageEnd".to_owned()),
            ("AsyncAmd", "true".to_owned()),
            (
                "AsyncAmdStatusCallback",
                format!("{}{AMD_PATH}", self.public_url),
            ),
            ("AsyncAmdStatusCallbackMethod", "POST".to_owned()),
            ("Timeout", RING_TIMEOUT_SECONDS.to_owned()),
        ]
    }

    /// Places the call, repeating 20429s until Twilio takes it, the campaign is no longer
    /// running (`None`: nothing was placed), or `stop`.
    async fn create(
        &self,
        claimed: &Claimed,
        call: &NewCall,
        stop: &CancellationToken,
    ) -> Option<Result<CreatedCall, RestError>> {
        let extra = self.amd_params();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.rest.create_call_with(call, &extra).await {
                Err(e) if is_too_many_requests(&e) => {
                    metrics::counter!(m::TWILIO_THROTTLED).increment(1);
                    tracing::debug!("Twilio answered 20429; retrying");
                    backoff.wait_or(stop).await;
                    let running = store::is_running(&self.pool, claimed.campaign_id).await;
                    if stop.is_cancelled() || matches!(running, Ok(false)) {
                        return None;
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// Places `claimed`'s call and stores what came of the request.
    pub async fn place(self, claimed: Claimed, stop: CancellationToken) {
        let call = self.new_call(&claimed);
        let stored = match self.create(&claimed, &call, &stop).await {
            None => store::release_unplaced(&self.pool, claimed.attempt_id).await,
            Some(Ok(created)) => {
                metrics::counter!(m::CALLS_PLACED).increment(1);
                tracing::info!(call_sid = %created.sid, to = %MaskedPhone(&claimed.to),
                    campaign = %claimed.campaign_id, "campaign call placed");
                store::record_call_sid(&self.pool, claimed.attempt_id, &created.sid).await
            }
            Some(Err(error)) => {
                metrics::counter!(m::CALLS_REFUSED).increment(1);
                tracing::warn!(%error, to = %MaskedPhone(&claimed.to),
                    campaign = %claimed.campaign_id, "placing a campaign call failed");
                store::finish_attempt(
                    &self.pool,
                    AttemptKey::Id(claimed.attempt_id),
                    "failed",
                    Some(&error.to_string()),
                    false,
                    self.clock.now(),
                )
                .await
                .map(|_| ())
            }
        };
        if let Err(error) = stored {
            // The attempt stays open without a CallSid; it is expired as failed later.
            tracing::warn!(%error, attempt = claimed.attempt_id, "storing a placement failed");
        }
    }
}

/// The voice webhook's query: the agent, that the call runs asynchronous AMD (so the agent
/// holds its greeting for the verdict, see [`gateway::amd`]), and the contact's variables as
/// `var.<name>` (the gateway passes them to the agent's instructions). Values that are not
/// strings are written as JSON.
pub fn voice_query(agent_id: &str, vars: &serde_json::Value) -> String {
    let mut pairs = vec![
        ("agent".to_owned(), agent_id.to_owned()),
        (AMD_PARAMETER.to_owned(), ASYNC_AMD.to_owned()),
    ];
    if let Some(vars) = vars.as_object() {
        for (name, value) in vars {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            pairs.push((format!("{VAR_PARAMETER_PREFIX}{name}"), value));
        }
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_ride_in_the_voice_url() {
        let vars = serde_json::json!({"name": "Jane Doe", "visits": 3});
        assert_eq!(
            voice_query("front desk", &vars),
            "agent=front+desk&amd=async&var.name=Jane+Doe&var.visits=3"
        );
        assert_eq!(
            voice_query("a", &serde_json::json!({})),
            "agent=a&amd=async"
        );
    }

    #[test]
    fn only_20429_and_429_are_repeated() {
        let status = |status, code| RestError::Status {
            status,
            code,
            message: String::new(),
        };
        assert!(is_too_many_requests(&status(429, 20429)));
        assert!(is_too_many_requests(&status(429, 0)));
        assert!(!is_too_many_requests(&status(400, 21211)));
        assert!(!is_too_many_requests(&status(503, 0)));
    }
}
