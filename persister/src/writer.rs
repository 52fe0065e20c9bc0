//! Applying one [`CallEvent`] to Postgres, exactly once in effect.
//!
//! JetStream delivers at least once, and producers may republish with a new message id, so the
//! (call_sid, seq) pair is the identity: the event is recorded in the `call_events` ledger first,
//! in the same transaction as its effect, and a ledger conflict means "already applied, change
//! nothing". Events of one call may arrive in any order (`ended` before `started`), so every event
//! upserts the `calls` row and each kind fills only its own columns, never clearing another's.

use sqlx::{PgPool, Postgres, Transaction};
use switchboard_proto::call_event::Body;
use switchboard_proto::{
    AnsweringMachine, CallEnded, CallEvent, CallOutcome, CallOwner, CallRecording, CallRejected,
    CallStarted, CallStatus, Role, ToolInvocation, TranscriptEntry, TurnLatency, Usage,
    tool_invocation,
};
use time::OffsetDateTime;

use crate::pricing::Prices;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was new and is now recorded.
    Written,
    /// The event had been applied before; nothing changed.
    Duplicate,
}

/// Why an event was refused before touching the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("call_sid {0:?} is not a valid call sid")]
    CallSid(String),
    #[error("seq 0 is not a valid event sequence number")]
    Seq,
}

/// Checks what the ledger relies on: a usable call sid and a seq that starts at 1.
pub fn check(event: &CallEvent) -> Result<(), InvalidEvent> {
    switchboard_proto::subject::validate_call_sid(&event.call_sid)
        .map_err(|_| InvalidEvent::CallSid(event.call_sid.clone()))?;
    if event.seq == 0 {
        return Err(InvalidEvent::Seq);
    }
    Ok(())
}

/// Applies `event` in one transaction. `stream_seq` is the JetStream sequence of the copy being
/// applied, kept in the ledger for tracing a row back to the stream.
pub async fn apply(
    pool: &PgPool,
    event: &CallEvent,
    stream_seq: Option<u64>,
    prices: &Prices,
) -> Result<Applied, sqlx::Error> {
    let at = timestamp(event.at_ms);
    let seq = to_i64(event.seq);
    let mut tx = pool.begin().await?;

    // The calls row first: every row of the ledger and the detail tables belongs to one (an
    // invariant of the writers, not a foreign key: see the `no_foreign_keys` migration).
    sqlx::query(
        "INSERT INTO calls (call_sid, first_event_at) VALUES ($1, $2)
         ON CONFLICT (call_sid) DO UPDATE
           SET first_event_at = LEAST(calls.first_event_at, EXCLUDED.first_event_at),
               updated_at = now()",
    )
    .bind(&event.call_sid)
    .bind(at)
    .execute(&mut *tx)
    .await?;

    let recorded = sqlx::query(
        "INSERT INTO call_events (call_sid, seq, kind, stream_seq, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (call_sid, seq) DO NOTHING",
    )
    .bind(&event.call_sid)
    .bind(seq)
    .bind(event.kind())
    .bind(stream_seq.map(to_i64))
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if recorded.rows_affected() == 0 {
        // Roll back the touch of `calls` too: a duplicate changes nothing at all.
        tx.rollback().await?;
        return Ok(Applied::Duplicate);
    }

    let sid = event.call_sid.as_str();
    match &event.body {
        Some(Body::Started(b)) => started(&mut tx, sid, b, at).await?,
        Some(Body::Transcript(b)) => transcript(&mut tx, sid, seq, b, at).await?,
        Some(Body::Tool(b)) => tool(&mut tx, sid, seq, b, at).await?,
        Some(Body::Outcome(b)) => outcome(&mut tx, sid, seq, b).await?,
        Some(Body::Turn(b)) => turn(&mut tx, sid, seq, b, at).await?,
        Some(Body::Ended(b)) => ended(&mut tx, sid, seq, b, at, prices).await?,
        Some(Body::Owner(b)) => owner(&mut tx, sid, seq, b, at).await?,
        Some(Body::Rejected(b)) => rejected(&mut tx, sid, b, at).await?,
        Some(Body::Status(b)) => status(&mut tx, sid, b).await?,
        Some(Body::Recording(b)) => recording(&mut tx, sid, b, at).await?,
        Some(Body::Amd(b)) => answered_by(&mut tx, sid, b).await?,
        // Write-ahead and per-response usage events: the ledger keeps them (the call's total
        // usage arrives in `ended`; a transfer's course is in the transcript's system lines).
        // A body from a newer producer: likewise.
        Some(Body::Dispatched(_) | Body::Usage(_) | Body::Transfer(_)) | None => {}
    }
    tx.commit().await?;
    Ok(Applied::Written)
}

