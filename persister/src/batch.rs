//! Applying many [`CallEvent`]s in ONE transaction, exactly once in effect.
//!
//! The throughput of the persister is bounded by round trips to Postgres, not by the work per
//! event, so a batch is written with a handful of multi-row statements (`UNNEST` of arrays):
//!
//! 1. the `calls` rows the batch needs are created if missing (`ON CONFLICT DO NOTHING`): every
//!    other row belongs to one (kept by the writers; foreign keys would cost a lookup and a row
//!    lock per event, see the `no_foreign_keys` migration);
//! 2. the whole batch goes into the `call_events` ledger with `ON CONFLICT DO NOTHING RETURNING`,
//!    which says which events are new: only those have an effect, so a redelivered event (even
//!    in the same batch) changes nothing;
//! 3. transcript entries, tool invocations and turns of the new events are inserted with one
//!    statement per table;
//! 4. `first_event_at` is lowered once per call, and the new events that update the call row
//!    (`started`, `outcome`, `ended`, `rejected`, `status`) are applied with one `UPDATE ... FROM
//!    UNNEST` per kind: the same guarded updates as [`writer`] applies to one event, with the
//!    event's values as arrays.
//!
//! Why step 4 gives the row one-at-a-time application gives: a join `UPDATE` applies at most one
//! source row per target row, so the k-th event of a kind for a call goes into *round* k, and the
//! rounds run in order; per call and kind, events therefore apply in seq order, exactly as
//! [`writer`] would apply them. Across kinds the order does not matter: each kind writes its own
//! columns, and the two overlaps commute (`started` overwrites the numbers `rejected` only fills
//! in; `ended` sets `ended_at`, `rejected` only fills it). Usually every kind has one round.
//!
//! Rows are inserted in call_sid order, so replicas writing overlapping batches rarely wait on
//! each other in opposite orders (Postgres detects a deadlock; the batch is then redelivered).

use std::collections::{BTreeMap, HashSet};

use sqlx::PgPool;
use sqlx::{Postgres, Transaction};
use switchboard_proto::call_event::Body;
use switchboard_proto::{CallEvent, Role, Usage, tool_invocation};
use time::OffsetDateTime;

use crate::pricing::Prices;
use crate::writer::{Applied, clean, timestamp, to_i64};

/// One event of a batch and the JetStream sequence of its copy.
#[derive(Debug, Clone)]
pub struct Pending {
    pub event: CallEvent,
    pub stream_seq: Option<u64>,
}

