//! `GET /api/analytics` and `GET /api/sessions.csv` over a seeded set of calls written the way
//! producers write them (events on the stream, through the persister's consumer): every number
//! of the overview is computed here again from the seed and compared, for the whole set, for
//! one agent and for one day.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{EndReason, GATEWAY_SEQ_BASE};
use switchboard_proto::{
    CallEnded, CallEvent, CallRejected, CallStarted, CallStatus, Direction, Role, ToolFailure,
    ToolInvocation, TurnLatency, Usage, tool_invocation,
};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;
const TWILIO_PER_MINUTE: f64 = 0.0085;
const TOOLS: [&str; 3] = ["lookup_customer", "book_appointment", "transfer_call"];

/// One seeded call, as the test knows it.
#[derive(Debug, Clone)]
struct Seeded {
    sid: String,
    day: i64,
    hour: i64,
    agent: Option<&'static str>,
    direction: Option<&'static str>,
    rejected: Option<&'static str>,
    busy: bool,
    answered: bool,
    outcome: Option<String>,
    /// (reason, duration_ms)
    end: Option<(&'static str, i64)>,
    twilio_seconds: Option<i64>,
    /// (kind, latency_ms)
    turns: Vec<(&'static str, i64)>,
    interruptions: i64,
    /// (tool, failed, latency_ms)
    tools: Vec<(&'static str, bool, i64)>,
    usage: Usage,
}

fn seed() -> Vec<Seeded> {
    (0..16_i64)
        .map(|i| {
            let sid = format!("CA{i:032}");
            let day = i % 3;
            let hour = (i * 5) % 24;
            let outbound = i % 4 == 3;
            let direction = Some(if outbound { "outbound" } else { "inbound" });
            let agent = Some(if i % 3 == 1 { "sales" } else { "front-desk" });
            let base = Seeded {
                sid,
                day,
                hour,
                agent: None,
                direction: None,
                rejected: None,
                busy: false,
                answered: false,
                outcome: None,
                end: None,
                twilio_seconds: None,
                turns: Vec::new(),
                interruptions: 0,
                tools: Vec::new(),
                usage: Usage::default(),
            };
            match i {
                5 => Seeded {
                    rejected: Some("no_workers"),
                    ..base
                },
                11 => Seeded {
                    rejected: Some("at_capacity"),
                    ..base
                },
                // An outbound call whose callee's line was busy: only Twilio's status.
                7 => Seeded { busy: true, ..base },
                _ => {
                    let responses = (i % 4) + 1;
                    let mut turns = vec![("greeting", 700 + i * 37)];
                    turns.extend(
                        (0..responses).map(|j| ("response", 300 + (i * 53 + j * 97) % 900)),
                    );
                    let tools = (0..(i % 3))
                        .map(|j| {
                            let tool = TOOLS[((i + j) % 3) as usize];
                            (tool, (i + j) % 4 == 0, 20 + (i * 31 + j * 7) % 400)
                        })
                        .collect();
                    let outcome = match i % 5 {
                        0 | 3 => Some("booked".to_owned()),
                        1 => Some("resolved".to_owned()),
                        // From outside (a tool or the model): the export must defuse it.
                        4 => Some("=HYPERLINK(\"x\",y)".to_owned()),
                        _ => None,
                    };
                    let duration = 30_000 + i * 7_345;
                    let end = (i != 13).then(|| {
                        let reason = if i % 2 == 0 {
                            EndReason::CallerHungUp
                        } else {
                            EndReason::EndCall
                        };
                        (reason.as_str(), duration)
                    });
                    let factor = (i + 1) as u64;
                    Seeded {
                        agent,
                        direction,
                        answered: true,
                        outcome,
                        end,
                        twilio_seconds: (end.is_some() && i % 2 == 0)
                            .then_some(duration / 1000 + 2),
                        turns,
                        interruptions: i % 3,
                        tools,
                        usage: Usage {
                            input_tokens: 1200 * factor,
                            output_tokens: 800 * factor,
                            input_audio_tokens: 1000 * factor,
                            output_audio_tokens: 700 * factor,
                            input_text_tokens: 200 * factor,
                            output_text_tokens: 100 * factor,
                            cached_tokens: 64 * factor,
                            ..Default::default()
                        },
                        ..base
                    }
                }
            }
        })
        .collect()
}

impl Seeded {
    fn start_ms(&self) -> i64 {
        T0 + self.day * DAY_MS + self.hour * 3_600_000 + 60_000
    }

    fn day_text(&self) -> String {
        format!("2026-01-0{}", self.day + 1)
    }

    /// The events a gateway and a worker publish for it.
    fn events(&self) -> Vec<CallEvent> {
        let t = self.start_ms();
        let sid = self.sid.as_str();
        if let Some(reason) = self.rejected {
            return vec![event(
                sid,
                GATEWAY_SEQ_BASE,
                t,
                Body::Rejected(CallRejected {
                    reason: reason.into(),
                    from: "+15550002222".into(),
                    to: "+15550001111".into(),
                }),
            )];
        }
        let status = |n: u32, status: &str, seconds: u32| {
            event(
                sid,
                GATEWAY_SEQ_BASE + 1 + u64::from(n),
                t + i64::from(n) * 1000,
                Body::Status(CallStatus {
                    status: status.into(),
                    sequence_number: n,
                    duration_seconds: seconds,
                    sip_response_code: 0,
                }),
            )
        };
        if self.busy {
            return vec![status(0, "initiated", 0), status(1, "busy", 0)];
        }
        let mut out = vec![event(
            sid,
            1,
            t,
            Body::Started(CallStarted {
                agent_id: self.agent.unwrap_or_default().into(),
                from: "+15559876543".into(),
                to: "+15550001111".into(),
                direction: if self.direction == Some("outbound") {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                } as i32,
                worker_id: "worker-1".into(),
                model: "gpt-realtime".into(),
                vars: Default::default(),
            }),
        )];
        let mut seq = 1;
        let mut next = |body: Body| {
            seq += 1;
            event(sid, seq, t + seq as i64 * 500, body)
        };
        for (kind, latency) in &self.turns {
            out.push(next(Body::Turn(TurnLatency {
                kind: (*kind).into(),
                latency_ms: *latency as u32,
                response_id: format!("resp_{latency}"),
            })));
        }
        out.push(next(Body::Transcript(said(
            Role::User,
            "I need an appointment",
            "item_u",
            1000,
        ))));
        for n in 0..self.interruptions {
            let mut cut = said(Role::Assistant, "Let me tell you about", "item_a", 2000);
            cut.item_id = format!("item_a{n}");
            cut.interrupted = true;
            cut.heard_ms = 400;
            out.push(next(Body::Transcript(cut)));
        }
        out.push(next(Body::Transcript(said(
            Role::Assistant,
            "Sure, when suits you?",
            "item_z",
            3000,
        ))));
        for (n, (tool, failed, latency)) in self.tools.iter().enumerate() {
            out.push(next(Body::Tool(ToolInvocation {
                redacted: Vec::new(),
                call_id: format!("call_{n}"),
                name: (*tool).into(),
                arguments: "{}".into(),
                result: Some(if *failed {
                    tool_invocation::Result::Error(ToolFailure {
                        code: "unavailable".into(),
                        message: "down".into(),
                    })
                } else {
                    tool_invocation::Result::Output("{}".into())
                }),
                latency_ms: *latency as u32,
            })));
        }
        if let Some(o) = &self.outcome {
            out.push(next(outcome(o, "")));
        }
        if let Some((reason, duration)) = self.end {
            out.push(next(Body::Ended(CallEnded {
                reason: reason.into(),
                duration_ms: duration as u64,
                usage: Some(Box::new(self.usage.clone())),
                recording: None,
            })));
        }
        if let Some(seconds) = self.twilio_seconds {
            out.push(status(0, "in-progress", 0));
            out.push(status(1, "completed", seconds as u32));
        }
        out
    }
}

/// Publishes the seed's events and waits until the record holds them all.
async fn publish_seed(fx: &Fixture) -> anyhow::Result<Vec<Seeded>> {
    let seeded = seed();
    for call in &seeded {
        let events = call.events();
        for ev in &events {
            fx.publish(ev).await?;
        }
        fx.wait_events(&call.sid, events.len() as i64).await?;
    }
    Ok(seeded)
}

/// `percentile_cont`: linear interpolation between the nearest ranks.
fn percentile(values: &[i64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (pos - lo as f64) * (v[hi] - v[lo]))
}

fn count_by<K: Ord>(items: impl Iterator<Item = K>) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// The overview of `calls`, computed from the seed.
fn expected(calls: &[&Seeded], prices: &persister::pricing::Prices) -> Value {
    let answered = calls.iter().filter(|c| c.answered).count() as i64;
    let durations: Vec<i64> = calls.iter().filter_map(|c| c.end.map(|e| e.1)).collect();
    let per_day = count_by(calls.iter().map(|c| (c.day_text(), c.agent, c.direction)));
    let per_hour = count_by(calls.iter().map(|c| (c.hour, c.agent, c.direction)));
    let not_rejected = || calls.iter().filter(|c| c.rejected.is_none());
    let outcomes = count_by(not_rejected().map(|c| c.outcome.clone()));
    let end_reasons = count_by(not_rejected().map(|c| c.end.map(|e| e.0.to_owned())));
    let rejected = count_by(calls.iter().filter_map(|c| c.rejected));
    let mut turns: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (kind, latency) in calls.iter().flat_map(|c| c.turns.iter()) {
        turns.entry(kind).or_default().push(*latency);
    }
    let mut tools: BTreeMap<&str, (i64, i64, Vec<i64>)> = BTreeMap::new();
    for (tool, failed, latency) in calls.iter().flat_map(|c| c.tools.iter()) {
        let t = tools.entry(tool).or_default();
        t.0 += 1;
        t.1 += i64::from(*failed);
        t.2.push(*latency);
    }
    let interruptions: i64 = calls.iter().map(|c| c.interruptions).sum();
    let twilio_minutes = |c: &Seeded| -> i64 {
        match (c.end, c.twilio_seconds) {
            (None, _) => 0,
            (Some(_), Some(s)) => (s + 59) / 60,
            (Some((_, ms)), None) => ((ms + 999) / 1000 + 59) / 60,
        }
    };
    let model_usd = |c: &Seeded| -> f64 {
        c.end
            .map(|_| prices.cost(&c.usage).expect("priced"))
            .unwrap_or(0.0)
    };
    let mut days: BTreeMap<String, (i64, f64, i64, i64)> = BTreeMap::new();
    for c in calls {
        let d = days.entry(c.day_text()).or_default();
        d.0 += 1;
        d.1 += model_usd(c);
        d.2 += twilio_minutes(c);
        d.3 += c.end.map(|e| e.1).unwrap_or(0);
    }
    let total_model: f64 = calls.iter().map(|c| model_usd(c)).sum();
    let total_minutes: i64 = calls.iter().map(|c| twilio_minutes(c)).sum();
    let call_minutes = durations.iter().sum::<i64>() as f64 / 60_000.0;
    let total_usd = total_model + total_minutes as f64 * TWILIO_PER_MINUTE;
    json!({
        "totals": {
            "calls": calls.len(),
            "answered": answered,
            "rejected": calls.iter().filter(|c| c.rejected.is_some()).count(),
            "busy": calls.iter().filter(|c| c.busy).count(),
            "ended": durations.len(),
        },
        "per_day": per_day.into_iter().map(|((day, agent, direction), n)|
            json!({"day": day, "agent_id": agent, "direction": direction, "calls": n}))
            .collect::<Vec<_>>(),
        "per_hour": per_hour.into_iter().map(|((hour, agent, direction), n)|
            json!({"hour": hour, "agent_id": agent, "direction": direction, "calls": n}))
            .collect::<Vec<_>>(),
        "outcomes": outcomes.into_iter().map(|(v, n)| json!({"value": v, "calls": n}))
            .collect::<Vec<_>>(),
        "end_reasons": end_reasons.into_iter().map(|(v, n)| json!({"value": v, "calls": n}))
            .collect::<Vec<_>>(),
        "rejected_reasons": rejected.into_iter().map(|(v, n)| json!({"value": v, "calls": n}))
            .collect::<Vec<_>>(),
        "duration_ms": {"p50": percentile(&durations, 0.5), "p90": percentile(&durations, 0.9)},
        "turn_latency_ms": turns.iter().map(|(kind, l)| json!({"kind": kind, "turns": l.len(),
            "p50": percentile(l, 0.5), "p90": percentile(l, 0.9), "p99": percentile(l, 0.99)}))
            .collect::<Vec<_>>(),
        "interruptions": {"total": interruptions,
            "per_call": (answered > 0).then(|| interruptions as f64 / answered as f64)},
        "tools": tools.iter().map(|(name, (n, errors, l))| json!({"name": name, "calls": n,
            "errors": errors, "error_rate": *errors as f64 / *n as f64,
            "latency_p50_ms": percentile(l, 0.5)}))
            .collect::<Vec<_>>(),
        "cost_per_day": days.into_iter().map(|(day, (n, model, minutes, ms))| {
            let twilio = minutes as f64 * TWILIO_PER_MINUTE;
            json!({"day": day, "calls": n, "model_usd": model, "twilio_minutes": minutes,
                "twilio_usd": twilio, "total_usd": model + twilio,
                "call_minutes": ms as f64 / 60_000.0})
        }).collect::<Vec<_>>(),
        "cost": {"model_usd": total_model, "twilio_minutes": total_minutes,
            "twilio_usd": total_minutes as f64 * TWILIO_PER_MINUTE, "total_usd": total_usd,
            "call_minutes": call_minutes,
            "per_call_minute_usd": (call_minutes > 0.0).then(|| total_usd / call_minutes)},
    })
}

/// The lists of `v` sorted by their JSON text (the order is the API's business, not the
/// numbers'), so that both sides compare as sets.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        other => other.clone(),
    }
}

/// Compares `got` with `want` key by key, numbers within rounding.
fn assert_close(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{path}: got {g}, want {w}"
            );
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: got {got}, want {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            for (k, w) in w {
                assert_close(g.get(k).unwrap_or(&Value::Null), w, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

async fn overview(fx: &Fixture, query: &str) -> anyhow::Result<Value> {
    let r = fx.get(&format!("/api/analytics{query}")).await?;
    anyhow::ensure!(r.status() == 200, "{query}: {}", r.status());
    Ok(r.json().await?)
}

#[tokio::test]
async fn every_number_of_the_overview_matches_the_seeded_calls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let prices_file = dir.path().join("prices.toml");
    std::fs::write(
        &prices_file,
        format!("twilio_per_minute = {TWILIO_PER_MINUTE}\n"),
    )?;
    let fx = Fixture::start_with(|config| {
        config.prices.prices_file = Some(prices_file.clone());
    })
    .await?;
    let prices = fx.config.prices.load()?;

    let seeded = publish_seed(&fx).await?;

    // The whole set, one agent (in another case), one day (a day as `until` includes it).
    let all: Vec<&Seeded> = seeded.iter().collect();
    let front_desk: Vec<&Seeded> = seeded
        .iter()
        .filter(|c| c.agent == Some("front-desk"))
        .collect();
    let day_two: Vec<&Seeded> = seeded.iter().filter(|c| c.day == 1).collect();
    for (query, calls) in [
        ("", &all),
        ("?agent=Front-Desk", &front_desk),
        ("?since=2026-01-02&until=2026-01-02", &day_two),
        (
            "?since=2026-01-02T00:00:00Z&until=2026-01-03T00:00:00Z",
            &day_two,
        ),
    ] {
        let got = overview(&fx, query).await?;
        let want = expected(calls, &prices);
        assert!(!calls.is_empty());
        assert_close(&canonical(&got), &canonical(&want), query);
    }
    // The scope is echoed back.
    let got = overview(&fx, "?agent=sales&since=2026-01-02").await?;
    assert_eq!(got["agent"], "sales");
    assert_eq!(got["since"], "2026-01-02T00:00:00Z");
    assert_eq!(got["until"], Value::Null);
    // Nothing in scope: zeros and nulls, not errors.
    let none = overview(&fx, "?agent=nobody").await?;
    assert_eq!(none["totals"]["calls"], 0);
    assert_eq!(none["duration_ms"], json!({"p50": null, "p90": null}));
    assert_eq!(none["cost"]["per_call_minute_usd"], Value::Null);
    assert_eq!(none["interruptions"]["per_call"], Value::Null);

    // Bad parameters are a 400 that says what is wrong.
    for (bad, says) in [
        ("since=yesterday", "since must be a day"),
        ("until=2026-13-01", "until must be a day"),
        (
            "since=2026-01-03&until=2026-01-01",
            "since must be before until",
        ),
        ("agnet=sales", "unknown parameter \"agnet\""),
    ] {
        let r = fx.get(&format!("/api/analytics?{bad}")).await?;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await?;
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{bad}: {message}");
    }
    let r = fx
        .http
        .get(format!("{}/api/analytics", fx.base))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    fx.stop().await
}

/// Splits CSV text (RFC 4180) into records of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

#[tokio::test]
async fn the_filtered_call_list_exports_as_csv() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let seeded = publish_seed(&fx).await?;

    let r = fx
        .get("/api/sessions.csv?agent=FRONT-DESK&from=9876")
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers()["content-disposition"]
            .to_str()?
            .starts_with("attachment")
    );
    let text = r.text().await?;
    assert!(text.ends_with("\r\n"), "lines end in CRLF");
    let records = parse_csv(&text);
    assert_eq!(records[0], persister::export::COLUMNS);
    let want: Vec<&Seeded> = seeded
        .iter()
        .rev()
        .filter(|c| c.agent == Some("front-desk"))
        .collect();
    // Newest first: day, then hour.
    let mut want = want;
    want.sort_by_key(|c| std::cmp::Reverse(c.start_ms()));
    let sids: Vec<&str> = records[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        sids,
        want.iter().map(|c| c.sid.as_str()).collect::<Vec<_>>()
    );
    for (record, call) in records[1..].iter().zip(&want) {
        assert_eq!(record.len(), persister::export::COLUMNS.len());
        let field = |name: &str| {
            let i = persister::export::COLUMNS
                .iter()
                .position(|c| *c == name)
                .expect(name);
            record[i].as_str()
        };
        assert_eq!(field("agent_id"), "front-desk");
        assert_eq!(
            field("from"),
            "+15559876543",
            "a phone number stays as it is"
        );
        assert_eq!(
            field("duration_ms"),
            call.end.map(|e| e.1.to_string()).unwrap_or_default()
        );
        assert_eq!(
            field("end_reason"),
            call.end.map(|e| e.0).unwrap_or_default()
        );
        // A formula from outside is defused with a leading quote; the rest is kept.
        let outcome = call.outcome.clone().unwrap_or_default();
        let shown = if outcome.starts_with('=') {
            format!("'{outcome}")
        } else {
            outcome
        };
        assert_eq!(field("outcome"), shown);
    }
    assert!(
        text.contains("\"'=HYPERLINK(\"\"x\"\",y)\""),
        "quoted as RFC 4180 says: {text}"
    );

    // More calls than a page of the list holds (rows made in bulk, as only paging is under
    // test here): every one of them, once, newest first.
    sqlx::query(
        "INSERT INTO calls (call_sid, agent_id, first_event_at)
         SELECT 'CAbulk' || lpad(n::text, 6, '0'), 'bulk',
                timestamptz '2025-06-01 00:00:00Z' + n * interval '1 second'
         FROM generate_series(1, 1234) AS n",
    )
    .execute(&fx.pool)
    .await?;
    let r = fx.get("/api/sessions.csv").await?;
    let all = parse_csv(&r.text().await?);
    assert_eq!(all.len(), seeded.len() + 1234 + 1);
    let bulk: Vec<&str> = all[seeded.len() + 1..]
        .iter()
        .map(|r| r[0].as_str())
        .collect();
    let want: Vec<String> = (1..=1234).rev().map(|n| format!("CAbulk{n:06}")).collect();
    assert_eq!(bulk, want);

    let r = fx.get("/api/sessions.csv?since=never").await?;
    assert_eq!(r.status(), 400);
    let r = fx
        .http
        .get(format!("{}/api/sessions.csv", fx.base))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    fx.stop().await
}
