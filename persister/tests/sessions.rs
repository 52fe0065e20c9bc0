//! The persister end to end: events published to JetStream come back from the read API,
//! exactly once in effect, in any arrival order.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard_proto::call_event::Body;
use switchboard_proto::{CallRejected, CallStatus, Role};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[tokio::test]
async fn records_a_call_and_serves_it() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000001";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(sid, events.len() as i64).await?;

    let s = fx.session(sid).await?;
    assert_eq!(s["call_sid"], sid);
    assert_eq!(s["agent_id"], "front-desk");
    assert_eq!(s["from"], "+15550001234");
    assert_eq!(s["to"], "+15550001111");
    assert_eq!(s["direction"], "inbound");
    assert_eq!(s["worker_id"], "worker-1");
    assert_eq!(s["model"], "gpt-realtime");
    assert_eq!(s["started_at"], "2026-01-01T00:00:00Z");
    assert_eq!(s["ended_at"], "2026-01-01T00:00:14Z");
    assert_eq!(s["end_reason"], "caller_hung_up");
    assert_eq!(s["outcome"], "resolved");
    assert_eq!(s["duration_ms"], 14_000);
    assert_eq!(
        s["usage"],
        json!({"input_tokens": 1200, "output_tokens": 800, "input_audio_tokens": 1000,
            "output_audio_tokens": 700, "input_text_tokens": 200, "output_text_tokens": 100,
            "cached_tokens": 64})
    );

    // Ordered by when speech began, not by publication.
    let transcript = s["transcript"].as_array().expect("transcript");
    let order: Vec<(&str, i64)> = transcript
        .iter()
        .map(|t| {
            (
                t["item_id"].as_str().unwrap_or(""),
                t["seq"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("item_a1", 3),
            ("item_u1", 4),
            ("item_a2", 9),
            ("item_u2", 8)
        ]
    );
    assert_eq!(
        transcript[2],
        json!({"seq": 9, "role": "assistant",
            "text": "I found your account, Maria Garcia. You are a gold member and",
            "item_id": "item_a2", "interrupted": true, "heard_ms": 1200, "offset_ms": 7100})
    );
    assert_eq!(transcript[1]["role"], "user");
    assert_eq!(transcript[1]["interrupted"], false);

    assert_eq!(
        s["tools"],
        json!([
            {"seq": 5, "call_id": "call_1", "name": "lookup_customer",
             "arguments": {"phone": "+15550001234"},
             "output": {"found": true, "name": "Maria Garcia", "tier": "gold"},
             "error": null, "latency_ms": 42, "offset_ms": 6358},
            {"seq": 6, "call_id": "call_2", "name": "book_appointment",
             "arguments": "tomorrow at 9", "output": null,
             "error": {"code": "invalid_arguments", "message": "the arguments are not valid JSON"},
             "latency_ms": 3, "offset_ms": 6497}
        ])
    );
    assert_eq!(
        s["turns"],
        json!([
            {"kind": "greeting", "latency_ms": 850, "response_id": "resp_1", "offset_ms": 900},
            {"kind": "response", "latency_ms": 640, "response_id": "resp_2", "offset_ms": 7100}
        ])
    );

    // Priced at the gpt-realtime defaults: the 64 cached tokens split 1000:200 between audio
    // and text input.
    let cost = (1000.0 * (1.0 - 64.0 / 1200.0) * 32.0
        + 200.0 * (1.0 - 64.0 / 1200.0) * 4.0
        + 64.0 * 0.40
        + 700.0 * 64.0
        + 100.0 * 16.0)
        / 1e6;
    let got = s["cost_usd"].as_f64().expect("cost_usd");
    assert!((got - cost).abs() < 1e-9, "cost {got} != {cost}");
    assert_eq!(s["twilio_status"], Value::Null);

    let mut list: Value = fx.get("/api/sessions").await?.json().await?;
    assert_eq!(list["next_cursor"], Value::Null);
    let listed_cost = list["sessions"][0]
        .as_object_mut()
        .and_then(|o| o.remove("cost_usd"))
        .and_then(|c| c.as_f64())
        .expect("cost_usd in the list");
    assert!((listed_cost - cost).abs() < 1e-9);
    assert_eq!(
        list["sessions"],
        json!([{"call_sid": sid, "agent_id": "front-desk", "from": "+15550001234",
            "to": "+15550001111", "direction": "inbound", "worker_id": "worker-1",
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:14Z",
            "end_reason": "caller_hung_up", "outcome": "resolved", "duration_ms": 14000,
            "rejected_reason": null, "twilio_status": null, "twilio_duration_seconds": null}])
    );
    fx.stop().await
}

#[tokio::test]
async fn redeliveries_change_nothing() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000002";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(sid, events.len() as i64).await?;
    let before = fx.counts().await?;
    let session_before = fx.session(sid).await?;

    // The same publishes again (JetStream drops them) and copies under new message ids
    // (stored again; only the persister's ledger can tell).
    for ev in &events {
        fx.publish(ev).await?;
        fx.publish_with_id(ev, &format!("retry-{}", ev.msg_id()))
            .await?;
    }
    // A different version of one event under a new id must not replace the first.
    let mut changed = events[9].clone();
    changed.body = Some(outcome("booked", "changed later"));
    fx.publish_with_id(&changed, "retry-changed").await?;

    // A marker after them: once it is in, everything before it was handled.
    let marker = event("CAmarker", 1, T0, started("front-desk", "+15559990000"));
    fx.publish(&marker).await?;
    fx.wait_events("CAmarker", 1).await?;
    // Every copy was acknowledged.
    wait_consumer_idle(&fx).await?;

    let mut after = fx.counts().await?;
    // Only the marker's call and its ledger row are new.
    for (table, n) in after.iter_mut() {
        if table == "calls" || table == "call_events" {
            *n -= 1;
        }
    }
    assert_eq!(before, after);
    assert_eq!(fx.session(sid).await?, session_before);
    fx.stop().await
}