/// Applies `batch` in one transaction; the result says, per input position, whether that event
/// was new. On an error nothing was written.
pub async fn apply(
    pool: &PgPool,
    batch: &[Pending],
    prices: &Prices,
) -> Result<Vec<Applied>, sqlx::Error> {
    let mut results = vec![Applied::Duplicate; batch.len()];
    if batch.is_empty() {
        return Ok(results);
    }
    // (call_sid, seq) order; the first copy of a pair in the batch is the one that may count.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&batch[a].event, &batch[b].event);
        (a.call_sid.as_str(), a.seq).cmp(&(b.call_sid.as_str(), b.seq))
    });
    order.dedup_by(|b, a| {
        let (x, y) = (&batch[*a].event, &batch[*b].event);
        x.call_sid == y.call_sid && x.seq == y.seq
    });

    let at: Vec<OffsetDateTime> = batch.iter().map(|p| timestamp(p.event.at_ms)).collect();
    let mut tx = pool.begin().await?;

    // 1. The calls rows, earliest event time per call.
    let mut first: BTreeMap<&str, OffsetDateTime> = BTreeMap::new();
    for &i in &order {
        let e = first
            .entry(batch[i].event.call_sid.as_str())
            .or_insert(at[i]);
        *e = (*e).min(at[i]);
    }
    let (sids, firsts): (Vec<&str>, Vec<OffsetDateTime>) =
        first.iter().map(|(s, t)| (*s, *t)).unzip();
    sqlx::query(
        "INSERT INTO calls (call_sid, first_event_at)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[])
         ON CONFLICT (call_sid) DO NOTHING",
    )
    .bind(&sids)
    .bind(&firsts)
    .execute(&mut *tx)
    .await?;

    // 2. The ledger says which events are new.
    let new: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO call_events (call_sid, seq, kind, stream_seq, at)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[])
         ON CONFLICT (call_sid, seq) DO NOTHING
         RETURNING call_sid, seq",
    )
    .bind(
        order
            .iter()
            .map(|&i| batch[i].event.call_sid.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        order
            .iter()
            .map(|&i| to_i64(batch[i].event.seq))
            .collect::<Vec<_>>(),
    )
    .bind(
        order
            .iter()
            .map(|&i| batch[i].event.kind())
            .collect::<Vec<_>>(),
    )
    .bind(
        order
            .iter()
            .map(|&i| batch[i].stream_seq.map(to_i64))
            .collect::<Vec<_>>(),
    )
    .bind(order.iter().map(|&i| at[i]).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let new: HashSet<(String, i64)> = new.into_iter().collect();
    let fresh: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let e = &batch[i].event;
            new.contains(&(e.call_sid.clone(), to_i64(e.seq)))
        })
        .collect();
    if fresh.is_empty() {
        // Nothing new: a duplicate changes nothing at all.
        tx.rollback().await?;
        return Ok(results);
    }

    // 3. Detail rows, one statement per table; recordings and AMD verdicts (one per call) one
    //    by one.
    for &i in &fresh {
        match &batch[i].event.body {
            Some(Body::Recording(b)) => {
                crate::writer::recording(&mut tx, &batch[i].event.call_sid, b, at[i]).await?;
            }
            Some(Body::Amd(b)) => {
                crate::writer::answered_by(&mut tx, &batch[i].event.call_sid, b).await?;
            }
            _ => {}
        }
    }
    let mut transcripts = Transcripts::default();
    let mut tools = Tools::default();
    let mut turns = Turns::default();
    // A call has one owner per takeover: a handful of rows, written one by one.
    let mut owners = Vec::new();
    let mut lowest: BTreeMap<&str, OffsetDateTime> = BTreeMap::new();
    for &i in &fresh {
        let e = &batch[i].event;
        let (sid, seq) = (e.call_sid.as_str(), to_i64(e.seq));
        let low = lowest.entry(sid).or_insert(at[i]);
        *low = (*low).min(at[i]);
        match &e.body {
            Some(Body::Transcript(b)) => {
                transcripts.sid.push(sid);
                transcripts.seq.push(seq);
                transcripts.role.push(match b.role() {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::System | Role::Unspecified => "system",
                });
                transcripts.text.push(clean(&b.text));
                transcripts.item_id.push(clean(&b.item_id));
                transcripts.interrupted.push(b.interrupted);
                transcripts.heard_ms.push(i64::from(b.heard_ms));
                transcripts.offset_ms.push(i64::from(b.offset_ms));
                transcripts.at.push(at[i]);
            }
            Some(Body::Tool(b)) => {
                let (output, code, message) = match &b.result {
                    Some(tool_invocation::Result::Output(o)) => (Some(clean(o)), None, None),
                    Some(tool_invocation::Result::Error(e)) => {
                        (None, Some(clean(&e.code)), Some(clean(&e.message)))
                    }
                    None => (None, None, None),
                };
                tools.sid.push(sid);
                tools.seq.push(seq);
                tools.call_id.push(clean(&b.call_id));
                tools.name.push(clean(&b.name));
                tools.arguments.push(clean(&b.arguments));
                tools.output.push(output);
                tools.code.push(code);
                tools.message.push(message);
                tools.latency_ms.push(i64::from(b.latency_ms));
                tools.at.push(at[i]);
            }
            Some(Body::Owner(b)) => owners.push((sid, seq, b, at[i])),
            Some(Body::Turn(b)) => {
                turns.sid.push(sid);
                turns.seq.push(seq);
                turns.kind.push(clean(&b.kind));
                turns.latency_ms.push(i64::from(b.latency_ms));
                turns.response_id.push(clean(&b.response_id));
                turns.at.push(at[i]);
            }
            _ => {}
        }
    }
    for (sid, seq, owner, at) in owners {
        crate::writer::owner(&mut tx, sid, seq, owner, at).await?;
    }
    if !transcripts.sid.is_empty() {
        sqlx::query(
            "INSERT INTO transcript_entries
                (call_sid, seq, role, text, item_id, interrupted, heard_ms, offset_ms, at)
             SELECT s, q, r, t, NULLIF(i, ''), x, h, o, a
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::boolean[], $7::bigint[], $8::bigint[], $9::timestamptz[])
                  AS u(s, q, r, t, i, x, h, o, a)
             ON CONFLICT (call_sid, seq) DO NOTHING",
        )
        .bind(&transcripts.sid)
        .bind(&transcripts.seq)
        .bind(&transcripts.role)
        .bind(&transcripts.text)
        .bind(&transcripts.item_id)
        .bind(&transcripts.interrupted)
        .bind(&transcripts.heard_ms)
        .bind(&transcripts.offset_ms)
        .bind(&transcripts.at)
        .execute(&mut *tx)
        .await?;
    }
    if !tools.sid.is_empty() {
        sqlx::query(
            "INSERT INTO tool_invocations
                (call_sid, seq, call_id, name, arguments, output, error_code, error_message,
                 latency_ms, at)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::bigint[],
                                  $10::timestamptz[])
             ON CONFLICT (call_sid, seq) DO NOTHING",
        )
        .bind(&tools.sid)
        .bind(&tools.seq)
        .bind(&tools.call_id)
        .bind(&tools.name)
        .bind(&tools.arguments)
        .bind(&tools.output)
        .bind(&tools.code)
        .bind(&tools.message)
        .bind(&tools.latency_ms)
        .bind(&tools.at)
        .execute(&mut *tx)
        .await?;
    }
    if !turns.sid.is_empty() {
        sqlx::query(
            "INSERT INTO turns (call_sid, seq, kind, latency_ms, response_id, at)
             SELECT s, q, k, l, NULLIF(r, ''), a
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                         $6::timestamptz[]) AS u(s, q, k, l, r, a)
             ON CONFLICT (call_sid, seq) DO NOTHING",
        )
        .bind(&turns.sid)
        .bind(&turns.seq)
        .bind(&turns.kind)
        .bind(&turns.latency_ms)
        .bind(&turns.response_id)
        .bind(&turns.at)
        .execute(&mut *tx)
        .await?;
    }

    // 4. The call row: earliest event time, then the updating kinds in (call_sid, seq) order.
    let (sids, lows): (Vec<&str>, Vec<OffsetDateTime>) =
        lowest.iter().map(|(s, t)| (*s, *t)).unzip();
    sqlx::query(
        "UPDATE calls c SET first_event_at = LEAST(c.first_event_at, u.at), updated_at = now()
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(call_sid, at)
         WHERE c.call_sid = u.call_sid",
    )
    .bind(&sids)
    .bind(&lows)
    .execute(&mut *tx)
    .await?;
    let mut rounds: Vec<CallUpdates<'_>> = Vec::new();
    let mut seen: BTreeMap<(&str, &'static str), usize> = BTreeMap::new();
    for &i in &fresh {
        let e = &batch[i].event;
        let Some(kind) = updating_kind(e) else {
            continue;
        };
        // The n-th event of this kind for this call goes to round n: rounds run in order, so
        // per call and kind the events apply in seq order, as one at a time.
        let n = seen.entry((e.call_sid.as_str(), kind)).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(CallUpdates::default());
        }
        rounds[*n].push(e, at[i], prices);
        *n += 1;
    }
    for round in &rounds {
        round.execute(&mut tx).await?;
    }
    tx.commit().await?;

    for i in fresh {
        results[i] = Applied::Written;
    }
    Ok(results)
}

