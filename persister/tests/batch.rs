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
