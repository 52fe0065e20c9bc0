//! Webhook bodies: `{"type": "call.<kind>", "timestamp": "<RFC 3339>", "data": {...}}`.
//!
//! A live event's `data` is the event as the persister's live view shows it
//! ([`persister::live::to_json`]: `call_sid`, `seq`, `kind`, `at_ms` and the body's fields).
//! `call.ended`'s `data` is the end-of-call report, built from the call's own events (kept by
//! the notifier as they pass, so it depends on no other service's tables or timing): the
//! call's fields, the full transcript, tool calls, outcome, usage and cost, end reason.
//!
//! The report's `recording` is the call's last recording, from `ended` (which carries it when
//! it was stored by the time the call ended) or from a `recording` event that came within the
//! report's wait: `{"url", "location", "duration_ms", "channels"}`, where `url` is the WAV in
//! the persister's authenticated read API; `recording_url` repeats `url` (`null` without one).
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
    // The last stream's recording: `ended`'s, or a `recording` event's.
    let mut recording: Option<Value> = None;
    let mut keep_recording = |found: &Value| {
        let stream = |r: &Value| r.get("stream").and_then(Value::as_u64).unwrap_or_default();
        let newer = recording.as_ref().is_none_or(|r| stream(found) > stream(r));
        if found.is_object() && newer {
            recording = Some(found.clone());
        }
    };
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
                if let Some(found) = event.get("recording") {
                    keep_recording(found);
                }
            }
            "recording" => keep_recording(event),
            _ => {}
        }
    }
    report.insert("outcome".into(), outcome);
    report.insert("tool_calls".into(), Value::Array(tool_calls));
    report.insert("twilio_statuses".into(), Value::Array(statuses));
    report.insert("transcript".into(), Value::Array(transcript));
    let recording = recording.map(|r| {
        json!({"url": persister::sessions::recording_url(call_sid),
            "location": field(&r, "location"), "duration_ms": field(&r, "duration_ms"),
            "channels": field(&r, "channels")})
    });
    let url = recording.as_ref().map_or(Value::Null, |r| r["url"].clone());
    report.insert("recording".into(), recording.unwrap_or(Value::Null));
    report.insert("recording_url".into(), url);
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
    let mut report = report;
    // The recording's URL is absolute when the persister's public address is known.
    if let Some(base) = api_base
        && let Some(recording) = report.get_mut("recording").and_then(Value::as_object_mut)
        && let Some(path) = recording.get("url").and_then(Value::as_str)
    {
        let url = json!(format!("{}{path}", base.trim_end_matches('/')));
        recording.insert("url".into(), url.clone());
        report["recording_url"] = url;
    }
    let full = body(crate::endpoints::CALL_ENDED, at_ms, report.clone());
    if full.len() <= max_bytes {
        return full;
    }
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

    fn recording(stream: u64, duration_ms: u64) -> Value {
        json!({"location": format!("CA1/{stream}.wav"), "duration_ms": duration_ms,
            "channels": 2, "bytes": 64_044, "stream": stream})
    }

    #[test]
    fn the_report_carries_the_recording_ended_carries() {
        let report = end_of_call("CA1", &events());
        assert!(report["recording"].is_null());
        assert!(report["recording_url"].is_null());

        let mut events = events();
        events[4]["recording"] = recording(1, 4_000);
        let report = end_of_call("CA1", &events);
        assert_eq!(
            report["recording"],
            json!({"url": "/api/sessions/CA1/recording", "location": "CA1/1.wav",
                "duration_ms": 4_000, "channels": 2})
        );
        assert_eq!(report["recording_url"], "/api/sessions/CA1/recording");
        // With the persister's public address the URL is absolute.
        let body = end_of_call_body(report, 0, 100_000, Some("https://console.example.com/"));
        let body: Value = serde_json::from_str(&body).unwrap();
        let url = "https://console.example.com/api/sessions/CA1/recording";
        assert_eq!(body["data"]["recording"]["url"], url);
        assert_eq!(body["data"]["recording_url"], url);
    }

    #[test]
    fn a_recording_event_within_the_wait_fills_in_the_report() {
        let mut events = events();
        // `ended` went out before the recording was stored; its event came just after.
        let mut stored = recording(1, 4_020);
        stored["call_sid"] = json!("CA1");
        stored["seq"] = json!(1_800_001);
        stored["kind"] = json!("recording");
        events.push(stored.clone());
        let report = end_of_call("CA1", &events);
        assert_eq!(report["recording"]["location"], "CA1/1.wav");
        assert_eq!(report["recording"]["duration_ms"], 4_020);
        assert_eq!(report["recording_url"], "/api/sessions/CA1/recording");

        // A call re-attached on a second stream: its recording is the call's, whichever
        // came first.
        events[4]["recording"] = recording(2, 1_500);
        let report = end_of_call("CA1", &events);
        assert_eq!(report["recording"]["location"], "CA1/2.wav");
        assert_eq!(report["recording"]["duration_ms"], 1_500);
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