#[derive(Default)]
struct Transcripts<'a> {
    sid: Vec<&'a str>,
    seq: Vec<i64>,
    role: Vec<&'static str>,
    text: Vec<String>,
    item_id: Vec<String>,
    interrupted: Vec<bool>,
    heard_ms: Vec<i64>,
    offset_ms: Vec<i64>,
    at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct Tools<'a> {
    sid: Vec<&'a str>,
    seq: Vec<i64>,
    call_id: Vec<String>,
    name: Vec<String>,
    arguments: Vec<String>,
    output: Vec<Option<String>>,
    code: Vec<Option<String>>,
    message: Vec<Option<String>>,
    latency_ms: Vec<i64>,
    at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct Turns<'a> {
    sid: Vec<&'a str>,
    seq: Vec<i64>,
    kind: Vec<String>,
    latency_ms: Vec<i64>,
    response_id: Vec<String>,
    at: Vec<OffsetDateTime>,
}

/// The kind of an event that updates the `calls` row, if it is one.
fn updating_kind(event: &CallEvent) -> Option<&'static str> {
    match &event.body {
        Some(Body::Started(_)) => Some("started"),
        Some(Body::Outcome(_)) => Some("outcome"),
        Some(Body::Ended(_)) => Some("ended"),
        Some(Body::Rejected(_)) => Some("rejected"),
        Some(Body::Status(_)) => Some("status"),
        Some(
            Body::Transcript(_)
            | Body::Tool(_)
            | Body::Turn(_)
            | Body::Owner(_)
            | Body::Dispatched(_)
            | Body::Usage(_)
            | Body::Recording(_)
            | Body::Amd(_)
            | Body::Transfer(_),
        )
        | None => None,
    }
}

