//! Applying many [`CallEvent`]s in ONE transaction, exactly once in effect.
//!
//! The throughput of the persister is bounded by round trips to Postgres, not by the work per
//! event, so a batch is written with a handful of multi-row statements (`UNNEST` of arrays):
//!
//! 1. the `calls` rows the batch needs are created if missing (`ON CONFLICT DO NOTHING`);
//! 2. the whole batch goes into the `call_events` ledger with `ON CONFLICT DO NOTHING RETURNING`,
//!    which says which events are new: only those have an effect, so a redelivered event (even
//!    in the same batch) changes nothing;
//! 3. transcript entries, tool invocations and turns of the new events are inserted with one
//!    statement per table;
//! 4. the new events that update the call row (`started`, `outcome`, `ended`, `rejected`,
//!    `status`) are applied one by one, in (call_sid, seq) order, with the same guarded updates as
//!    a single event (they tolerate any arrival order), and `first_event_at` is lowered once per
//!    call.
//!
//! Rows are touched in call_sid order, so replicas writing overlapping batches do not deadlock.

use std::collections::{BTreeMap, HashSet};

use sqlx::PgPool;
use switchboard_proto::CallEvent;
use switchboard_proto::call_event::Body;
use switchboard_proto::{Role, tool_invocation};
use time::OffsetDateTime;

use crate::pricing::Prices;
use crate::writer::{self, Applied, clean, timestamp, to_i64};

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

    // 3. Detail rows, one statement per table.
    let mut transcripts = Transcripts::default();
    let mut tools = Tools::default();
    let mut turns = Turns::default();
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
    for &i in &fresh {
        writer::apply_call_update(&mut tx, &batch[i].event, at[i], prices).await?;
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
