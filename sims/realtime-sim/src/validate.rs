//! Checks a `session.update` the way the real server does, field by field, before anything of it
//! is applied: unknown (or misspelled, or beta-only) parameters, wrong JSON types, values outside
//! an enum and numbers out of range are refused with the error shapes OpenAI's API uses:
//!
//! - `unknown_parameter`: "Unknown parameter: 'session.audio.input.foo'."
//! - `invalid_type`: "Invalid type for 'session.x': expected a string, but got an integer instead."
//! - `invalid_value`: "Invalid value: 'nova'. Supported values are: 'alloy', ... and 'cedar'."
//! - `decimal_above_max_value` / `decimal_below_min_value` / `integer_above_max_value` /
//!   `integer_below_min_value`: "Invalid 'session.x': decimal above maximum value. Expected a
//!   value <= 1, but got 1.5 instead."
//!
//! `param` names the offending path in every case. The fields and enums are those of the GA
//! `RealtimeSessionCreateRequest` of the openai-python SDK (`src/openai/types/realtime/`); the
//! `include`, `tracing`, `prompt`, `reasoning` and `parallel_tool_calls` fields are accepted
//! without a deeper check, since the simulator does not play them.

use serde_json::{Map, Value};
use switchboard_realtime::session::{
    EAGERNESS, NOISE_REDUCTION_TYPES, PCM, PCM_RATE, PCMA, PCMU, TRANSCRIPTION_MODELS, VOICES,
};

/// A refused parameter: `error.code`, `error.message`, `error.param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub code: &'static str,
    pub message: String,
    pub param: String,
}

type Checked = Result<(), Rejection>;

/// Checks a `session` object of `session.update`.
pub(crate) fn session(raw: &Map<String, Value>) -> Checked {
    let p = "session";
    for (key, value) in raw {
        let path = format!("{p}.{key}");
        match key.as_str() {
            "type" => one_of(value, &path, &["realtime", "transcription"])?,
            "model" | "instructions" => string(value, &path)?,
            "output_modalities" => {
                let list = array(value, &path)?;
                for (i, m) in list.iter().enumerate() {
                    one_of(m, &format!("{path}[{i}]"), &["text", "audio"])?;
                }
                if list.len() > 1 {
                    return Err(Rejection {
                        code: "invalid_value",
                        message: format!(
                            "Invalid '{path}': only one output modality may be requested, got {}.",
                            list.len()
                        ),
                        param: path,
                    });
                }
            }
            "audio" => audio(object(value, &path)?, &path)?,
            "tools" => {
                for (i, tool) in array(value, &path)?.iter().enumerate() {
                    function_tool(
                        object(tool, &format!("{path}[{i}]"))?,
                        &format!("{path}[{i}]"),
                    )?;
                }
            }
            "tool_choice" => match value {
                Value::String(_) => one_of(value, &path, &["none", "auto", "required"])?,
                Value::Object(o) => {
                    fields(o, &path, &["type", "name"])?;
                    required(o, &path, "type")?;
                    one_of(&o["type"], &format!("{path}.type"), &["function"])?;
                    required(o, &path, "name")?;
                    string(&o["name"], &format!("{path}.name"))?;
                }
                other => return Err(wrong_type(&path, "a string or an object", other)),
            },
            "max_output_tokens" => match value {
                Value::String(_) => one_of(value, &path, &["inf"])?,
                other => integer(other, &path, 1, 4096)?,
            },
            "truncation" => truncation(value, &path)?,
            "include" | "tracing" | "prompt" | "reasoning" | "parallel_tool_calls" => {}
            _ => return Err(unknown(path)),
        }
    }
    Ok(())
}

