//! Webhook bodies: `{"type": "call.<kind>", "timestamp": "<RFC 3339>", "data": {...}}`.
//!
//! A live event's `data` is the event as the persister's live view shows it
//! ([`persister::live::to_json`]: `call_sid`, `seq`, `kind`, `at_ms` and the body's fields).
//! `call.ended`'s `data` is the end-of-call report, built from the call's own events (kept by
//! the notifier as they pass, so it depends on no other service's tables or timing): the
//! call's fields, the full transcript, tool calls, outcome, usage and cost, end reason.
//!
//! A report whose body would exceed the configured size carries no transcript but a link to
//! the call in the persister's authenticated read API (`transcript_url`).

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The body of a webhook of `event_type` happening at `at_ms` with `data`.
pub fn body(event_type: &str, at_ms: i64, data: Value) -> String {
    json!({"type": event_type, "timestamp": rfc3339(at_ms), "data": data}).to_string()
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(at_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The end-of-call report of `call_sid` from its events (as [`persister::live::to_json`]
/// objects, in `seq` order, the `ended` event among them).
pub fn end_of_call(call_sid: &str, events: &[Value]) -> Value {
    let mut report = Map::new();
    report.insert("call_sid".into(), json!(call_sid));
    let mut transcript = Vec::new();
    let mut tool_calls = Vec::new();
    let mut outcome = Value::Null;
    let mut statuses = Vec::new();
    let field = |event: &Value, name: &str| event.get(name).cloned().unwrap_or(Value::Null);
    for event in events {
        let without = |names: &[&str]| {
            let mut e = event.as_object().cloned().unwrap_or_default();
            for name in ["call_sid", "kind", "seq"].iter().chain(names) {
                e.remove(*name);
            }
            Value::Object(e)
        };
        match event
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "started" => {
                for name in ["agent_id", "from", "to", "direction", "model"] {
                    report.insert(name.into(), field(event, name));
                }
                report.insert("started_at".into(), json!(rfc3339(at_ms(event))));
            }
            "transcript" => transcript.push(without(&[])),
            "tool" => tool_calls.push(without(&[])),
            "outcome" => outcome = without(&["at_ms"]),
            "status" => statuses.push(without(&[])),
            "ended" => {
                report.insert("ended_at".into(), json!(rfc3339(at_ms(event))));
                report.insert("end_reason".into(), field(event, "reason"));
                for name in ["duration_ms", "usage", "cost_usd", "cost"] {
                    report.insert(name.into(), field(event, name));
                }
            }
            _ => {}
        }
    }
    report.insert("outcome".into(), outcome);
    report.insert("tool_calls".into(), Value::Array(tool_calls));
    report.insert("twilio_statuses".into(), Value::Array(statuses));
    report.insert("transcript".into(), Value::Array(transcript));
    // Switchboard records no audio; the field is there so receivers need not change when it does.
    report.insert("recording_url".into(), Value::Null);
    Value::Object(report)
}

fn at_ms(event: &Value) -> i64 {
    event
        .get("at_ms")
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

/// The `call.ended` body of `report`, within `max_bytes` when possible: beyond it the
/// transcript is replaced by `transcript_url` (`<api_base>/api/sessions/<call_sid>`).
pub fn end_of_call_body(
    report: Value,
    at_ms: i64,
    max_bytes: usize,
    api_base: Option<&str>,
) -> String {
    let full = body(crate::endpoints::CALL_ENDED, at_ms, report.clone());
    if full.len() <= max_bytes {
        return full;
    }
    let mut report = report;
    if let Some(fields) = report.as_object_mut() {
        let call_sid = fields
            .get("call_sid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let entries = fields
            .get("transcript")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        fields.insert("transcript".into(), Value::Null);
        fields.insert("transcript_entries".into(), json!(entries));
        fields.insert("transcript_truncated".into(), json!(true));
        fields.insert(
            "transcript_url".into(),
            json!(
                api_base
                    .map(|base| format!("{}/api/sessions/{call_sid}", base.trim_end_matches('/')))
            ),
        );
    }
    body(crate::endpoints::CALL_ENDED, at_ms, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Value> {
        vec![
            json!({"call_sid": "CA1", "seq": 1, "kind": "started", "at_ms": 1_700_000_000_000i64,
                "agent_id": "support", "from": "+15550001", "to": "+15550002",
                "direction": "inbound", "worker_id": "w1", "model": "gpt-realtime"}),
            json!({"call_sid": "CA1", "seq": 2, "kind": "transcript", "at_ms": 1_700_000_001_000i64,
                "role": "assistant", "text": "Hello!", "item_id": "i1", "interrupted": false,
                "heard_ms": 900, "offset_ms": 0}),
            json!({"call_sid": "CA1", "seq": 3, "kind": "tool", "at_ms": 1_700_000_002_000i64,
                "call_id": "c1", "name": "lookup_customer", "arguments": {"phone": "+15550001"},
                "output": {"name": "Ada"}, "error": null, "latency_ms": 12}),
            json!({"call_sid": "CA1", "seq": 4, "kind": "outcome", "at_ms": 1_700_000_003_000i64,
                "outcome": "resolved", "detail": ""}),
            json!({"call_sid": "CA1", "seq": 5, "kind": "ended", "at_ms": 1_700_000_004_000i64,
                "reason": "caller_hung_up", "duration_ms": 4000, "usage": {"input_tokens": 10},
                "cost_usd": 0.01, "cost": {"total_usd": 0.01}}),
        ]
    }

    #[test]
    fn the_report_has_the_call_transcript_tools_outcome_and_cost() {
        let report = end_of_call("CA1", &events());
        assert_eq!(report["call_sid"], "CA1");
        assert_eq!(report["agent_id"], "support");
        assert_eq!(report["end_reason"], "caller_hung_up");
        assert_eq!(report["transcript"][0]["text"], "Hello!");
        assert_eq!(report["transcript"][0]["role"], "assistant");
        assert_eq!(report["tool_calls"][0]["name"], "lookup_customer");
        assert_eq!(report["outcome"]["outcome"], "resolved");
        assert_eq!(report["usage"]["input_tokens"], 10);
        assert_eq!(report["cost_usd"], 0.01);
        assert_eq!(report["started_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_report_over_the_limit_links_the_transcript() {
        let report = end_of_call("CA1", &events());
        let full = end_of_call_body(report.clone(), 0, 100_000, None);
        assert!(full.contains("Hello!"));
        let small = end_of_call_body(report, 0, 200, Some("https://console.example.com/"));
        let small: Value = serde_json::from_str(&small).unwrap();
        assert_eq!(small["type"], "call.ended");
        assert!(small["data"]["transcript"].is_null());
        assert_eq!(small["data"]["transcript_entries"], 1);
        assert_eq!(
            small["data"]["transcript_url"],
            "https://console.example.com/api/sessions/CA1"
        );
    }
}
