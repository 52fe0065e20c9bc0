//! The analytics overview (`GET /api/analytics`): how the agents are doing over a date range,
//! computed in SQL over the call record (`calls`, `turns`, `transcript_entries`,
//! `tool_invocations`), never over a sample.
//!
//! Days and hours are UTC, and a call belongs to the day and hour of its first event (the
//! sort key of the calls list), so a rejected call, which never started, is counted too.
//! Percentiles are continuous (`percentile_cont`: linear interpolation between the two nearest
//! ranks), `null` when there is nothing to take them over.

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pricing::Prices;

/// Twilio's `CallStatus` of an outbound call whose callee's line was busy.
pub const TWILIO_BUSY: &str = "busy";

/// Which calls the overview covers: first event in `[since, until)`, and the agent
/// (case-insensitive) if one is given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub agent: Option<String>,
}

/// The scope as a `WHERE` clause over `calls c`, binding `$1` since, `$2` until, `$3` agent.
/// A literal, so every query stays `&'static str`.
macro_rules! in_scope {
    () => {
        " ($1::timestamptz IS NULL OR c.first_event_at >= $1)
          AND ($2::timestamptz IS NULL OR c.first_event_at < $2)
          AND ($3::text IS NULL OR lower(c.agent_id) = lower($3)) "
    };
}

/// `GET /api/analytics`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Overview {
    pub since: Option<String>,
    pub until: Option<String>,
    pub agent: Option<String>,
    pub totals: Totals,
    /// Calls per UTC day, agent and direction (only the combinations that had calls).
    pub per_day: Vec<Bucket>,
    /// Calls per hour of the UTC day (0-23), agent and direction, over the whole range.
    pub per_hour: Vec<HourBucket>,
    /// Calls by business outcome (`null`: none was set), most frequent first.
    pub outcomes: Vec<Count>,
    /// Calls by end reason (`EndReason`; `null`: not ended), most frequent first.
    pub end_reasons: Vec<Count>,
    /// Rejected calls by reason (`no_workers`, `at_capacity`, `timeout`, `no_agent`, ...).
    pub rejected_reasons: Vec<Count>,
    /// Call duration (`CallEnded.duration_ms` of the ended calls), milliseconds.
    pub duration_ms: Percentiles,
    /// Turn latency by turn kind (`greeting`, `response`), milliseconds.
    pub turn_latency_ms: Vec<TurnLatency>,
    pub interruptions: Interruptions,
    /// Tool calls and failures by tool, most called first.
    pub tools: Vec<ToolUse>,
    /// Cost per UTC day.
    pub cost_per_day: Vec<DayCost>,
    pub cost: CostTotals,
}

/// Call counts over the scope.
#[derive(Debug, Serialize, PartialEq)]
pub struct Totals {
    /// Every call: answered, rejected, or only reported by Twilio.
    pub calls: i64,
    /// Calls a worker took (a `started` event).
    pub answered: i64,
    /// Calls no worker took: the caller was told everyone is busy (`rejected` event).
    pub rejected: i64,
    /// Outbound calls whose callee's line was busy (Twilio status `busy`).
    pub busy: i64,
    /// Answered calls that ended (an `ended` event, with the call's duration).
    pub ended: i64,
}

#[derive(Debug, Serialize, PartialEq, sqlx::FromRow)]
pub struct Bucket {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub agent_id: Option<String>,
    pub direction: Option<String>,
    pub calls: i64,
}

#[derive(Debug, Serialize, PartialEq, sqlx::FromRow)]
pub struct HourBucket {
    /// 0-23, UTC.
    pub hour: i32,
    pub agent_id: Option<String>,
    pub direction: Option<String>,
    pub calls: i64,
}

