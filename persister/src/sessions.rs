//! The read side: call records as the JSON the API serves (HELPERS contract, "Persister JSON
//! API"), and the queries behind them.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most sessions one page may hold.
pub const MAX_LIMIT: i64 = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;

/// One row of `GET /api/sessions`.
#[derive(Debug, Serialize)]
pub struct SessionSummary {
    pub call_sid: String,
    pub agent_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    pub worker_id: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub outcome: Option<String>,
    pub duration_ms: Option<i64>,
    /// Set when no worker took the call (`no_workers`, `at_capacity`, ...).
    pub rejected_reason: Option<String>,
    /// Estimated cost in USD of the model usage; `null` until the call ended with usage.
    pub cost_usd: Option<f64>,
    /// Twilio's latest reported call status (`ringing`, `in-progress`, `completed`, ...).
    pub twilio_status: Option<String>,
    /// The call's duration as Twilio billed it (terminal status callbacks only).
    pub twilio_duration_seconds: Option<i64>,
}

/// `GET /api/sessions`.
#[derive(Debug, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    /// How many calls match the filter, over all pages.
    pub total: i64,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Token usage of the call; fields are `null` until the `ended` event brings them.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub input_audio_tokens: Option<i64>,
    pub output_audio_tokens: Option<i64>,
    pub input_text_tokens: Option<i64>,
    pub output_text_tokens: Option<i64>,
    pub cached_tokens: Option<i64>,
}

/// One transcript entry.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TranscriptLine {
    pub seq: i64,
    pub role: String,
    pub text: String,
    pub item_id: Option<String>,
    pub interrupted: bool,
    pub heard_ms: i64,
    pub offset_ms: i64,
}

/// A failed tool invocation's error.
#[derive(Debug, Serialize)]
pub struct ToolError {
    pub code: String,
    pub message: String,
}

/// One tool invocation.
#[derive(Debug, Serialize)]
pub struct ToolLine {
    pub seq: i64,
    pub call_id: String,
    pub name: String,
    /// The arguments as JSON, or the raw text when the model produced something else.
    pub arguments: Value,
    /// The output as JSON (raw text if it was not JSON), `null` if the tool failed.
    pub output: Value,
    pub error: Option<ToolError>,
    pub latency_ms: i64,
    /// Milliseconds since the call started when the tool was dispatched (its result's time less
    /// its latency): where it sits among the transcript's `offset_ms`.
    pub offset_ms: i64,
}

/// One owner of the call: the worker that took it new (epoch 0), or took it over.
#[derive(Debug, Serialize)]
pub struct OwnerLine {
    pub epoch: i64,
    pub worker_id: String,
    /// `offer`, `worker_lost` or `hand_over`.
    pub reason: String,
    pub previous_worker_id: Option<String>,
    /// Milliseconds the caller heard nothing from an owner before this one took the call.
    pub gap_ms: i64,
    pub at: Option<String>,
}

/// Latency of one turn.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TurnLine {
    pub kind: String,
    pub latency_ms: i64,
    pub response_id: Option<String>,
    /// Milliseconds since the call started when the turn's first audio was sent.
    pub offset_ms: i64,
}

/// `GET /api/sessions/{call_sid}`.
#[derive(Debug, Serialize)]
pub struct SessionDetail {
    pub call_sid: String,
    pub agent_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    pub worker_id: Option<String>,
    pub model: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub outcome: Option<String>,
    pub outcome_detail: Option<String>,
    pub rejected_reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub usage: Usage,
    /// Estimated cost in USD of the model usage (model and caller transcription), at the
    /// prices configured when the call ended.
    pub cost_usd: Option<f64>,
    /// The itemised cost: model and transcription lines (stored when the call ended) and the
    /// Twilio minutes (priced now); `null` until the call ended.
    pub cost: Option<Cost>,
    /// Twilio's latest reported call status.
    pub twilio_status: Option<String>,
    /// The call's duration as Twilio reported it.
    pub twilio_duration_seconds: Option<i64>,
    /// The SIP response code of a terminal Twilio status, when sent.
    pub twilio_sip_response_code: Option<i32>,
    /// Twilio's answering-machine verdict on an outbound call created with AMD (`human`,
    /// `machine_end_beep`, `fax`, ...); `null` without detection or before the verdict.
    pub answered_by: Option<String>,
    /// Ordered by (offset_ms, seq): the order things were said, not published.
    pub transcript: Vec<TranscriptLine>,
    pub tools: Vec<ToolLine>,
    pub turns: Vec<TurnLine>,
    /// Who served the call, in epoch order (empty for calls recorded before ownership).
    pub owners: Vec<OwnerLine>,
    /// How often the call changed owner (takeovers and hand-overs).
    pub takeovers: usize,
    /// The call's recording, `null` when it has none (its agent says `record = false`, it is
    /// still going on, or the retention period deleted it).
    pub recording: Option<Recording>,
}

