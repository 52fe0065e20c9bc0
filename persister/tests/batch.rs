//! Batched writes: a flood of events from many calls, interleaved, shuffled and redelivered,
//! lands exactly once, in few transactions, with the same record as one event at a time.

mod common;

use common::*;
use serde_json::Value;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const CALLS: usize = 40;

#[tokio::test]
async fn a_flood_of_events_is_written_in_batches_exactly_once() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let calls: Vec<(String, Vec<switchboard_proto::CallEvent>)> = (0..CALLS)
        .map(|i| {
            let sid = format!("CA{i:032}");
            let events = realistic_call(&sid, T0 + i as i64 * 1000);
            (sid, events)
        })
        .collect();
    // Interleave the calls, each call's events in reverse (ended first), and publish every
    // event twice: once normally, once under another message id (JetStream stores both).
    let per_call = calls[0].1.len();
    let mut flood = Vec::new();
    for k in (0..per_call).rev() {
        for (_, events) in &calls {
            flood.push(events[k].clone());
        }
    }
    let mut acks = Vec::new();
    for (n, ev) in flood.iter().enumerate() {
        let subject = format!("voice.events.{}.{}", ev.call_sid, ev.kind());
        let payload = switchboard_proto::Message::encode_to_vec(ev);
        acks.push(
            fx.js
                .publish(subject.clone(), payload.clone().into())
                .await?,
        );
        if n % 3 == 0 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("again-{}", ev.msg_id()).as_str());
            acks.push(
                fx.js
                    .publish_with_headers(subject, headers, payload.into())
                    .await?,
            );
        }
    }
    for ack in acks {
        ack.await?;
    }
    for (sid, events) in &calls {
        fx.wait_events(sid, events.len() as i64).await?;
    }

    let counts = fx.counts().await?;
    let get = |t: &str| counts.iter().find(|(n, _)| n == t).map(|(_, c)| *c);
    assert_eq!(get("calls"), Some(CALLS as i64));
    assert_eq!(get("call_events"), Some((CALLS * per_call) as i64));
    assert_eq!(get("transcript_entries"), Some(CALLS as i64 * 4));
    assert_eq!(get("tool_invocations"), Some(CALLS as i64 * 2));
    assert_eq!(get("turns"), Some(CALLS as i64 * 2));

    // Rows written in one transaction share its id: far fewer transactions than events.
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM call_events")
            .fetch_one(&fx.pool)
            .await?;
    assert!(
        transactions * 4 <= (CALLS * per_call) as i64,
        "{transactions} transactions for {} events",
        CALLS * per_call
    );

    // Every call has the record that applying its events one at a time in order gives.
    for (sid, _) in &calls {
        let s = fx.session(sid).await?;
        assert_eq!(s["agent_id"], "front-desk", "{sid}");
        assert_eq!(s["end_reason"], "caller_hung_up", "{sid}");
        assert_eq!(s["outcome"], "resolved", "{sid}");
        assert_eq!(s["duration_ms"], 14_000, "{sid}");
        assert!(s["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{sid}");
        let items: Vec<&str> = s["transcript"]
            .as_array()
            .map(|t| t.iter().filter_map(|e| e["item_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(items, ["item_a1", "item_u1", "item_a2", "item_u2"], "{sid}");
        assert_eq!(
            s["transcript"][2]["interrupted"],
            Value::Bool(true),
            "{sid}"
        );
        assert_eq!(s["tools"].as_array().map(Vec::len), Some(2), "{sid}");
    }
    // Newest first across the whole flood.
    let list: Value = fx.get("/api/sessions?limit=1").await?.json().await?;
    assert_eq!(list["sessions"][0]["call_sid"], calls[CALLS - 1].0);
    assert_eq!(list["sessions"][0]["started_at"], "2026-01-01T00:00:39Z");
    fx.stop().await
}

/// The call-row updates of a batch (one `UPDATE` per kind and round) give the row that applying
/// the same events one at a time in seq order gives: with several events of a kind for one call
/// in a batch, duplicates in and across batches, and events arriving before older ones.
#[tokio::test]
async fn batched_call_row_updates_equal_one_at_a_time() -> anyhow::Result<()> {
    use persister::batch::{self, Pending};
    use persister::writer::{self, Applied};
    use switchboard_proto::call_event::Body;
    use switchboard_proto::event::GATEWAY_SEQ_BASE;
    use switchboard_proto::{CallEvent, CallRejected, CallStarted, CallStatus, Direction};
    use switchboard_testkit::Postgres;

    let pg = Postgres::start().await?;
    let pool = sqlx::PgPool::connect(&pg.create_database("switchboard").await?).await?;
    persister::db::MIGRATOR.run(&pool).await?;
    let prices = persister::pricing::Prices::default();

    let status = |sid: &str, sn: u32, name: &str, duration: u32, sip: u32| {
        event(
            sid,
            GATEWAY_SEQ_BASE + 1 + u64::from(sn),
            T0 + 500 + i64::from(sn) * 1000,
            Body::Status(CallStatus {
                status: name.into(),
                sequence_number: sn,
                duration_seconds: duration,
                sip_response_code: sip,
            }),
        )
    };
    // Phase 1 arrives first: the end of the call, its last status (no duration) and an outcome.
    let phase1 = |sid: &str| {
        vec![
            event(sid, 9, T0 + 9000, ended("caller_hung_up", 9000)),
            status(sid, 3, "completed", 0, 0),
            event(sid, 5, T0 + 5000, outcome("booked", "tomorrow 9:00")),
        ]
    };
    // Phase 2: the rest, several of a kind per call, with phase 1 events again.
    let phase2 = |sid: &str| {
        let takeover = CallStarted {
            agent_id: String::new(),
            from: String::new(),
            to: "+15550002222".into(),
            direction: Direction::Unspecified as i32,
            worker_id: "worker-2".into(),
            model: "gpt-realtime-mini".into(),
            vars: Default::default(),
        };
        vec![
            event(sid, 1, T0, started("front-desk", "+15550001234")),
            event(
                sid,
                2,
                T0 + 100,
                Body::Rejected(CallRejected {
                    reason: "at_capacity".into(),
                    from: "+15559999999".into(),
                    to: "+15558888888".into(),
                }),
            ),
            event(sid, 3, T0 + 3000, outcome("escalated", "")),
            event(sid, 6, T0 + 6000, outcome("resolved", "account looked up")),
            event(sid, 7, T0 + 7000, Body::Started(takeover)),
            event(sid, 8, T0 + 8000, ended("end_call", 8000)),
            status(sid, 0, "initiated", 0, 0),
            status(sid, 2, "in-progress", 42, 200),
            status(sid, 1, "ringing", 0, 0),
            event(sid, 5, T0 + 5000, outcome("booked", "tomorrow 9:00")),
            event(sid, 9, T0 + 9000, ended("caller_hung_up", 9000)),
        ]
    };
    let by_seq = |mut events: Vec<CallEvent>| {
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        events
    };
    // Every event twice, the copies far apart, the order scrambled.
    let doubled = |events: Vec<CallEvent>| -> Vec<Pending> {
        let mut out: Vec<Pending> = events
            .iter()
            .rev()
            .chain(events.iter())
            .map(|event| Pending {
                event: event.clone(),
                stream_seq: None,
            })
            .collect();
        out.rotate_left(3);
        out
    };
    let row = |sid: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT (to_jsonb(c) - 'call_sid')::text FROM calls c WHERE call_sid = $1",
            )
            .bind(sid)
            .fetch_one(&pool)
            .await
        }
    };
    let without_updated_at = |row: &str| -> anyhow::Result<Value> {
        let mut v: Value = serde_json::from_str(row)?;
        v.as_object_mut().map(|o| o.remove("updated_at"));
        Ok(v)
    };

    // One at a time, in seq order within each phase.
    let one = "CA00000000000000000000000000000001";
    for ev in by_seq(phase1(one)).iter().chain(&by_seq(phase2(one))) {
        writer::apply(&pool, ev, None, &prices).await?;
    }
    // Batched.
    let many = "CA00000000000000000000000000000002";
    let first = batch::apply(&pool, &doubled(phase1(many)), &prices).await?;
    assert_eq!(first.iter().filter(|a| **a == Applied::Written).count(), 3);
    let second = batch::apply(&pool, &doubled(phase2(many)), &prices).await?;
    assert_eq!(
        second.iter().filter(|a| **a == Applied::Written).count(),
        9,
        "9 new events in phase 2, the rest are duplicates"
    );

    let expected = without_updated_at(&row(one).await?)?;
    let got = without_updated_at(&row(many).await?)?;
    assert_eq!(got, expected);
    // The row has what each kind put there, whatever the order.
    assert_eq!(got["agent_id"], "front-desk");
    assert_eq!(got["worker_id"], "worker-2");
    assert_eq!(got["from_number"], "+15550001234");
    assert_eq!(got["to_number"], "+15550002222");
    assert_eq!(got["direction"], "inbound");
    assert_eq!(got["outcome"], "resolved");
    assert_eq!(got["outcome_seq"], 6);
    // The `ended` with the highest seq decides the end (a late lower one changes nothing), as
    // it does one at a time.
    assert_eq!(got["end_reason"], "caller_hung_up");
    assert_eq!(got["duration_ms"], 9000);
    assert_eq!(got["ended_seq"], 9);
    assert_eq!(got["rejected_reason"], "at_capacity");
    assert_eq!(got["twilio_status"], "completed");
    // The late terminal callback lost to `completed` but still fills in the duration.
    assert_eq!(got["twilio_duration_seconds"], 42);
    assert_eq!(got["twilio_sip_response_code"], Value::Null);

    // The same batch again changes nothing at all, not even `updated_at`.
    let before = row(many).await?;
    let again = batch::apply(&pool, &doubled(phase2(many)), &prices).await?;
    assert!(again.iter().all(|a| *a == Applied::Duplicate));
    assert_eq!(row(many).await?, before);
    Ok(())
}