#[derive(Debug, Serialize, PartialEq, sqlx::FromRow)]
pub struct Count {
    pub value: Option<String>,
    pub calls: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TurnLatency {
    pub kind: String,
    pub turns: i64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Barge-ins: agent answers the caller cut off.
#[derive(Debug, Serialize, PartialEq)]
pub struct Interruptions {
    pub total: i64,
    /// `total` over the answered calls; `null` without any.
    pub per_call: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq, sqlx::FromRow)]
pub struct ToolUse {
    pub name: String,
    pub calls: i64,
    /// Invocations that ended in an error (any `ToolErrorCode` or a tool's own code).
    pub errors: i64,
    /// `errors / calls`.
    pub error_rate: f64,
    pub latency_p50_ms: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct DayCost {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub calls: i64,
    /// Sum of the ended calls' model and transcription cost (as priced when each ended).
    pub model_usd: f64,
    /// Twilio minutes (billed seconds, else the call's own duration; per started minute).
    pub twilio_minutes: i64,
    /// `twilio_minutes` at `twilio_per_minute`; `null` when no Twilio price is set.
    pub twilio_usd: Option<f64>,
    /// `model_usd` plus `twilio_usd` (when priced).
    pub total_usd: f64,
    /// Summed duration of the ended calls (`CallEnded.duration_ms`), in minutes.
    pub call_minutes: f64,
}

/// Cost over the whole scope.
#[derive(Debug, Serialize, PartialEq)]
pub struct CostTotals {
    pub model_usd: f64,
    pub twilio_minutes: i64,
    pub twilio_usd: Option<f64>,
    pub total_usd: f64,
    pub call_minutes: f64,
    /// `total_usd / call_minutes`; `null` when no call lasted.
    pub per_call_minute_usd: Option<f64>,
}

/// The per-day cost as the database sums it, before Twilio is priced.
#[derive(sqlx::FromRow)]
struct DayCostRow {
    day: String,
    calls: i64,
    model_usd: f64,
    twilio_minutes: i64,
    duration_ms: i64,
}

/// Calls in scope by the value of `column` (of the calls `only` admits), most frequent first.
macro_rules! counts_by {
    ($column:literal, $only:literal) => {
        concat!(
            "SELECT c.",
            $column,
            " AS value, count(*) AS calls FROM calls c WHERE ",
            $only,
            " AND",
            in_scope!(),
            "GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST"
        )
    };
}

/// Twilio minutes of a call as [`Prices::twilio`] counts them: billed seconds, else the
/// call's own duration rounded up to a second, per started minute; nothing until it ended.
macro_rules! twilio_minutes {
    () => {
        "CASE WHEN c.ended_at IS NULL THEN 0
              WHEN c.twilio_duration_seconds IS NOT NULL
                THEN ceil(greatest(c.twilio_duration_seconds, 0) / 60.0)
              ELSE ceil(ceil(greatest(coalesce(c.duration_ms, 0), 0) / 1000.0) / 60.0)
         END"
    };
}

/// The overview of the calls in `scope`.
pub async fn overview(
    pool: &PgPool,
    scope: &Scope,
    prices: &Prices,
) -> Result<Overview, sqlx::Error> {
    let (since, until, agent) = (scope.since, scope.until, scope.agent.as_deref());
    macro_rules! query_as {
        ($sql:expr) => {
            sqlx::query_as($sql).bind(since).bind(until).bind(agent)
        };
    }

    let (calls, answered, rejected, busy, ended, duration): (
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<Vec<f64>>,
    ) = sqlx::query_as(concat!(
        "SELECT count(*),
                count(*) FILTER (WHERE c.started_at IS NOT NULL),
                count(*) FILTER (WHERE c.rejected_reason IS NOT NULL),
                count(*) FILTER (WHERE c.twilio_status = $4),
                count(*) FILTER (WHERE c.duration_ms IS NOT NULL),
                percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY c.duration_ms)
         FROM calls c WHERE",
        in_scope!()
    ))
    .bind(since)
    .bind(until)
    .bind(agent)
    .bind(TWILIO_BUSY)
    .fetch_one(pool)
    .await?;

    let per_day: Vec<Bucket> = query_as!(concat!(
        "SELECT to_char(c.first_event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                c.agent_id, c.direction, count(*) AS calls
         FROM calls c WHERE",
        in_scope!(),
        "GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS LAST, 3 NULLS LAST"
    ))
    .fetch_all(pool)
    .await?;

    let per_hour: Vec<HourBucket> = query_as!(concat!(
        "SELECT extract(hour FROM c.first_event_at AT TIME ZONE 'UTC')::int4 AS hour,
                c.agent_id, c.direction, count(*) AS calls
         FROM calls c WHERE",
        in_scope!(),
        "GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS LAST, 3 NULLS LAST"
    ))
    .fetch_all(pool)
    .await?;

    let outcomes: Vec<Count> = query_as!(counts_by!("outcome", "c.rejected_reason IS NULL"))
        .fetch_all(pool)
        .await?;
    let end_reasons: Vec<Count> = query_as!(counts_by!("end_reason", "c.rejected_reason IS NULL"))
        .fetch_all(pool)
        .await?;
    let rejected_reasons: Vec<Count> = query_as!(counts_by!(
        "rejected_reason",
        "c.rejected_reason IS NOT NULL"
    ))
    .fetch_all(pool)
    .await?;