/// The `recording` of `GET /api/sessions/{call_sid}`.
#[derive(Debug, Serialize)]
pub struct Recording {
    /// Where the WAV is served, relative to the persister ([`recording_url`]), to the same
    /// bearer token or console session as the API.
    pub url: String,
    pub duration_ms: i64,
    /// 2: channel 0 the caller, channel 1 the agent as the caller heard it.
    pub channels: i32,
}

/// The path of a call's recording: `GET /api/sessions/{call_sid}/recording`.
pub fn recording_url(call_sid: &str) -> String {
    format!("/api/sessions/{call_sid}/recording")
}

/// Where the call's recording is in the recording store, if it has one.
pub async fn recording_location(
    pool: &PgPool,
    call_sid: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT location FROM call_recordings WHERE call_sid = $1")
        .bind(call_sid)
        .fetch_optional(pool)
        .await
}

/// Forgets the recordings at `locations` (the retention sweep deleted them from the store).
pub async fn forget_recordings(pool: &PgPool, locations: &[String]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM call_recordings WHERE location = ANY($1)")
        .bind(locations)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The cost breakdown of `GET /api/sessions/{call_sid}`.
#[derive(Debug, Serialize)]
pub struct Cost {
    /// [`crate::pricing::CostBreakdown`]: `model`, `transcription_model`, `priced`,
    /// `placeholder`, `model_usd`, `transcription_usd`, `total_usd` and the `lines` (`part`,
    /// `item`, `quantity`, `unit`, `usd_per_unit`, `usd`, `source`); `null` for a call that
    /// ended without usage.
    pub breakdown: Option<Value>,
    pub twilio: crate::pricing::TwilioCost,
    /// Model, transcription and Twilio together; `null` while a part has no price.
    pub total_usd: Option<f64>,
}

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The agent, case-insensitive (`Front-Desk` finds `front-desk`).
    pub agent: Option<String>,
    /// The outcome, case-insensitive.
    pub outcome: Option<String>,
    /// Part of the caller's number (`9876` finds `+15559876543`).
    pub from: Option<String>,
    /// Part of anything said on the call, case-insensitive.
    pub text: Option<String>,
    /// Only calls a worker took that have not ended (no `ended`, no `rejected`).
    pub in_progress: bool,
    /// Calls whose first event is at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Calls whose first event is before this time.
    pub until: Option<OffsetDateTime>,
}

/// `GET /api/facets`: the choices of the console's pick-lists.
#[derive(Debug, Serialize)]
pub struct Facets {
    /// Every agent that took a call, lower-cased (the filter ignores case), sorted.
    pub agents: Vec<String>,
    /// Every outcome a call had, lower-cased, sorted.
    pub outcomes: Vec<String>,
}

/// Most choices a pick-list offers.
pub const MAX_FACETS: i32 = 500;

