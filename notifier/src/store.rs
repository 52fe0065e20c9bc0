//! The notifier's Postgres state (`migrations/`): the call events kept for end-of-call
//! reports, one row per delivery owed, every attempt, and the endpoints that answered 410.
//!
//! A delivery's `webhook-id` is derived from the endpoint and the event's `Nats-Msg-Id`, and its
//! row is inserted once: an event redelivered by JetStream, or consumed again after a restart,
//! finds the row already there, so a `webhook-id` is never sent with two different bodies. The
//! end-of-call report's body is written once, at its first attempt, and read back from then on.
//!
//! Replicas share the rows: a delivery is claimed with `FOR UPDATE SKIP LOCKED` by pushing its
//! `next_attempt_at` past the attempt's timeout (a lease), so a replica that dies mid-attempt
//! only delays the delivery until the lease runs out.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use time::OffsetDateTime;

/// The schema, embedded at build time and applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A delivery's state, as stored and shown in the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet delivered; attempted when due.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Gave up (attempts exhausted, or the endpoint answered 410). Kept; can be re-sent.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// The `webhook-id` of the event `msg_id` (`<call_sid>:<seq>`) for the endpoint at `url`.
pub fn webhook_id(url: &str, msg_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(url.as_bytes())
        .chain_update(b"\n")
        .chain_update(msg_id.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// Keeps a call event (as JSON) for the call's end-of-call report.
pub async fn keep_event(
    tx: &mut Transaction<'_, Postgres>,
    call_sid: &str,
    seq: u64,
    kind: &str,
    at_ms: i64,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifier_call_events (call_sid, seq, kind, at_ms, data)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(call_sid)
    .bind(seq as i64)
    .bind(kind)
    .bind(at_ms)
    .bind(data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery to schedule.
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub endpoint_url: &'a str,
    pub event_type: &'a str,
    pub call_sid: &'a str,
    /// `None` for an end-of-call report, built at its first attempt.
    pub body: Option<&'a str>,
    pub due: OffsetDateTime,
}

/// Schedules a delivery unless it already exists (then nothing about it changes).
pub async fn schedule(
    tx: &mut Transaction<'_, Postgres>,
    d: &NewDelivery<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_url, event_type, call_sid, body, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id)
    .bind(d.endpoint_url)
    .bind(d.event_type)
    .bind(d.call_sid)
    .bind(d.body)
    .bind(d.due)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_type: String,
    pub call_sid: String,
    pub body: Option<String>,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries of `url` for `lease`.
pub async fn claim(
    pool: &PgPool,
    url: &str,
    now: OffsetDateTime,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $3
         WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE endpoint_url = $1 AND state = 'pending' AND next_attempt_at <= $2
             ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING id, event_type, call_sid, body, attempts",
    )
    .bind(url)
    .bind(now)
    .bind(now + lease)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.get("id"),
            event_type: r.get("event_type"),
            call_sid: r.get("call_sid"),
            body: r.get("body"),
            attempts: r.get("attempts"),
        })
        .collect())
}

/// When the next pending delivery of `url` is due.
pub async fn next_due(pool: &PgPool, url: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM webhook_deliveries
         WHERE endpoint_url = $1 AND state = 'pending'",
    )
    .bind(url)
    .fetch_one(pool)
    .await
}

/// The call's kept events, in order.
pub async fn call_events(pool: &PgPool, call_sid: &str) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT data FROM notifier_call_events WHERE call_sid = $1 ORDER BY seq")
        .bind(call_sid)
        .fetch_all(pool)
        .await
}

/// How much longer the end-of-call report of delivery `id` (of `call_sid`) should wait for the
/// call's events: until none has arrived for `quiet`, but no longer than `max_wait` after the
/// delivery was scheduled. `None`: build it now. Measured on the database's clock, which also
/// stamped the events' arrival.
pub async fn report_wait(
    pool: &PgPool,
    id: &str,
    call_sid: &str,
    quiet: Duration,
    max_wait: Duration,
) -> Result<Option<Duration>, sqlx::Error> {
    let left: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM least(
                    (SELECT max(kept_at) FROM notifier_call_events WHERE call_sid = $2)
                        + make_interval(secs => $3),
                    (SELECT created_at FROM webhook_deliveries WHERE id = $1)
                        + make_interval(secs => $4))
                - now())::float8",
    )
    .bind(id)
    .bind(call_sid)
    .bind(quiet.as_secs_f64())
    .bind(max_wait.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(left
        .filter(|s| *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(max_wait.as_secs_f64()))))
}

/// Puts a claimed delivery off until `at` without counting an attempt.
pub async fn postpone(pool: &PgPool, id: &str, at: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

/// Stores `body` as the delivery's body unless it has one, and returns the one it has.
pub async fn fix_body(pool: &PgPool, id: &str, body: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "WITH set AS (UPDATE webhook_deliveries SET body = $2 WHERE id = $1 AND body IS NULL
                      RETURNING body)
         SELECT body FROM set UNION ALL
         SELECT body FROM webhook_deliveries WHERE id = $1 AND body IS NOT NULL",
    )
    .bind(id)
    .bind(body)
    .fetch_one(pool)
    .await
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(OffsetDateTime),
    GiveUp,
    /// 410: the delivery fails and the endpoint is disabled.
    EndpointGone,
}

/// One attempt, as logged.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub at: OffsetDateTime,
    pub webhook_timestamp: i64,
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<&'a str>,
}