    // One sort per kind gives all three percentiles.
    let turn_latency_ms: Vec<(String, i64, Option<Vec<f64>>)> = query_as!(concat!(
        "SELECT t.kind, count(*),
                percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY t.latency_ms)
         FROM turns t JOIN calls c ON c.call_sid = t.call_sid WHERE",
        in_scope!(),
        "GROUP BY 1 ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;
    let turn_latency_ms = turn_latency_ms
        .into_iter()
        .map(|(kind, turns, p)| {
            let at = |i: usize| p.as_ref().and_then(|p| p.get(i).copied());
            TurnLatency {
                kind,
                turns,
                p50: at(0),
                p90: at(1),
                p99: at(2),
            }
        })
        .collect();

    let interrupted: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM transcript_entries e JOIN calls c ON c.call_sid = e.call_sid
         WHERE e.interrupted AND",
        in_scope!()
    ))
    .bind(since)
    .bind(until)
    .bind(agent)
    .fetch_one(pool)
    .await?;

    let tools: Vec<ToolUse> = query_as!(concat!(
        "SELECT i.name, count(*) AS calls,
                count(*) FILTER (WHERE i.error_code IS NOT NULL OR i.error_message IS NOT NULL)
                    AS errors,
                (count(*) FILTER (WHERE i.error_code IS NOT NULL OR i.error_message IS NOT NULL))
                    ::float8 / count(*) AS error_rate,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY i.latency_ms) AS latency_p50_ms
         FROM tool_invocations i JOIN calls c ON c.call_sid = i.call_sid WHERE",
        in_scope!(),
        "GROUP BY 1 ORDER BY 2 DESC, 1"
    ))
    .fetch_all(pool)
    .await?;

    let days: Vec<DayCostRow> = query_as!(concat!(
        "SELECT to_char(c.first_event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                count(*) AS calls,
                coalesce(sum(c.cost_usd), 0)::float8 AS model_usd,
                coalesce(sum(",
        twilio_minutes!(),
        "), 0)::int8 AS twilio_minutes,
                coalesce(sum(c.duration_ms), 0)::int8
                    AS duration_ms
         FROM calls c WHERE",
        in_scope!(),
        "GROUP BY 1 ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;

    let cost_per_day: Vec<DayCost> = days.into_iter().map(|d| day_cost(d, prices)).collect();
    let cost = cost_totals(&cost_per_day, prices);
    Ok(Overview {
        since: since.and_then(|t| t.format(&Rfc3339).ok()),
        until: until.and_then(|t| t.format(&Rfc3339).ok()),
        agent: scope.agent.clone(),
        totals: Totals {
            calls,
            answered,
            rejected,
            busy,
            ended,
        },
        per_day,
        per_hour,
        outcomes,
        end_reasons,
        rejected_reasons,
        duration_ms: Percentiles {
            p50: duration.as_ref().and_then(|d| d.first().copied()),
            p90: duration.as_ref().and_then(|d| d.get(1).copied()),
        },
        turn_latency_ms,
        interruptions: Interruptions {
            total: interrupted,
            per_call: (answered > 0).then(|| interrupted as f64 / answered as f64),
        },
        tools,
        cost_per_day,
        cost,
    })
}

fn day_cost(d: DayCostRow, prices: &Prices) -> DayCost {
    let twilio_usd = twilio_usd(d.twilio_minutes, prices);
    DayCost {
        day: d.day,
        calls: d.calls,
        model_usd: d.model_usd,
        twilio_minutes: d.twilio_minutes,
        twilio_usd,
        total_usd: d.model_usd + twilio_usd.unwrap_or(0.0),
        call_minutes: d.duration_ms as f64 / 60_000.0,
    }
}

fn twilio_usd(minutes: i64, prices: &Prices) -> Option<f64> {
    // Priced as the call page prices a call: `Prices::twilio` by minutes.
    prices.twilio(minutes.max(0) * 60, false).usd
}

fn cost_totals(days: &[DayCost], prices: &Prices) -> CostTotals {
    let model_usd: f64 = days.iter().map(|d| d.model_usd).sum();
    let twilio_minutes: i64 = days.iter().map(|d| d.twilio_minutes).sum();
    let twilio_usd = twilio_usd(twilio_minutes, prices);
    let total_usd = model_usd + twilio_usd.unwrap_or(0.0);
    let call_minutes: f64 = days.iter().map(|d| d.call_minutes).sum();
    CostTotals {
        model_usd,
        twilio_minutes,
        twilio_usd,
        total_usd,
        call_minutes,
        per_call_minute_usd: (call_minutes > 0.0).then(|| total_usd / call_minutes),
    }
}
