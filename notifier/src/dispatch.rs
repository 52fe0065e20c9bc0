//! Sending: one task per endpoint, so a slow or dead endpoint only ever delays itself.
//!
//! Each endpoint's task claims its due deliveries (a few at a time, sent concurrently), signs
//! every attempt afresh with its own `webhook-timestamp` (the `webhook-id` and body stay), and
//! records the outcome:
//! - 2xx: delivered;
//! - 410 Gone: the delivery fails and the endpoint is disabled until enabled through the API;
//! - anything else, a redirect, a timeout or a refused connection: retried after
//!   [`retry_delay`] (exponential with jitter from [`switchboard_service::backoff`], at least
//!   the response's `Retry-After`), until the attempts run out: then the delivery is kept as
//!   failed and can be re-sent.
//!
//! The end-of-call report is built at its first attempt, once the call's events have been
//! quiet for [`REPORT_QUIET`] (at most [`REPORT_MAX_WAIT`] after `ended`), so events published
//! shortly after `ended` are in it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use sqlx::PgPool;
use switchboard_service::backoff::Backoff;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use persister::webhook_log::error_chain;

use crate::endpoints::{CALL_ENDED, Endpoint};
use crate::signature::headers;
use crate::store::{self, Attempt, Claimed, Next};
use crate::{report, ssrf};

/// How deliveries are sent and retried.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An attempt not answered within this is a failure (Standard Webhooks: 15-30 s).
    pub timeout: Duration,
    /// The first retry's nominal delay; each retry doubles it up to `max_retry_delay`.
    pub first_retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Attempts before a delivery is given up (and kept, for re-sending).
    pub max_attempts: u32,
    /// Deliveries in flight per endpoint.
    pub per_endpoint: usize,
    /// An end-of-call report body above this carries a link instead of the transcript.
    pub max_payload_bytes: usize,
    /// Base URL of the persister's read API, for the transcript link.
    pub api_base: Option<String>,
}

impl Default for Settings {
    /// About three days of retries: 5 s, 10 s, 20 s, ... up to 10 h between attempts.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            first_retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(10 * 3600),
            max_attempts: 20,
            per_endpoint: 4,
            max_payload_bytes: 20_000,
            api_base: None,
        }
    }
}

/// The delay before the retry following the `failed`-th failed attempt (from 1): the
/// backoff's step for it, or `retry_after` when that is longer (capped at the maximum step).
pub fn retry_delay(settings: &Settings, failed: u32, retry_after: Option<Duration>) -> Duration {
    let mut backoff = Backoff::new(settings.first_retry_delay, settings.max_retry_delay);
    let mut delay = backoff.next_delay();
    for _ in 1..failed.max(1) {
        delay = backoff.next_delay();
    }
    match retry_after {
        Some(after) => delay.max(after.min(settings.max_retry_delay)),
        None => delay,
    }
}

/// The wall clock, read through tokio's clock so tests on a paused clock move it.
pub use switchboard_service::clock::Clock;

/// The HTTP clients: one whose resolver refuses non-public addresses, one for endpoints
/// allowed the private network. Neither follows redirects nor uses a proxy.
#[derive(Debug, Clone)]
pub struct Clients {
    public: reqwest::Client,
    private: reqwest::Client,
}

impl Clients {
    pub fn new() -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            public: builder().dns_resolver(ssrf::PublicResolver).build()?,
            private: builder().build()?,
        })
    }

    fn for_endpoint(&self, endpoint: &Endpoint) -> &reqwest::Client {
        if endpoint.allow_private_network {
            &self.private
        } else {
            &self.public
        }
    }
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub error: Option<String>,
}