/// One round of call-row updates: at most one event per (call, kind), as arrays per column.
/// Each statement is the one [`crate::writer`] runs for a single event, over `UNNEST`.
#[derive(Default)]
struct CallUpdates<'a> {
    started: Started<'a>,
    outcome: Outcome<'a>,
    ended: Ended<'a>,
    rejected: Rejected<'a>,
    status: Status<'a>,
}

#[derive(Default)]
struct Started<'a> {
    sid: Vec<&'a str>,
    agent_id: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    direction: Vec<Option<&'static str>>,
    worker_id: Vec<String>,
    model: Vec<String>,
    at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct Outcome<'a> {
    sid: Vec<&'a str>,
    outcome: Vec<String>,
    detail: Vec<String>,
    seq: Vec<i64>,
}

#[derive(Default)]
struct Ended<'a> {
    sid: Vec<&'a str>,
    seq: Vec<i64>,
    at: Vec<OffsetDateTime>,
    reason: Vec<String>,
    duration_ms: Vec<i64>,
    input_tokens: Vec<Option<i64>>,
    output_tokens: Vec<Option<i64>>,
    input_audio_tokens: Vec<Option<i64>>,
    output_audio_tokens: Vec<Option<i64>>,
    input_text_tokens: Vec<Option<i64>>,
    output_text_tokens: Vec<Option<i64>>,
    cached_tokens: Vec<Option<i64>>,
    cost_usd: Vec<Option<f64>>,
    cost_breakdown: Vec<Option<serde_json::Value>>,
}

#[derive(Default)]
struct Rejected<'a> {
    sid: Vec<&'a str>,
    reason: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct Status<'a> {
    sid: Vec<&'a str>,
    status: Vec<String>,
    sequence: Vec<i64>,
    duration_seconds: Vec<Option<i64>>,
    sip_response_code: Vec<Option<i32>>,
    /// Calls whose event carries a duration, for the fill-in after the guarded update.
    duration_sid: Vec<&'a str>,
    duration: Vec<i64>,
}