type Tx<'a> = Transaction<'a, Postgres>;

async fn started(
    tx: &mut Tx<'_>,
    sid: &str,
    b: &CallStarted,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let direction = b.direction().label();
    // LEAST ignores NULL, so a second `started` (a takeover) keeps the first start time.
    sqlx::query(
        "UPDATE calls SET
            agent_id    = COALESCE(NULLIF($2, ''), agent_id),
            from_number = COALESCE(NULLIF($3, ''), from_number),
            to_number   = COALESCE(NULLIF($4, ''), to_number),
            direction   = COALESCE($5, direction),
            worker_id   = COALESCE(NULLIF($6, ''), worker_id),
            model       = COALESCE(NULLIF($7, ''), model),
            started_at  = LEAST(started_at, $8)
         WHERE call_sid = $1",
    )
    .bind(sid)
    .bind(clean(&b.agent_id))
    .bind(clean(&b.from))
    .bind(clean(&b.to))
    .bind(direction)
    .bind(clean(&b.worker_id))
    .bind(clean(&b.model))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn transcript(
    tx: &mut Tx<'_>,
    sid: &str,
    seq: i64,
    b: &TranscriptEntry,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let role = match b.role() {
        Role::User => "user",
        Role::Assistant => "assistant",
        // Unspecified only comes from a faulty producer; keep the text, as a system note.
        Role::System | Role::Unspecified => "system",
    };
    sqlx::query(
        "INSERT INTO transcript_entries
            (call_sid, seq, role, text, item_id, interrupted, heard_ms, offset_ms, at)
         VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7, $8, $9)
         ON CONFLICT (call_sid, seq) DO NOTHING",
    )
    .bind(sid)
    .bind(seq)
    .bind(role)
    .bind(clean(&b.text))
    .bind(clean(&b.item_id))
    .bind(b.interrupted)
    .bind(i64::from(b.heard_ms))
    .bind(i64::from(b.offset_ms))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn tool(
    tx: &mut Tx<'_>,
    sid: &str,
    seq: i64,
    b: &ToolInvocation,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let (output, code, message) = match &b.result {
        Some(tool_invocation::Result::Output(o)) => (Some(clean(o)), None, None),
        Some(tool_invocation::Result::Error(e)) => {
            (None, Some(clean(&e.code)), Some(clean(&e.message)))
        }
        None => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO tool_invocations
            (call_sid, seq, call_id, name, arguments, output, error_code, error_message,
             latency_ms, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (call_sid, seq) DO NOTHING",
    )
    .bind(sid)
    .bind(seq)
    .bind(clean(&b.call_id))
    .bind(clean(&b.name))
    .bind(clean(&b.arguments))
    .bind(output)
    .bind(code)
    .bind(message)
    .bind(i64::from(b.latency_ms))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn outcome(tx: &mut Tx<'_>, sid: &str, seq: i64, b: &CallOutcome) -> Result<(), sqlx::Error> {
    // The outcome with the highest seq wins, whatever order they arrive in.
    sqlx::query(
        "UPDATE calls SET outcome = NULLIF($2, ''), outcome_detail = NULLIF($3, ''),
                          outcome_seq = $4
         WHERE call_sid = $1 AND (outcome_seq IS NULL OR outcome_seq < $4)",
    )
    .bind(sid)
    .bind(clean(&b.outcome))
    .bind(clean(&b.detail))
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn turn(
    tx: &mut Tx<'_>,
    sid: &str,
    seq: i64,
    b: &TurnLatency,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO turns (call_sid, seq, kind, latency_ms, response_id, at)
         VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6)
         ON CONFLICT (call_sid, seq) DO NOTHING",
    )
    .bind(sid)
    .bind(seq)
    .bind(clean(&b.kind))
    .bind(i64::from(b.latency_ms))
    .bind(clean(&b.response_id))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One owner of the call (see the `call_owners` migration).
pub(crate) async fn owner(
    tx: &mut Tx<'_>,
    sid: &str,
    seq: i64,
    b: &CallOwner,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO call_owners
            (call_sid, seq, epoch, worker_id, reason, previous_worker_id, gap_ms, agent_id, at)
         VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9)
         ON CONFLICT (call_sid, seq) DO NOTHING",
    )
    .bind(sid)
    .bind(seq)
    .bind(i64::from(b.epoch))
    .bind(clean(&b.worker_id))
    .bind(clean(&b.reason))
    .bind(clean(&b.previous_worker_id))
    .bind(i64::from(b.gap_ms))
    .bind(clean(&b.agent_id))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The call's end: the `ended` event with the highest seq wins (after a takeover the new
/// owner's, or the gateway's `worker_lost`, whichever numbers higher).
async fn ended(
    tx: &mut Tx<'_>,
    sid: &str,
    seq: i64,
    b: &CallEnded,
    at: OffsetDateTime,
    prices: &Prices,
) -> Result<(), sqlx::Error> {
    // No usage in the event leaves the columns as they are (NULL = unknown, not zero).
    let tokens = |field: fn(&Usage) -> u64| b.usage.as_ref().map(|u| to_i64(field(u)));
    sqlx::query(
        "UPDATE calls SET
            ended_at            = $2,
            end_reason          = COALESCE(NULLIF($3, ''), end_reason),
            duration_ms         = $4,
            input_tokens        = COALESCE($5, input_tokens),
            output_tokens       = COALESCE($6, output_tokens),
            input_audio_tokens  = COALESCE($7, input_audio_tokens),
            output_audio_tokens = COALESCE($8, output_audio_tokens),
            input_text_tokens   = COALESCE($9, input_text_tokens),
            output_text_tokens  = COALESCE($10, output_text_tokens),
            cached_tokens       = COALESCE($11, cached_tokens),
            cost_usd            = COALESCE($12, cost_usd),
            cost_breakdown      = COALESCE($13, cost_breakdown),
            ended_seq           = $14
         WHERE call_sid = $1 AND (ended_seq IS NULL OR ended_seq < $14)",
    )
    .bind(sid)
    .bind(at)
    .bind(clean(&b.reason))
    .bind(to_i64(b.duration_ms))
    .bind(tokens(|u| u.input_tokens))
    .bind(tokens(|u| u.output_tokens))
    .bind(tokens(|u| u.input_audio_tokens))
    .bind(tokens(|u| u.output_audio_tokens))
    .bind(tokens(|u| u.input_text_tokens))
    .bind(tokens(|u| u.output_text_tokens))
    .bind(tokens(|u| u.cached_tokens))
    .bind(b.usage.as_ref().and_then(|u| prices.cost(u)))
    .bind(
        b.usage
            .as_ref()
            .and_then(|u| serde_json::to_value(prices.breakdown(u)).ok()),
    )
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The call's recording. A newer stream's replaces an older one's (see the `call_recordings`
/// migration); the same stream's again (a retried publish under a new seq) changes nothing.
/// Twilio's answering-machine verdict (one per call).
pub(crate) async fn answered_by(
    tx: &mut Tx<'_>,
    sid: &str,
    b: &AnsweringMachine,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE calls SET answered_by = $2 WHERE call_sid = $1")
        .bind(sid)
        .bind(clean(&b.answered_by))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn recording(
    tx: &mut Tx<'_>,
    sid: &str,
    b: &CallRecording,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO call_recordings
           (call_sid, stream, location, duration_ms, channels, bytes, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (call_sid) DO UPDATE
           SET stream = EXCLUDED.stream, location = EXCLUDED.location,
               duration_ms = EXCLUDED.duration_ms, channels = EXCLUDED.channels,
               bytes = EXCLUDED.bytes, recorded_at = EXCLUDED.recorded_at
           WHERE call_recordings.stream < EXCLUDED.stream",
    )
    .bind(sid)
    .bind(i64::from(b.stream))
    .bind(clean(&b.location))
    .bind(to_i64(b.duration_ms))
    .bind(i32::try_from(b.channels).unwrap_or(i32::MAX))
    .bind(to_i64(b.bytes))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn status(tx: &mut Tx<'_>, sid: &str, b: &CallStatus) -> Result<(), sqlx::Error> {
    // Twilio's SequenceNumber orders the callbacks; the latest wins whatever the arrival order.
    // A duration only comes with a terminal status; an earlier one never clears it.
    sqlx::query(
        "UPDATE calls SET
            twilio_status            = NULLIF($2, ''),
            twilio_status_seq        = $3,
            twilio_duration_seconds  = COALESCE($4, twilio_duration_seconds),
            twilio_sip_response_code = COALESCE($5, twilio_sip_response_code)
         WHERE call_sid = $1 AND (twilio_status_seq IS NULL OR twilio_status_seq < $3)",
    )
    .bind(sid)
    .bind(clean(&b.status))
    .bind(i64::from(b.sequence_number))
    .bind((b.duration_seconds > 0).then_some(i64::from(b.duration_seconds)))
    .bind((b.sip_response_code > 0).then(|| i32::try_from(b.sip_response_code).unwrap_or(i32::MAX)))
    .execute(&mut **tx)
    .await?;
    // A terminal callback that lost the race to a later one may still carry the duration.
    if b.duration_seconds > 0 {
        sqlx::query(
            "UPDATE calls SET twilio_duration_seconds = $2
             WHERE call_sid = $1 AND twilio_duration_seconds IS NULL",
        )
        .bind(sid)
        .bind(i64::from(b.duration_seconds))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn rejected(
    tx: &mut Tx<'_>,
    sid: &str,
    b: &CallRejected,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    // The caller heard "all agents are busy" and the call ended there.
    sqlx::query(
        "UPDATE calls SET
            rejected_reason = COALESCE(NULLIF($2, ''), rejected_reason),
            from_number     = COALESCE(from_number, NULLIF($3, '')),
            to_number       = COALESCE(to_number, NULLIF($4, '')),
            ended_at        = COALESCE(ended_at, $5)
         WHERE call_sid = $1",
    )
    .bind(sid)
    .bind(clean(&b.reason))
    .bind(clean(&b.from))
    .bind(clean(&b.to))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The event time; a missing or absurd `at_ms` falls back to now rather than failing the event.
pub(crate) fn timestamp(at_ms: i64) -> OffsetDateTime {
    if at_ms <= 0 {
        return OffsetDateTime::now_utc();
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Postgres text cannot hold NUL; a stray one in a transcript must not make the event
/// unstorable (it would be retried forever).
pub(crate) fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_need_a_sid_and_a_seq() {
        let mut ev = CallEvent {
            call_sid: "CA1".into(),
            seq: 1,
            ..Default::default()
        };
        assert_eq!(check(&ev), Ok(()));
        ev.seq = 0;
        assert_eq!(check(&ev), Err(InvalidEvent::Seq));
        ev.seq = 1;
        ev.call_sid = "CA.>".into();
        assert!(matches!(check(&ev), Err(InvalidEvent::CallSid(_))));
        ev.call_sid.clear();
        assert!(check(&ev).is_err());
    }

    #[test]
    fn timestamps_and_text() {
        assert_eq!(
            timestamp(1_700_000_000_123).unix_timestamp_nanos(),
            1_700_000_000_123_000_000
        );
        assert!(timestamp(0).year() > 2020);
        assert_eq!(clean("a\0b"), "a\u{FFFD}b");
        assert_eq!(to_i64(u64::MAX), i64::MAX);
    }
}