/// One signed POST of `body` as `id` to `endpoint`, bounded by `timeout` (sending, the
/// response and its body).
pub async fn attempt(
    clients: &Clients,
    endpoint: &Endpoint,
    id: &str,
    webhook_timestamp: i64,
    body: &str,
    timeout: Duration,
) -> Answer {
    if !endpoint.allow_private_network
        && let Err(refused) = ssrf::check_literal(&endpoint.url)
    {
        return Answer {
            status: None,
            retry_after: None,
            error: Some(refused.to_string()),
        };
    }
    let request = clients
        .for_endpoint(endpoint)
        .post(endpoint.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(headers::ID, id)
        .header(headers::TIMESTAMP, webhook_timestamp.to_string())
        .header(
            headers::SIGNATURE,
            endpoint.key.sign(id, webhook_timestamp, body),
        )
        .body(body.to_owned());
    let exchange = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The body is read (and dropped) so the connection can be reused.
        let _ = response.bytes().await;
        Ok::<_, reqwest::Error>((status, retry_after))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, retry_after))) => Answer {
            status: Some(status),
            retry_after,
            error: None,
        },
        Ok(Err(error)) => Answer {
            status: None,
            retry_after: None,
            error: Some(error_chain(&error)),
        },
        Err(_) => Answer {
            status: None,
            retry_after: None,
            error: Some(format!("no answer within {} s", timeout.as_secs_f64())),
        },
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = OffsetDateTime::parse(value.trim(), &format).ok()?;
    let left = at - OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or_default())
}

/// What a finished attempt leads to.
pub fn next(
    settings: &Settings,
    answer: &Answer,
    attempts_before: i32,
    now: OffsetDateTime,
) -> Next {
    match answer.status {
        Some(s) if (200..300).contains(&s) => Next::Delivered,
        Some(410) => Next::EndpointGone,
        _ => {
            let failed = (attempts_before + 1) as u32;
            if failed >= settings.max_attempts {
                Next::GiveUp
            } else {
                Next::RetryAt(now + retry_delay(settings, failed, answer.retry_after))
            }
        }
    }
}

/// The end-of-call report is built once no event of the call has arrived for this long...
pub const REPORT_QUIET: Duration = crate::consumer::REPORT_SETTLE;
/// ...or this long after `ended` was scheduled, whichever comes first.
pub const REPORT_MAX_WAIT: Duration = Duration::from_secs(10);

/// How often an idle endpoint task looks for due deliveries anyway (another replica may have
/// scheduled them, or a re-send came through another replica's API).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How long a database failure pauses an endpoint task.
const DB_RETRY: Duration = Duration::from_secs(2);

/// Sends `endpoint`'s deliveries until `stop`. `wake` is notified when new deliveries are
/// scheduled for it.
pub async fn run_endpoint(
    endpoint: Endpoint,
    clients: Clients,
    pool: PgPool,
    settings: Arc<Settings>,
    clock: Clock,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let url = endpoint.url.to_string();
    let lease = settings.timeout + Duration::from_secs(5);
    while !stop.is_cancelled() {
        let pause = match round(&endpoint, &url, &clients, &pool, &settings, clock, lease).await {
            Ok(Round::Sent) => continue,
            Ok(Round::Idle(until)) => until,
            Err(error) => {
                tracing::warn!(%error, endpoint = %url, "webhook delivery state unavailable");
                Some(DB_RETRY)
            }
        };
        let pause = pause.unwrap_or(IDLE_POLL).min(IDLE_POLL);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => {}
        }
    }
}

enum Round {
    Sent,
    /// Nothing due; the next delivery is due in this long (if any is pending).
    Idle(Option<Duration>),
}

async fn round(
    endpoint: &Endpoint,
    url: &str,
    clients: &Clients,
    pool: &PgPool,
    settings: &Settings,
    clock: Clock,
    lease: Duration,
) -> Result<Round, sqlx::Error> {
    if store::is_disabled(pool, url).await? {
        return Ok(Round::Idle(None));
    }
    let claimed = store::claim(pool, url, clock.now(), lease, settings.per_endpoint as i64).await?;
    if claimed.is_empty() {
        let due = store::next_due(pool, url).await?;
        return Ok(Round::Idle(due.map(|at| {
            Duration::try_from(at - clock.now()).unwrap_or_default()
        })));
    }
    let results = join_all(
        claimed
            .into_iter()
            .map(|c| deliver(endpoint, url, clients, pool, settings, clock, c)),
    )
    .await;
    for result in results {
        result?;
    }
    Ok(Round::Sent)
}