fn audio(raw: &Map<String, Value>, p: &str) -> Checked {
    fields(raw, p, &["input", "output"])?;
    if let Some(input) = raw.get("input") {
        let path = format!("{p}.input");
        let input = object(input, &path)?;
        fields(
            input,
            &path,
            &[
                "format",
                "transcription",
                "noise_reduction",
                "turn_detection",
            ],
        )?;
        if let Some(f) = input.get("format") {
            format(f, &format!("{path}.format"))?;
        }
        if let Some(t) = input.get("transcription").filter(|v| !v.is_null()) {
            let tp = format!("{path}.transcription");
            let t = object(t, &tp)?;
            fields(
                t,
                &tp,
                &[
                    "model",
                    "language",
                    "prompt",
                    "delay",
                    "keywords",
                    "languages",
                ],
            )?;
            if let Some(m) = t.get("model") {
                one_of(m, &format!("{tp}.model"), &TRANSCRIPTION_MODELS)?;
            }
            for key in ["language", "prompt"] {
                if let Some(v) = t.get(key) {
                    string(v, &format!("{tp}.{key}"))?;
                }
            }
        }
        if let Some(n) = input.get("noise_reduction").filter(|v| !v.is_null()) {
            let np = format!("{path}.noise_reduction");
            let n = object(n, &np)?;
            fields(n, &np, &["type"])?;
            if let Some(t) = n.get("type") {
                one_of(t, &format!("{np}.type"), &NOISE_REDUCTION_TYPES)?;
            }
        }
        if let Some(td) = input.get("turn_detection").filter(|v| !v.is_null()) {
            turn_detection(object(td, &format!("{path}.turn_detection"))?, &path)?;
        }
    }
    if let Some(output) = raw.get("output") {
        let path = format!("{p}.output");
        let output = object(output, &path)?;
        fields(output, &path, &["format", "voice", "speed"])?;
        if let Some(f) = output.get("format") {
            format(f, &format!("{path}.format"))?;
        }
        if let Some(v) = output.get("voice") {
            let vp = format!("{path}.voice");
            match v {
                Value::Object(o) => {
                    fields(o, &vp, &["id"])?;
                    required(o, &vp, "id")?;
                    string(&o["id"], &format!("{vp}.id"))?;
                }
                other => one_of(other, &vp, &VOICES)?,
            }
        }
        if let Some(s) = output.get("speed") {
            decimal(s, &format!("{path}.speed"), 0.25, 1.5)?;
        }
    }
    Ok(())
}

fn format(value: &Value, p: &str) -> Checked {
    let f = object(value, p)?;
    fields(f, p, &["type", "rate"])?;
    required(f, p, "type")?;
    one_of(&f["type"], &format!("{p}.type"), &[PCM, PCMU, PCMA])?;
    if let Some(rate) = f.get("rate") {
        let rp = format!("{p}.rate");
        if f["type"] != PCM {
            return Err(unknown(rp));
        }
        if rate.as_u64() != Some(u64::from(PCM_RATE)) {
            return Err(Rejection {
                code: "invalid_value",
                message: format!("Invalid value: {rate}. Supported values are: {PCM_RATE}."),
                param: rp,
            });
        }
    }
    Ok(())
}

fn turn_detection(td: &Map<String, Value>, input: &str) -> Checked {
    let p = format!("{input}.turn_detection");
    required(td, &p, "type")?;
    one_of(
        &td["type"],
        &format!("{p}.type"),
        &["server_vad", "semantic_vad"],
    )?;
    let server = td["type"] == "server_vad";
    let allowed: &[&str] = if server {
        &[
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "idle_timeout_ms",
            "create_response",
            "interrupt_response",
        ]
    } else {
        &["type", "eagerness", "create_response", "interrupt_response"]
    };
    fields(td, &p, allowed)?;
    for (key, value) in td {
        let path = format!("{p}.{key}");
        match key.as_str() {
            "threshold" => decimal(value, &path, 0.0, 1.0)?,
            "prefix_padding_ms" | "silence_duration_ms" | "idle_timeout_ms" if !value.is_null() => {
                integer(value, &path, 0, 600_000)?;
            }
            "create_response" | "interrupt_response" => boolean(value, &path)?,
            "eagerness" => one_of(value, &path, &EAGERNESS)?,
            _ => {}
        }
    }
    Ok(())
}

fn function_tool(tool: &Map<String, Value>, p: &str) -> Checked {
    fields(tool, p, &["type", "name", "description", "parameters"])?;
    if let Some(t) = tool.get("type") {
        one_of(t, &format!("{p}.type"), &["function"])?;
    }
    required(tool, p, "name")?;
    string(&tool["name"], &format!("{p}.name"))?;
    if let Some(d) = tool.get("description") {
        string(d, &format!("{p}.description"))?;
    }
    if let Some(params) = tool.get("parameters") {
        object(params, &format!("{p}.parameters"))?;
    }
    Ok(())
}

fn truncation(value: &Value, p: &str) -> Checked {
    match value {
        Value::String(_) => one_of(value, p, &["auto", "disabled"]),
        Value::Object(o) => {
            fields(o, p, &["type", "retention_ratio", "token_limits"])?;
            required(o, p, "type")?;
            one_of(&o["type"], &format!("{p}.type"), &["retention_ratio"])?;
            required(o, p, "retention_ratio")?;
            decimal(
                &o["retention_ratio"],
                &format!("{p}.retention_ratio"),
                0.0,
                1.0,
            )?;
            if let Some(limits) = o.get("token_limits") {
                let lp = format!("{p}.token_limits");
                let limits = object(limits, &lp)?;
                fields(limits, &lp, &["post_instructions"])?;
                if let Some(pi) = limits.get("post_instructions") {
                    integer(pi, &format!("{lp}.post_instructions"), 0, 1_000_000)?;
                }
            }
            Ok(())
        }
        other => Err(wrong_type(p, "a string or an object", other)),
    }
}