#[tokio::test]
async fn out_of_order_events_still_give_the_right_row() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000003";
    let events = realistic_call(sid, T0);
    // `ended` first, then the newer outcome before the older one, then the rest, `started` last.
    let older_outcome = event(sid, 10, T0 + 12_000, outcome("pending", "first guess"));
    let newer_outcome = event(sid, 12, T0 + 13_000, outcome("booked", "final"));
    fx.publish(&events[10]).await?; // ended
    fx.publish(&newer_outcome).await?;
    fx.publish(&older_outcome).await?;
    for ev in events[1..9].iter().rev() {
        fx.publish(ev).await?;
    }
    fx.publish(&events[0]).await?; // started
    fx.wait_events(sid, 12).await?;

    let s = fx.session(sid).await?;
    assert_eq!(s["agent_id"], "front-desk");
    assert_eq!(s["from"], "+15550001234");
    assert_eq!(s["worker_id"], "worker-1");
    assert_eq!(s["started_at"], "2026-01-01T00:00:00Z");
    assert_eq!(s["ended_at"], "2026-01-01T00:00:14Z");
    assert_eq!(s["end_reason"], "caller_hung_up");
    assert_eq!(s["duration_ms"], 14_000);
    assert_eq!(s["usage"]["input_tokens"], 1200);
    assert_eq!(s["outcome"], "booked", "the later outcome wins");
    assert_eq!(s["transcript"].as_array().map(Vec::len), Some(4));
    assert_eq!(s["transcript"][0]["item_id"], "item_a1");
    fx.stop().await
}

#[tokio::test]
async fn api_requires_the_admin_token() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000004";
    fx.publish(&event(sid, 1, T0, started("front-desk", "+15550001234")))
        .await?;
    fx.wait_events(sid, 1).await?;

    for path in ["/api/sessions".to_owned(), format!("/api/sessions/{sid}")] {
        let url = format!("{}{path}", fx.base);
        let none = fx.http.get(&url).send().await?;
        assert_eq!(none.status(), 401);
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let body: Value = none.json().await?;
        assert!(body["error"].is_string(), "{body}");

        let wrong = fx.http.get(&url).bearer_auth("nope").send().await?;
        assert_eq!(wrong.status(), 401);
        assert_eq!(
            wrong.json::<Value>().await?,
            json!({"error": "invalid token"})
        );

        let basic = fx
            .http
            .get(&url)
            .basic_auth("admin", Some(TOKEN))
            .send()
            .await?;
        assert_eq!(basic.status(), 401);

        assert_eq!(fx.get(&path).await?.status(), 200);
    }

    let missing = fx.get("/api/sessions/CAunknown").await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await?,
        json!({"error": "no such call"})
    );

    let bad = fx.get("/api/sessions?limit=0").await?;
    assert_eq!(bad.status(), 400);
    let bad = fx.get("/api/sessions?cursor=garbage").await?;
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await?["error"].is_string());

    // Health endpoints stay open.
    let health = fx.http.get(format!("{}/healthz", fx.base)).send().await?;
    assert_eq!(health.status(), 200);
    fx.stop().await
}