impl<'a> CallUpdates<'a> {
    /// Adds `event` (of an updating kind; others are ignored).
    fn push(&mut self, event: &'a CallEvent, at: OffsetDateTime, prices: &Prices) {
        let sid = event.call_sid.as_str();
        match &event.body {
            Some(Body::Started(b)) => {
                let s = &mut self.started;
                s.sid.push(sid);
                s.agent_id.push(clean(&b.agent_id));
                s.from.push(clean(&b.from));
                s.to.push(clean(&b.to));
                s.direction.push(b.direction().label());
                s.worker_id.push(clean(&b.worker_id));
                s.model.push(clean(&b.model));
                s.at.push(at);
            }
            Some(Body::Outcome(b)) => {
                let o = &mut self.outcome;
                o.sid.push(sid);
                o.outcome.push(clean(&b.outcome));
                o.detail.push(clean(&b.detail));
                o.seq.push(to_i64(event.seq));
            }
            Some(Body::Ended(b)) => {
                let e = &mut self.ended;
                let tokens = |field: fn(&Usage) -> u64| b.usage.as_ref().map(|u| to_i64(field(u)));
                e.sid.push(sid);
                e.seq.push(to_i64(event.seq));
                e.at.push(at);
                e.reason.push(clean(&b.reason));
                e.duration_ms.push(to_i64(b.duration_ms));
                e.input_tokens.push(tokens(|u| u.input_tokens));
                e.output_tokens.push(tokens(|u| u.output_tokens));
                e.input_audio_tokens.push(tokens(|u| u.input_audio_tokens));
                e.output_audio_tokens
                    .push(tokens(|u| u.output_audio_tokens));
                e.input_text_tokens.push(tokens(|u| u.input_text_tokens));
                e.output_text_tokens.push(tokens(|u| u.output_text_tokens));
                e.cached_tokens.push(tokens(|u| u.cached_tokens));
                e.cost_usd
                    .push(b.usage.as_ref().and_then(|u| prices.cost(u)));
                e.cost_breakdown.push(
                    b.usage
                        .as_ref()
                        .and_then(|u| serde_json::to_value(prices.breakdown(u)).ok()),
                );
            }
            Some(Body::Rejected(b)) => {
                let r = &mut self.rejected;
                r.sid.push(sid);
                r.reason.push(clean(&b.reason));
                r.from.push(clean(&b.from));
                r.to.push(clean(&b.to));
                r.at.push(at);
            }
            Some(Body::Status(b)) => {
                let s = &mut self.status;
                s.sid.push(sid);
                s.status.push(clean(&b.status));
                s.sequence.push(i64::from(b.sequence_number));
                let duration = (b.duration_seconds > 0).then_some(i64::from(b.duration_seconds));
                s.duration_seconds.push(duration);
                s.sip_response_code.push(
                    (b.sip_response_code > 0)
                        .then(|| i32::try_from(b.sip_response_code).unwrap_or(i32::MAX)),
                );
                if let Some(d) = duration {
                    s.duration_sid.push(sid);
                    s.duration.push(d);
                }
            }
            Some(
                Body::Transcript(_)
                | Body::Tool(_)
                | Body::Turn(_)
                | Body::Owner(_)
                | Body::Dispatched(_)
                | Body::Usage(_)
                | Body::Recording(_)
                | Body::Amd(_)
                | Body::Transfer(_),
            )
            | None => {}
        }
    }