/// The distinct lower-cased values of `column`, sorted, by a loose scan of its
/// `lower(column)` index: from each value, the next greater one.
macro_rules! distinct_lower {
    ($column:literal) => {
        concat!(
            "WITH RECURSIVE v(value, n) AS (
                 (SELECT lower(",
            $column,
            "), 1 FROM calls WHERE ",
            $column,
            " IS NOT NULL
                  ORDER BY 1 LIMIT 1)
                 UNION ALL
                 SELECT (SELECT lower(",
            $column,
            ") FROM calls
                         WHERE lower(",
            $column,
            ") > v.value ORDER BY 1 LIMIT 1), n + 1
                 FROM v WHERE v.value IS NOT NULL AND n < $1)
             SELECT value FROM v WHERE value IS NOT NULL"
        )
    };
}

/// Runs a [`distinct_lower!`] query.
async fn distinct(pool: &PgPool, sql: &'static str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(MAX_FACETS)
        .fetch_all(pool)
        .await
}

/// The pick-lists' choices: the distinct values of the whole record, found by skipping through
/// the `lower(...)` indexes (one index probe per value, whatever the number of calls).
pub async fn facets(pool: &PgPool) -> Result<Facets, sqlx::Error> {
    Ok(Facets {
        agents: distinct(pool, distinct_lower!("agent_id")).await?,
        outcomes: distinct(pool, distinct_lower!("outcome")).await?,
    })
}

/// Where a page starts: strictly older than this (sort time, call sid) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    at: OffsetDateTime,
    call_sid: String,
}

/// A `cursor` parameter that this service did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

impl Cursor {
    /// `<unix microseconds>_<call_sid>`: opaque to clients, stable across restarts.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.at.unix_timestamp_nanos() / 1000,
            self.call_sid
        )
    }

    /// Parses what [`Cursor::encode`] produced.
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let (micros, call_sid) = text.split_once('_').ok_or(InvalidCursor)?;
        let micros: i128 = micros.parse().map_err(|_| InvalidCursor)?;
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| InvalidCursor)?;
        if call_sid.is_empty() {
            return Err(InvalidCursor);
        }
        Ok(Self {
            at,
            call_sid: call_sid.to_owned(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct CallRow {
    call_sid: String,
    agent_id: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    direction: Option<String>,
    worker_id: Option<String>,
    model: Option<String>,
    started_at: Option<OffsetDateTime>,
    ended_at: Option<OffsetDateTime>,
    end_reason: Option<String>,
    outcome: Option<String>,
    outcome_detail: Option<String>,
    rejected_reason: Option<String>,
    duration_ms: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    input_audio_tokens: Option<i64>,
    output_audio_tokens: Option<i64>,
    input_text_tokens: Option<i64>,
    output_text_tokens: Option<i64>,
    cached_tokens: Option<i64>,
    first_event_at: OffsetDateTime,
    cost_usd: Option<f64>,
    cost_breakdown: Option<Value>,
    twilio_status: Option<String>,
    twilio_duration_seconds: Option<i64>,
    twilio_sip_response_code: Option<i32>,
    answered_by: Option<String>,
}

/// The columns of [`CallRow`], as a literal so queries stay `&'static str` (no runtime SQL).
macro_rules! call_columns {
    () => {
        "call_sid, agent_id, from_number, to_number, direction, worker_id, model, started_at, \
         ended_at, end_reason, outcome, outcome_detail, rejected_reason, duration_ms, \
         input_tokens, output_tokens, input_audio_tokens, output_audio_tokens, \
         input_text_tokens, output_text_tokens, cached_tokens, first_event_at, cost_usd, \
         cost_breakdown, \
         twilio_status, twilio_duration_seconds, twilio_sip_response_code, answered_by"
    };
}

/// The [`Filter`] as a condition over `calls`, binding `$1` agent, `$2` outcome, `$3` caller
/// number pattern, `$4` since, `$5` until, `$6` transcript text pattern and `$7` in progress.
/// Agent and outcome compare lower-cased (indexed by `calls_agent_lower_newest` and
/// `calls_outcome_lower_newest`); number and text are `ILIKE` patterns from [`like_pattern`].
macro_rules! list_filter {
    () => {
        " ($1::text IS NULL OR lower(agent_id) = lower($1))
          AND ($2::text IS NULL OR lower(outcome) = lower($2))
          AND ($3::text IS NULL OR from_number ILIKE $3)
          AND ($4::timestamptz IS NULL OR first_event_at >= $4)
          AND ($5::timestamptz IS NULL OR first_event_at < $5)
          AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM transcript_entries e
                WHERE e.call_sid = calls.call_sid AND e.text ILIKE $6))
          AND (NOT $7::bool OR (ended_at IS NULL AND rejected_reason IS NULL
                AND started_at IS NOT NULL)) "
    };
}

/// Binds the [`list_filter!`] parameters `$1` to `$7`.
fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q Filter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.agent.as_deref())
        .bind(filter.outcome.as_deref())
        .bind(filter.from.as_deref().map(like_pattern))
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.text.as_deref().map(like_pattern))
        .bind(filter.in_progress)
}