// ------------------------------------------------------------------------- primitives

fn unknown(param: String) -> Rejection {
    Rejection {
        code: "unknown_parameter",
        message: format!("Unknown parameter: '{param}'."),
        param,
    }
}

fn fields(o: &Map<String, Value>, p: &str, allowed: &[&str]) -> Checked {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown(format!("{p}.{k}"))),
        None => Ok(()),
    }
}

fn required(o: &Map<String, Value>, p: &str, key: &str) -> Checked {
    if o.contains_key(key) {
        return Ok(());
    }
    let param = format!("{p}.{key}");
    Err(Rejection {
        code: "missing_required_parameter",
        message: format!("Missing required parameter: '{param}'."),
        param,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(p: &str, expected: &str, got: &Value) -> Rejection {
    Rejection {
        code: "invalid_type",
        message: format!(
            "Invalid type for '{p}': expected {expected}, but got {} instead.",
            json_kind(got)
        ),
        param: p.to_owned(),
    }
}

fn object<'a>(v: &'a Value, p: &str) -> Result<&'a Map<String, Value>, Rejection> {
    v.as_object().ok_or_else(|| wrong_type(p, "an object", v))
}

fn array<'a>(v: &'a Value, p: &str) -> Result<&'a Vec<Value>, Rejection> {
    v.as_array().ok_or_else(|| wrong_type(p, "an array", v))
}

fn string(v: &Value, p: &str) -> Checked {
    v.as_str()
        .map(|_| ())
        .ok_or_else(|| wrong_type(p, "a string", v))
}

fn boolean(v: &Value, p: &str) -> Checked {
    v.as_bool()
        .map(|_| ())
        .ok_or_else(|| wrong_type(p, "a boolean", v))
}

fn one_of(v: &Value, p: &str, allowed: &[&str]) -> Checked {
    let Some(s) = v.as_str() else {
        return Err(wrong_type(p, "a string", v));
    };
    if allowed.contains(&s) {
        return Ok(());
    }
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    let list = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{}, and {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    Err(Rejection {
        code: "invalid_value",
        message: format!("Invalid value: '{s}'. Supported values are: {list}."),
        param: p.to_owned(),
    })
}

fn decimal(v: &Value, p: &str, min: f64, max: f64) -> Checked {
    let Some(x) = v.as_f64() else {
        return Err(wrong_type(p, "a decimal", v));
    };
    range(p, "decimal", x, min, max, v)
}

fn integer(v: &Value, p: &str, min: i64, max: i64) -> Checked {
    let Some(x) = v.as_i64() else {
        return Err(wrong_type(p, "an integer", v));
    };
    range(p, "integer", x as f64, min as f64, max as f64, v)
}

fn range(p: &str, kind: &'static str, x: f64, min: f64, max: f64, v: &Value) -> Checked {
    let (code, side, bound, op) = if x > max {
        (above(kind), "above maximum", max, "<=")
    } else if x < min {
        (below(kind), "below minimum", min, ">=")
    } else {
        return Ok(());
    };
    Err(Rejection {
        code,
        message: format!(
            "Invalid '{p}': {kind} {side} value. Expected a value {op} {bound}, but got {v} instead."
        ),
        param: p.to_owned(),
    })
}

fn above(kind: &str) -> &'static str {
    if kind == "integer" {
        "integer_above_max_value"
    } else {
        "decimal_above_max_value"
    }
}