#[tokio::test]
async fn undecodable_messages_are_skipped() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000005";
    fx.publish_raw(
        &format!("voice.events.{sid}.started"),
        vec![0xff, 0xff, 0xff],
    )
    .await?;
    // Valid protobuf, but no call sid: just as unusable.
    fx.publish_raw(&format!("voice.events.{sid}.started"), Vec::new())
        .await?;
    let good = event(sid, 1, T0, started("front-desk", "+15550001234"));
    fx.publish(&good).await?;
    fx.wait_events(sid, 1).await?;
    assert_eq!(fx.session(sid).await?["agent_id"], "front-desk");
    // The bad ones were terminated, not left to redelivery.
    wait_consumer_idle(&fx).await?;
    let later = event(
        sid,
        2,
        T0 + 1000,
        Body::Transcript(said(Role::User, "hello", "item_1", 500)),
    );
    fx.publish(&later).await?;
    fx.wait_events(sid, 2).await?;
    fx.stop().await
}

#[tokio::test]
async fn lists_newest_first_with_cursor_and_filters() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    // Five calls a minute apart; the third by another agent, the fourth rejected.
    for i in 0..5_u64 {
        let sid = format!("CA0000000000000000000000000000010{i}");
        let t = T0 + (i as i64) * 60_000;
        let agent = if i == 2 { "sales" } else { "front-desk" };
        let first = if i == 3 {
            event(
                &sid,
                switchboard_proto::event::GATEWAY_SEQ_BASE,
                t,
                Body::Rejected(CallRejected {
                    reason: "no_workers".into(),
                    from: "+15550003333".into(),
                    to: "+15550001111".into(),
                }),
            )
        } else {
            event(&sid, 1, t, started(agent, "+15550001234"))
        };
        fx.publish(&first).await?;
        fx.wait_events(&sid, 1).await?;
    }

    let page1: Value = fx.get("/api/sessions?limit=2").await?.json().await?;
    let sids = |page: &Value| -> Vec<String> {
        page["sessions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["call_sid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        sids(&page1),
        [
            "CA00000000000000000000000000000104",
            "CA00000000000000000000000000000103"
        ]
    );
    assert_eq!(page1["sessions"][1]["rejected_reason"], "no_workers");
    assert_eq!(page1["sessions"][1]["started_at"], Value::Null);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2: Value = fx
        .get(&format!("/api/sessions?limit=2&cursor={cursor}"))
        .await?
        .json()
        .await?;
    assert_eq!(
        sids(&page2),
        [
            "CA00000000000000000000000000000102",
            "CA00000000000000000000000000000101"
        ]
    );
    let cursor = page2["next_cursor"]
        .as_str()
        .expect("a last page")
        .to_owned();
    let page3: Value = fx
        .get(&format!("/api/sessions?limit=2&cursor={cursor}"))
        .await?
        .json()
        .await?;
    assert_eq!(sids(&page3), ["CA00000000000000000000000000000100"]);
    assert_eq!(page3["next_cursor"], Value::Null);

    assert_eq!(page1["total"], 5);
    assert_eq!(page3["total"], 5);
    let sales: Value = fx.get("/api/sessions?agent=sales").await?.json().await?;
    assert_eq!(sids(&sales), ["CA00000000000000000000000000000102"]);
    assert_eq!(sales["total"], 1);
    // Agent and outcome ignore case; the caller number matches any part of it.
    let sales: Value = fx.get("/api/sessions?agent=SaLeS").await?.json().await?;
    assert_eq!(sids(&sales), ["CA00000000000000000000000000000102"]);
    for from in ["%2B15550003333", "3333", "0003"] {
        let found: Value = fx
            .get(&format!("/api/sessions?from={from}"))
            .await?
            .json()
            .await?;
        assert_eq!(
            sids(&found),
            ["CA00000000000000000000000000000103"],
            "{from}"
        );
    }
    let none: Value = fx.get("/api/sessions?from=9999").await?.json().await?;
    assert_eq!(none["total"], 0);
    assert_eq!(sids(&none), Vec::<String>::new());
    // Calls in progress: taken by a worker and not ended (the rejected call is not one).
    let live: Value = fx
        .get(&format!(
            "/api/sessions?status={}",
            persister::api::IN_PROGRESS
        ))
        .await?
        .json()
        .await?;
    assert_eq!(live["total"], 4);
    assert!(!sids(&live).contains(&"CA00000000000000000000000000000103".to_owned()));
    // Transcript search: any line, any case; `%` and `_` are themselves.
    let said_it = event(
        "CA00000000000000000000000000000100",
        2,
        T0 + 1000,
        Body::Transcript(said(Role::User, "Can I get 50% off?", "item_u1", 500)),
    );
    fx.publish(&said_it).await?;
    fx.wait_events("CA00000000000000000000000000000100", 2)
        .await?;
    for (q, found) in [
        ("GET%2050%25", true),
        ("50%25%20off", true),
        ("5_", false),
        ("refund", false),
    ] {
        let page: Value = fx
            .get(&format!("/api/sessions?q={q}"))
            .await?
            .json()
            .await?;
        let want: &[&str] = if found {
            &["CA00000000000000000000000000000100"]
        } else {
            &[]
        };
        assert_eq!(sids(&page), want, "q={q}");
    }

    // Date range: [since, until) on the call's first event, combined with other filters and
    // with pagination.
    let range: Value = fx
        .get("/api/sessions?since=2026-01-01T00:01:00Z&until=2026-01-01T00:04:00Z")
        .await?
        .json()
        .await?;
    assert_eq!(
        sids(&range),
        [
            "CA00000000000000000000000000000103",
            "CA00000000000000000000000000000102",
            "CA00000000000000000000000000000101"
        ]
    );
    let page: Value = fx
        .get("/api/sessions?agent=front-desk&since=2026-01-01T00:01:00%2B00:00&limit=1")
        .await?
        .json()
        .await?;
    assert_eq!(sids(&page), ["CA00000000000000000000000000000104"]);
    let cursor = page["next_cursor"].as_str().expect("next").to_owned();
    let page: Value = fx
        .get(&format!(
            "/api/sessions?agent=front-desk&since=2026-01-01T00:01:00Z&limit=1&cursor={cursor}"
        ))
        .await?
        .json()
        .await?;
    assert_eq!(sids(&page), ["CA00000000000000000000000000000101"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let resolved: Value = fx
        .get("/api/sessions?outcome=resolved")
        .await?
        .json()
        .await?;
    assert_eq!(sids(&resolved), Vec::<String>::new());

    for bad in [
        "since=yesterday",
        "until=2026-01-01",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "limit=0",
        "cursor=garbage",
        "status=done",
    ] {
        let resp = fx.get(&format!("/api/sessions?{bad}")).await?;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await?;
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    fx.stop().await
}

#[tokio::test]
async fn keeps_the_latest_twilio_status_in_any_order() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000007";
    let base = switchboard_proto::event::GATEWAY_SEQ_BASE;
    let status = |n: u32, status: &str, duration: u32| {
        event(
            sid,
            base + 1 + u64::from(n),
            T0 + i64::from(n) * 1000,
            Body::Status(CallStatus {
                status: status.into(),
                sequence_number: n,
                duration_seconds: duration,
                sip_response_code: if duration > 0 { 200 } else { 0 },
            }),
        )
    };
    // The terminal callback overtakes the earlier ones.
    fx.publish(&event(sid, 1, T0, started("front-desk", "+15550001234")))
        .await?;
    fx.publish(&status(2, "completed", 37)).await?;
    fx.publish(&status(0, "ringing", 0)).await?;
    fx.publish(&status(1, "in-progress", 0)).await?;
    fx.wait_events(sid, 4).await?;
    let s = fx.session(sid).await?;
    assert_eq!(s["twilio_status"], "completed");
    assert_eq!(s["twilio_duration_seconds"], 37);
    assert_eq!(s["twilio_sip_response_code"], 200);
    // No usage yet: no cost, rather than a cost of zero.
    assert_eq!(s["cost_usd"], Value::Null);
    let list: Value = fx.get("/api/sessions").await?.json().await?;
    assert_eq!(list["sessions"][0]["twilio_status"], "completed");
    assert_eq!(list["sessions"][0]["twilio_duration_seconds"], 37);
    fx.stop().await
}

#[tokio::test]
async fn rides_out_a_database_outage() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000006";
    fx.publish(&event(sid, 1, T0, started("front-desk", "+15550001234")))
        .await?;
    fx.wait_events(sid, 1).await?;

    fx.pg.stop_server().await?;
    fx.publish(&event(sid, 2, T0 + 5000, ended("caller_hung_up", 5000)))
        .await?;
    fx.wait_ready(false).await?;
    fx.pg.start_server().await?;
    fx.wait_ready(true).await?;
    fx.wait_events(sid, 2).await?;
    assert_eq!(fx.session(sid).await?["end_reason"], "caller_hung_up");
    fx.stop().await
}

/// Waits until the durable consumer has nothing pending or unacknowledged.
async fn wait_consumer_idle(fx: &Fixture) -> anyhow::Result<()> {
    switchboard_testkit::eventually(Duration::from_secs(10), "consumer idle", || async {
        let stream = fx.js.get_stream("VOICE_EVENTS").await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("persister").await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
}

#[tokio::test]
async fn the_cost_is_itemised_per_model_transcription_and_twilio_minutes() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000009";
    let usage = switchboard_proto::Usage {
        model: "gpt-realtime-2.1-mini".into(),
        input_tokens: 1_200,
        output_tokens: 800,
        input_audio_tokens: 1_000,
        output_audio_tokens: 700,
        input_text_tokens: 200,
        output_text_tokens: 100,
        cached_tokens: 300,
        cached_audio_tokens: 250,
        cached_text_tokens: 50,
        transcription_model: "gpt-4o-mini-transcribe".into(),
        transcription_input_audio_tokens: 400,
        transcription_output_tokens: 60,
        ..Default::default()
    };
    fx.publish(&event(sid, 1, T0, started("front-desk", "+15550001234")))
        .await?;
    fx.publish(&event(
        sid,
        2,
        T0 + 61_000,
        Body::Ended(switchboard_proto::CallEnded {
            reason: "caller_hung_up".into(),
            duration_ms: 61_000,
            usage: Some(Box::new(usage)),
            recording: None,
        }),
    ))
    .await?;
    fx.wait_events(sid, 2).await?;
    let s = fx.session(sid).await?;
    let b = &s["cost"]["breakdown"];
    assert_eq!(b["model"], "gpt-realtime-2.1-mini");
    assert_eq!(b["priced"], true);
    assert_eq!(b["placeholder"], false, "published prices only");
    let line = |part: &str, item: &str| -> Value {
        b["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["part"] == part && l["item"] == item)
            .cloned()
            .unwrap_or_else(|| panic!("no {part} {item} line: {b}"))
    };
    // The reported split of the cached tokens, each at its own price.
    assert_eq!(line("model", "audio input")["quantity"], 750.0);
    assert_eq!(line("model", "audio input, cached")["quantity"], 250.0);
    assert_eq!(line("model", "audio input, cached")["usd_per_unit"], 0.30);
    assert_eq!(line("model", "text input, cached")["quantity"], 50.0);
    assert_eq!(line("transcription", "audio input")["quantity"], 400.0);
    let model_usd =
        (750.0 * 10.0 + 250.0 * 0.30 + 150.0 * 0.60 + 50.0 * 0.06 + 700.0 * 20.0 + 100.0 * 2.40)
            / 1e6;
    let transcription_usd = (400.0 * 1.25 + 60.0 * 5.0) / 1e6;
    let got = s["cost_usd"].as_f64().unwrap();
    assert!(
        (got - (model_usd + transcription_usd)).abs() < 1e-12,
        "{got}"
    );
    assert!((b["transcription_usd"].as_f64().unwrap() - transcription_usd).abs() < 1e-12);
    // Twilio: no status callback yet, so the call's own 61 s (two started minutes), unpriced
    // until the operator sets a per-minute price.
    assert_eq!(
        s["cost"]["twilio"],
        json!({"seconds": 61, "estimated": true, "minutes": 2, "usd_per_minute": null, "usd": null})
    );
    assert_eq!(s["cost"]["total_usd"], Value::Null);
    fx.stop().await
}