/// `%text%` for `ILIKE`, with `%`, `_` and `\` in `text` matching themselves.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Newest first, `limit` (clamped to 1..=[`MAX_LIMIT`]) per page, with the count of every
/// match.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<SessionPage, sqlx::Error> {
    let (sessions, next) = page(pool, filter, cursor, limit).await?;
    let (total,): (i64,) = bind_filter(
        sqlx::query_as(concat!("SELECT count(*) FROM calls WHERE", list_filter!())),
        filter,
    )
    .fetch_one(pool)
    .await?;
    Ok(SessionPage {
        sessions,
        total,
        next_cursor: next.map(|c| c.encode()),
    })
}

/// One page of [`list`] without the count, and where the next one starts (`None`: the last).
pub async fn page(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<SessionSummary>, Option<Cursor>), sqlx::Error> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let sql = concat!(
        "SELECT ",
        call_columns!(),
        " FROM calls
         WHERE ($8::timestamptz IS NULL OR (first_event_at, call_sid) < ($8, $9::text))
           AND",
        list_filter!(),
        "ORDER BY first_event_at DESC, call_sid DESC
         LIMIT $10"
    );
    let mut rows: Vec<CallRow> = bind_filter(sqlx::query_as(sql), filter)
        .bind(cursor.map(|c| c.at))
        .bind(cursor.map(|c| c.call_sid.as_str()))
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = match rows.last() {
        Some(last) if more => Some(Cursor {
            at: last.first_event_at,
            call_sid: last.call_sid.clone(),
        }),
        _ => None,
    };
    Ok((rows.into_iter().map(summary).collect(), next))
}

/// One call with its transcript, tools and turns; `None` if unknown.
pub async fn get(
    pool: &PgPool,
    call_sid: &str,
    prices: &crate::pricing::Prices,
) -> Result<Option<SessionDetail>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        call_columns!(),
        " FROM calls WHERE call_sid = $1"
    );
    let row: Option<CallRow> = sqlx::query_as(sql)
        .bind(call_sid)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // Transcript offsets count from the call's start; a call without `started` (yet) from its
    // first event.
    let start = row.started_at.unwrap_or(row.first_event_at);
    let transcript: Vec<TranscriptLine> = sqlx::query_as(
        "SELECT seq, role, text, item_id, interrupted, heard_ms, offset_ms
         FROM transcript_entries WHERE call_sid = $1 ORDER BY offset_ms, seq",
    )
    .bind(call_sid)
    .fetch_all(pool)
    .await?;
    #[allow(clippy::type_complexity)]
    let tools: Vec<(
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        i64,
    )> = sqlx::query_as(
        "SELECT seq, call_id, name, arguments, output, error_code, error_message, latency_ms,
                (extract(epoch FROM at - $2) * 1000)::int8 - latency_ms
             FROM tool_invocations WHERE call_sid = $1 ORDER BY seq",
    )
    .bind(call_sid)
    .bind(start)
    .fetch_all(pool)
    .await?;
    let turns: Vec<TurnLine> = sqlx::query_as(
        "SELECT kind, latency_ms, response_id, (extract(epoch FROM at - $2) * 1000)::int8
         AS offset_ms FROM turns WHERE call_sid = $1 ORDER BY seq",
    )
    .bind(call_sid)
    .bind(start)
    .fetch_all(pool)
    .await?;

    #[allow(clippy::type_complexity)]
    let owners: Vec<(i64, String, String, Option<String>, i64, OffsetDateTime)> = sqlx::query_as(
        "SELECT epoch, worker_id, reason, previous_worker_id, gap_ms, at
         FROM call_owners WHERE call_sid = $1 ORDER BY epoch, seq",
    )
    .bind(call_sid)
    .fetch_all(pool)
    .await?;
    let owners: Vec<OwnerLine> = owners
        .into_iter()
        .map(
            |(epoch, worker_id, reason, previous_worker_id, gap_ms, at)| OwnerLine {
                epoch,
                worker_id,
                reason,
                previous_worker_id,
                gap_ms,
                at: rfc3339(Some(at)),
            },
        )
        .collect();
    let takeovers = owners.len().saturating_sub(1);
    let recording: Option<(i64, i32)> =
        sqlx::query_as("SELECT duration_ms, channels FROM call_recordings WHERE call_sid = $1")
            .bind(call_sid)
            .fetch_optional(pool)
            .await?;
    let recording = recording.map(|(duration_ms, channels)| Recording {
        url: recording_url(call_sid),
        duration_ms,
        channels,
    });

    let tools = tools
        .into_iter()
        .map(
            |(seq, call_id, name, arguments, output, code, message, latency_ms, offset_ms)| {
                ToolLine {
                    seq,
                    call_id,
                    name,
                    arguments: json_or_text(arguments),
                    output: output.map(json_or_text).unwrap_or(Value::Null),
                    error: match (code, message) {
                        (None, None) => None,
                        (code, message) => Some(ToolError {
                            code: code.unwrap_or_default(),
                            message: message.unwrap_or_default(),
                        }),
                    },
                    latency_ms,
                    offset_ms,
                }
            },
        )
        .collect();
    let cost_view = cost(&row, prices);
    Ok(Some(SessionDetail {
        call_sid: row.call_sid,
        agent_id: row.agent_id,
        from: row.from_number,
        to: row.to_number,
        direction: row.direction,
        worker_id: row.worker_id,
        model: row.model,
        started_at: rfc3339(row.started_at),
        ended_at: rfc3339(row.ended_at),
        end_reason: row.end_reason,
        outcome: row.outcome,
        outcome_detail: row.outcome_detail,
        rejected_reason: row.rejected_reason,
        duration_ms: row.duration_ms,
        usage: Usage {
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            input_audio_tokens: row.input_audio_tokens,
            output_audio_tokens: row.output_audio_tokens,
            input_text_tokens: row.input_text_tokens,
            output_text_tokens: row.output_text_tokens,
            cached_tokens: row.cached_tokens,
        },
        cost: cost_view,
        cost_usd: row.cost_usd,
        twilio_status: row.twilio_status,
        twilio_duration_seconds: row.twilio_duration_seconds,
        twilio_sip_response_code: row.twilio_sip_response_code,
        answered_by: row.answered_by,
        transcript,
        tools,
        turns,
        owners,
        takeovers,
        recording,
    }))
}