/// Logs an attempt of `claimed` and moves the delivery on.
pub async fn record(
    pool: &PgPool,
    url: &str,
    claimed: &Claimed,
    attempt: &Attempt<'_>,
    next: Next,
) -> Result<(), sqlx::Error> {
    let number = claimed.attempts + 1;
    let mut tx = pool.begin().await?;
    // The log numbers every attempt ever made, across re-sends (which restart the budget).
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, webhook_timestamp, status, latency_ms, error)
         SELECT $1, coalesce(max(attempt), 0) + 1, $2, $3, $4, $5, $6
         FROM webhook_attempts WHERE delivery_id = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(&claimed.id)
    .bind(attempt.at)
    .bind(attempt.webhook_timestamp)
    .bind(attempt.status.map(i32::from))
    .bind(attempt.latency.as_millis() as i64)
    .bind(attempt.error)
    .execute(&mut *tx)
    .await?;
    let (state, due) = match next {
        Next::Delivered => (State::Delivered, attempt.at),
        Next::RetryAt(at) => (State::Pending, at),
        Next::GiveUp | Next::EndpointGone => (State::Failed, attempt.at),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $2, attempts = $3, next_attempt_at = $4,
             last_status = $5, last_error = $6 WHERE id = $1",
    )
    .bind(&claimed.id)
    .bind(state.as_str())
    .bind(number)
    .bind(due)
    .bind(attempt.status.map(i32::from))
    .bind(attempt.error)
    .execute(&mut *tx)
    .await?;
    if next == Next::EndpointGone {
        sqlx::query(
            "INSERT INTO webhook_endpoints (url, disabled_at, disabled_reason) VALUES ($1, $2, $3)
             ON CONFLICT (url) DO UPDATE SET disabled_at = $2, disabled_reason = $3",
        )
        .bind(url)
        .bind(attempt.at)
        .bind("the endpoint answered 410 Gone")
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Whether the endpoint at `url` is disabled (it answered 410).
pub async fn is_disabled(pool: &PgPool, url: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM webhook_endpoints WHERE url = $1 AND disabled_at IS NOT NULL",
    )
    .bind(url)
    .fetch_one(pool)
    .await?
        > 0)
}

/// Enables a disabled endpoint again; `false` if it was not disabled.
pub async fn enable(pool: &PgPool, url: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL
         WHERE url = $1 AND disabled_at IS NOT NULL",
    )
    .bind(url)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An endpoint disabled by a 410, as the endpoints listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DisabledEndpoint {
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub disabled_at: OffsetDateTime,
    pub disabled_reason: Option<String>,
}

/// The endpoints disabled now (they answered 410), by URL.
pub async fn disabled(pool: &PgPool) -> Result<Vec<DisabledEndpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT url, disabled_at, disabled_reason FROM webhook_endpoints
         WHERE disabled_at IS NOT NULL ORDER BY url",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DisabledEndpoint {
            url: r.get("url"),
            disabled_at: r.get("disabled_at"),
            disabled_reason: r.get("disabled_reason"),
        })
        .collect())
}

/// Makes a delivery due again now, with a fresh attempt budget (same `webhook-id` and body);
/// returns its endpoint, or `None` when there is no such delivery.
pub async fn resend(
    pool: &PgPool,
    id: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2
         WHERE id = $1 RETURNING endpoint_url",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// Forgets call events kept for longer than `kept_for` (calls long over).
pub async fn sweep_events(pool: &PgPool, kept_for: Duration) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM notifier_call_events WHERE kept_at < now() - $1::interval")
            .bind(format!("{} seconds", kept_for.as_secs()))
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// One delivery in the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedDelivery {
    pub id: String,
    pub endpoint_url: String,
    pub event_type: String,
    pub call_sid: String,
    pub state: State,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it is attempted next (pending deliveries).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub attempt_log: Vec<LoggedAttempt>,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedAttempt {
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub webhook_timestamp: i64,
    pub status: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// Which deliveries the log shows (each `None` matches all).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFilter<'a> {
    pub endpoint_url: Option<&'a str>,
    pub state: Option<State>,
    /// One call's deliveries (what the console shows on a call's page).
    pub call_sid: Option<&'a str>,
}

/// The newest deliveries matching `filter`, with their attempts.
pub async fn log(
    pool: &PgPool,
    filter: &LogFilter<'_>,
    limit: i64,
) -> Result<Vec<LoggedDelivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, endpoint_url, event_type, call_sid, state, attempts, created_at,
                next_attempt_at, last_status, last_error
         FROM webhook_deliveries
         WHERE ($1::text IS NULL OR endpoint_url = $1) AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR call_sid = $3)
         ORDER BY created_at DESC, id LIMIT $4",
    )
    .bind(filter.endpoint_url)
    .bind(filter.state.map(State::as_str))
    .bind(filter.call_sid)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get("id")).collect();
    let attempts = sqlx::query(
        "SELECT delivery_id, attempt, at, webhook_timestamp, status, latency_ms, error
         FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<LoggedDelivery> = rows
        .into_iter()
        .map(|r| {
            let state = State::parse(r.get::<String, _>("state").as_str());
            LoggedDelivery {
                id: r.get("id"),
                endpoint_url: r.get("endpoint_url"),
                event_type: r.get("event_type"),
                call_sid: r.get("call_sid"),
                state,
                attempts: r.get("attempts"),
                created_at: r.get("created_at"),
                next_attempt_at: (state == State::Pending).then(|| r.get("next_attempt_at")),
                last_status: r.get("last_status"),
                last_error: r.get("last_error"),
                attempt_log: Vec::new(),
            }
        })
        .collect();
    for a in attempts {
        let id: String = a.get("delivery_id");
        if let Some(d) = out.iter_mut().find(|d| d.id == id) {
            d.attempt_log.push(LoggedAttempt {
                attempt: a.get("attempt"),
                at: a.get("at"),
                webhook_timestamp: a.get("webhook_timestamp"),
                status: a.get("status"),
                latency_ms: a.get("latency_ms"),
                error: a.get("error"),
            });
        }
    }
    Ok(out)
}