    /// Runs one statement per kind present (two for `status`), as [`crate::writer`] does per event.
    async fn execute(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        let s = &self.started;
        if !s.sid.is_empty() {
            // LEAST ignores NULL, so a second `started` (a takeover) keeps the first start time.
            sqlx::query(
                "UPDATE calls c SET
                    agent_id    = COALESCE(NULLIF(u.agent_id, ''), c.agent_id),
                    from_number = COALESCE(NULLIF(u.from_number, ''), c.from_number),
                    to_number   = COALESCE(NULLIF(u.to_number, ''), c.to_number),
                    direction   = COALESCE(u.direction, c.direction),
                    worker_id   = COALESCE(NULLIF(u.worker_id, ''), c.worker_id),
                    model       = COALESCE(NULLIF(u.model, ''), c.model),
                    started_at  = LEAST(c.started_at, u.at)
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::timestamptz[])
                      AS u(call_sid, agent_id, from_number, to_number, direction, worker_id,
                           model, at)
                 WHERE c.call_sid = u.call_sid",
            )
            .bind(&s.sid)
            .bind(&s.agent_id)
            .bind(&s.from)
            .bind(&s.to)
            .bind(&s.direction)
            .bind(&s.worker_id)
            .bind(&s.model)
            .bind(&s.at)
            .execute(&mut **tx)
            .await?;
        }
        let o = &self.outcome;
        if !o.sid.is_empty() {
            // The outcome with the highest seq wins, whatever order they arrive in.
            sqlx::query(
                "UPDATE calls c SET outcome = NULLIF(u.outcome, ''),
                                    outcome_detail = NULLIF(u.detail, ''),
                                    outcome_seq = u.seq
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                      AS u(call_sid, outcome, detail, seq)
                 WHERE c.call_sid = u.call_sid AND (c.outcome_seq IS NULL OR c.outcome_seq < u.seq)",
            )
            .bind(&o.sid)
            .bind(&o.outcome)
            .bind(&o.detail)
            .bind(&o.seq)
            .execute(&mut **tx)
            .await?;
        }
        let e = &self.ended;
        if !e.sid.is_empty() {
            // No usage in the event leaves the columns as they are (NULL = unknown, not zero).
            sqlx::query(
                "UPDATE calls c SET
                    ended_at            = u.at,
                    end_reason          = COALESCE(NULLIF(u.reason, ''), c.end_reason),
                    duration_ms         = u.duration_ms,
                    input_tokens        = COALESCE(u.i, c.input_tokens),
                    output_tokens       = COALESCE(u.o, c.output_tokens),
                    input_audio_tokens  = COALESCE(u.ia, c.input_audio_tokens),
                    output_audio_tokens = COALESCE(u.oa, c.output_audio_tokens),
                    input_text_tokens   = COALESCE(u.it, c.input_text_tokens),
                    output_text_tokens  = COALESCE(u.ot, c.output_text_tokens),
                    cached_tokens       = COALESCE(u.ca, c.cached_tokens),
                    cost_usd            = COALESCE(u.cost, c.cost_usd),
                    cost_breakdown      = COALESCE(u.breakdown, c.cost_breakdown),
                    ended_seq           = u.seq
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bigint[],
                             $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                             $10::bigint[], $11::bigint[], $12::float8[], $13::jsonb[],
                             $14::bigint[])
                      AS u(call_sid, at, reason, duration_ms, i, o, ia, oa, it, ot, ca, cost,
                           breakdown, seq)
                 WHERE c.call_sid = u.call_sid AND (c.ended_seq IS NULL OR c.ended_seq < u.seq)",
            )
            .bind(&e.sid)
            .bind(&e.at)
            .bind(&e.reason)
            .bind(&e.duration_ms)
            .bind(&e.input_tokens)
            .bind(&e.output_tokens)
            .bind(&e.input_audio_tokens)
            .bind(&e.output_audio_tokens)
            .bind(&e.input_text_tokens)
            .bind(&e.output_text_tokens)
            .bind(&e.cached_tokens)
            .bind(&e.cost_usd)
            .bind(&e.cost_breakdown)
            .bind(&e.seq)
            .execute(&mut **tx)
            .await?;
        }
        let r = &self.rejected;
        if !r.sid.is_empty() {
            // The caller heard "all agents are busy" and the call ended there.
            sqlx::query(
                "UPDATE calls c SET
                    rejected_reason = COALESCE(NULLIF(u.reason, ''), c.rejected_reason),
                    from_number     = COALESCE(c.from_number, NULLIF(u.from_number, '')),
                    to_number       = COALESCE(c.to_number, NULLIF(u.to_number, '')),
                    ended_at        = COALESCE(c.ended_at, u.at)
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                      AS u(call_sid, reason, from_number, to_number, at)
                 WHERE c.call_sid = u.call_sid",
            )
            .bind(&r.sid)
            .bind(&r.reason)
            .bind(&r.from)
            .bind(&r.to)
            .bind(&r.at)
            .execute(&mut **tx)
            .await?;
        }
        let s = &self.status;
        if !s.sid.is_empty() {
            // Twilio's SequenceNumber orders the callbacks; the latest wins whatever the arrival
            // order. A duration only comes with a terminal status; an earlier one never clears it.
            sqlx::query(
                "UPDATE calls c SET
                    twilio_status            = NULLIF(u.status, ''),
                    twilio_status_seq        = u.sequence,
                    twilio_duration_seconds  = COALESCE(u.duration, c.twilio_duration_seconds),
                    twilio_sip_response_code = COALESCE(u.sip, c.twilio_sip_response_code)
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int4[])
                      AS u(call_sid, status, sequence, duration, sip)
                 WHERE c.call_sid = u.call_sid
                   AND (c.twilio_status_seq IS NULL OR c.twilio_status_seq < u.sequence)",
            )
            .bind(&s.sid)
            .bind(&s.status)
            .bind(&s.sequence)
            .bind(&s.duration_seconds)
            .bind(&s.sip_response_code)
            .execute(&mut **tx)
            .await?;
        }
        if !s.duration_sid.is_empty() {
            // A terminal callback that lost the race to a later one may still carry the duration.
            sqlx::query(
                "UPDATE calls c SET twilio_duration_seconds = u.duration
                 FROM UNNEST($1::text[], $2::bigint[]) AS u(call_sid, duration)
                 WHERE c.call_sid = u.call_sid AND c.twilio_duration_seconds IS NULL",
            )
            .bind(&s.duration_sid)
            .bind(&s.duration)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