/// The cost of an ended call: what was stored at its end, plus its Twilio minutes (Twilio's
/// billed seconds, else the call's own duration, marked as an estimate).
fn cost(row: &CallRow, prices: &crate::pricing::Prices) -> Option<Cost> {
    row.ended_at?;
    let twilio = match (row.twilio_duration_seconds, row.duration_ms) {
        (Some(s), _) => prices.twilio(s, false),
        (None, Some(ms)) => prices.twilio((ms.max(0) + 999) / 1000, true),
        (None, None) => prices.twilio(0, true),
    };
    let total_usd = match (row.cost_usd, twilio.usd) {
        (Some(model), Some(t)) => Some(model + t),
        _ => None,
    };
    Some(Cost {
        breakdown: row.cost_breakdown.clone(),
        twilio,
        total_usd,
    })
}

fn summary(row: CallRow) -> SessionSummary {
    SessionSummary {
        call_sid: row.call_sid,
        agent_id: row.agent_id,
        from: row.from_number,
        to: row.to_number,
        direction: row.direction,
        worker_id: row.worker_id,
        started_at: rfc3339(row.started_at),
        ended_at: rfc3339(row.ended_at),
        end_reason: row.end_reason,
        outcome: row.outcome,
        duration_ms: row.duration_ms,
        rejected_reason: row.rejected_reason,
        cost_usd: row.cost_usd,
        twilio_status: row.twilio_status,
        twilio_duration_seconds: row.twilio_duration_seconds,
    }
}

fn rfc3339(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

/// Tool arguments and outputs are JSON text by contract, but the record keeps whatever came.
fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap(),
            call_sid: "CA_1-x".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "abc",
            "123",
            "123_",
            "x_CA1",
            "99999999999999999999999999_CA",
        ] {
            assert_eq!(Cursor::decode(bad), Err(InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn non_json_tool_text_is_kept_as_a_string() {
        assert_eq!(
            json_or_text(r#"{"a":1}"#.into()),
            serde_json::json!({"a": 1})
        );
        assert_eq!(json_or_text("oops".into()), Value::String("oops".into()));
    }
}