fn below(kind: &str) -> &'static str {
    if kind == "integer" {
        "integer_below_min_value"
    } else {
        "decimal_below_min_value"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Checked {
        session(v.as_object().unwrap())
    }

    #[test]
    fn the_workers_session_passes() {
        let ok = json!({"type":"realtime","model":"gpt-realtime","output_modalities":["audio"],
            "instructions":"Be nice.","audio":{"input":{"format":{"type":"audio/pcmu"},
            "transcription":{"model":"gpt-4o-mini-transcribe","language":"en","prompt":"dental"},
            "noise_reduction":{"type":"near_field"},
            "turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,
              "silence_duration_ms":500,"create_response":true,"interrupt_response":true}},
            "output":{"format":{"type":"audio/pcmu"},"voice":"marin","speed":1.0}},
            "tools":[{"type":"function","name":"f","description":"d","parameters":{"type":"object"}}],
            "tool_choice":"auto","max_output_tokens":"inf",
            "truncation":{"type":"retention_ratio","retention_ratio":0.8,
              "token_limits":{"post_instructions":8000}}});
        assert_eq!(check(ok), Ok(()));
        assert_eq!(
            check(
                json!({"type":"realtime","audio":{"output":{"format":{"type":"audio/pcm","rate":24000}}}})
            ),
            Ok(())
        );
    }

    #[test]
    fn misspelled_and_unknown_parameters() {
        let e = check(json!({"type":"realtime","audio":{"input":{"turn_detection":
            {"type":"server_vad","silence_duration":500}}}}))
        .unwrap_err();
        assert_eq!(e.code, "unknown_parameter");
        assert_eq!(
            e.param,
            "session.audio.input.turn_detection.silence_duration"
        );
        assert_eq!(
            e.message,
            "Unknown parameter: 'session.audio.input.turn_detection.silence_duration'."
        );
        // semantic_vad has no threshold.
        let e = check(json!({"type":"realtime","audio":{"input":{"turn_detection":
            {"type":"semantic_vad","threshold":0.5}}}}))
        .unwrap_err();
        assert_eq!(e.param, "session.audio.input.turn_detection.threshold");
        let e = check(json!({"type":"realtime","temperature":0.8})).unwrap_err();
        assert_eq!(e.param, "session.temperature");
        let e = check(json!({"type":"realtime","audio":{"output":{"format":{"type":"audio/pcmu","rate":8000}}}}))
            .unwrap_err();
        assert_eq!(e.param, "session.audio.output.format.rate");
    }

    #[test]
    fn bad_enum_values() {
        let e = check(json!({"type":"realtime","audio":{"output":{"voice":"nova"}}})).unwrap_err();
        assert_eq!(e.code, "invalid_value");
        assert_eq!(e.param, "session.audio.output.voice");
        assert!(
            e.message
                .starts_with("Invalid value: 'nova'. Supported values are: 'alloy', "),
            "{}",
            e.message
        );
        assert!(e.message.ends_with(", and 'cedar'."), "{}", e.message);
        for (v, param) in [
            (
                json!({"audio":{"input":{"format":{"type":"g711_ulaw"}}}}),
                "session.audio.input.format.type",
            ),
            (
                json!({"audio":{"input":{"noise_reduction":{"type":"phone"}}}}),
                "session.audio.input.noise_reduction.type",
            ),
            (
                json!({"audio":{"input":{"turn_detection":{"type":"semantic_vad","eagerness":"eager"}}}}),
                "session.audio.input.turn_detection.eagerness",
            ),
            (
                json!({"audio":{"input":{"transcription":{"model":"whisper-2"}}}}),
                "session.audio.input.transcription.model",
            ),
            (json!({"truncation":"sometimes"}), "session.truncation"),
            (json!({"tool_choice":"any"}), "session.tool_choice"),
        ] {
            let mut v = v;
            v["type"] = json!("realtime");
            let e = check(v).unwrap_err();
            assert_eq!((e.code, e.param.as_str()), ("invalid_value", param));
        }
    }

    #[test]
    fn numbers_out_of_range_and_wrong_types() {
        let e = check(json!({"type":"realtime","audio":{"input":{"turn_detection":
            {"type":"server_vad","threshold":1.5}}}}))
        .unwrap_err();
        assert_eq!(e.code, "decimal_above_max_value");
        assert_eq!(
            e.message,
            "Invalid 'session.audio.input.turn_detection.threshold': decimal above maximum value. Expected a value <= 1, but got 1.5 instead."
        );
        let e = check(json!({"type":"realtime","audio":{"output":{"speed":0.1}}})).unwrap_err();
        assert_eq!(e.code, "decimal_below_min_value");
        let e = check(json!({"type":"realtime","max_output_tokens":5000})).unwrap_err();
        assert_eq!(e.code, "integer_above_max_value");
        let e = check(json!({"type":"realtime","truncation":{"type":"retention_ratio","retention_ratio":1.2}}))
            .unwrap_err();
        assert_eq!(e.param, "session.truncation.retention_ratio");
        let e = check(json!({"type":"realtime","instructions":5})).unwrap_err();
        assert_eq!(e.code, "invalid_type");
        assert_eq!(
            e.message,
            "Invalid type for 'session.instructions': expected a string, but got an integer instead."
        );
    }
}