async fn deliver(
    endpoint: &Endpoint,
    url: &str,
    clients: &Clients,
    pool: &PgPool,
    settings: &Settings,
    clock: Clock,
    claimed: Claimed,
) -> Result<(), sqlx::Error> {
    let body = match &claimed.body {
        Some(body) => body.clone(),
        None => {
            // Events published just after `ended` (Twilio's final status, a last usage) are
            // part of the report: it waits until the call has been quiet for a moment.
            if let Some(wait) = store::report_wait(
                pool,
                &claimed.id,
                &claimed.call_sid,
                REPORT_QUIET,
                REPORT_MAX_WAIT,
            )
            .await?
            {
                return store::postpone(pool, &claimed.id, clock.now() + wait).await;
            }
            let events = store::call_events(pool, &claimed.call_sid).await?;
            let ended_at = events
                .iter()
                .rev()
                .find(|e| e.get("kind").and_then(|k| k.as_str()) == Some("ended"))
                .and_then(|e| e.get("at_ms").and_then(|a| a.as_i64()))
                .unwrap_or_default();
            let report = report::end_of_call(&claimed.call_sid, &events);
            let body = report::end_of_call_body(
                report,
                ended_at,
                settings.max_payload_bytes,
                settings.api_base.as_deref(),
            );
            store::fix_body(pool, &claimed.id, &body).await?
        }
    };
    debug_assert!(claimed.event_type != CALL_ENDED || !body.is_empty());
    let at = clock.now();
    let webhook_timestamp = at.unix_timestamp();
    let started = Instant::now();
    let answer = attempt(
        clients,
        endpoint,
        &claimed.id,
        webhook_timestamp,
        &body,
        settings.timeout,
    )
    .await;
    let latency = started.elapsed();
    let next = next(settings, &answer, claimed.attempts, clock.now());
    let result = match next {
        Next::Delivered => "delivered",
        Next::RetryAt(_) => "retry",
        Next::GiveUp => "gave_up",
        Next::EndpointGone => "gone",
    };
    metrics::counter!(crate::metrics::ATTEMPTS, "result" => result).increment(1);
    metrics::histogram!(crate::metrics::ATTEMPT_SECONDS).record(latency.as_secs_f64());
    if next != Next::Delivered {
        tracing::info!(endpoint = %url, id = %claimed.id, status = ?answer.status,
            error = ?answer.error, ?next, "webhook attempt failed");
    }
    store::record(
        pool,
        url,
        &claimed,
        &Attempt {
            at,
            webhook_timestamp,
            status: answer.status,
            latency,
            error: answer.error.as_deref(),
        },
        next,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_with_jitter_and_span_days() {
        let settings = Settings::default();
        let mut total = Duration::ZERO;
        for failed in 1..settings.max_attempts {
            let delay = retry_delay(&settings, failed, None);
            let step = (settings.first_retry_delay * 2u32.pow((failed - 1).min(20)))
                .min(settings.max_retry_delay);
            assert!(
                delay >= step / 2 && delay <= step,
                "{failed}: {delay:?} vs {step:?}"
            );
            total += delay;
        }
        assert!(total > Duration::from_secs(36 * 3600), "{total:?}");
    }

    #[test]
    fn retry_after_lengthens_the_delay_but_is_capped() {
        let settings = Settings::default();
        let delay = retry_delay(&settings, 1, Some(Duration::from_secs(120)));
        assert_eq!(delay, Duration::from_secs(120));
        let delay = retry_delay(&settings, 1, Some(Duration::from_secs(365 * 86400)));
        assert_eq!(delay, settings.max_retry_delay);
        assert!(
            retry_delay(&settings, 1, Some(Duration::from_secs(1))) >= Duration::from_millis(2500)
        );
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn outcomes_by_status() {
        let settings = Settings::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let answer = |status| Answer {
            status,
            retry_after: None,
            error: None,
        };
        assert_eq!(next(&settings, &answer(Some(204)), 0, now), Next::Delivered);
        assert_eq!(
            next(&settings, &answer(Some(410)), 0, now),
            Next::EndpointGone
        );
        assert!(matches!(
            next(&settings, &answer(Some(302)), 0, now),
            Next::RetryAt(_)
        ));
        assert!(matches!(
            next(&settings, &answer(None), 0, now),
            Next::RetryAt(_)
        ));
        assert_eq!(
            next(
                &settings,
                &answer(Some(500)),
                settings.max_attempts as i32 - 1,
                now
            ),
            Next::GiveUp
        );
    }
}
