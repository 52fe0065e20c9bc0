//! Field-level checks of events against the openai-python SDK's GA types (feature
//! `sdk-schema`, for tests).
//!
//! The schemas in `sdk-schema/ga-events.schema.json` are what pydantic derives from the SDK's
//! `RealtimeServerEvent` and `RealtimeClientEvent` unions. [`check_server`] and [`check_client`]
//! validate one event's JSON against them, more strictly than the SDK itself: the SDK's models
//! allow unknown keys, while here a key the type does not declare is an error (an event with a
//! misspelled or invented field is exactly what a simulator must never send). Supported: the
//! subset of JSON Schema pydantic emits (`$ref`, `anyOf`, `oneOf` with a discriminator,
//! `type`, `const`, `enum`, `properties`, `required`, `items`, `additionalProperties`).

use std::sync::OnceLock;

use serde_json::Value;

const SCHEMAS: &str = include_str!("../sdk-schema/ga-events.schema.json");

fn schemas() -> &'static Value {
    static PARSED: OnceLock<Value> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(SCHEMAS).unwrap_or(Value::Null))
}

/// The SDK version the schemas were generated from.
pub fn generator() -> &'static str {
    schemas()["generator"].as_str().unwrap_or("?")
}

/// Fields the server adds to the session object of `session.created` / `session.updated`
/// that the SDK parses into the request model (which does not declare them).
const SERVER_SESSION_FIELDS: [&str; 3] =
    ["$.session.id", "$.session.object", "$.session.expires_at"];

/// Checks a server event; returns every violation (`$.path: what`), empty when it conforms.
pub fn check_server(event: &Value) -> Vec<String> {
    let mut errors = check(&schemas()["server"], event);
    if matches!(
        event["type"].as_str(),
        Some("session.created" | "session.updated")
    ) {
        errors.retain(|e| {
            !SERVER_SESSION_FIELDS
                .iter()
                .any(|f| e.strip_prefix(f).is_some_and(|rest| rest.starts_with(':')))
        });
    }
    errors
}

/// Checks a client event; returns every violation, empty when it conforms.
pub fn check_client(event: &Value) -> Vec<String> {
    check(&schemas()["client"], event)
}

/// Whether the SDK's server union has a member of this `type`.
pub fn server_has(kind: &str) -> bool {
    schemas()["server"]["discriminator"]["mapping"]
        .get(kind)
        .is_some()
}

fn check(root: &Value, event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    Checker { root }.value(root, event, "$", &mut errors);
    errors
}

struct Checker<'a> {
    root: &'a Value,
}

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let Some(name) = r.strip_prefix("#/$defs/") else {
                break;
            };
            s = &self.root["$defs"][name];
        }
        s
    }

    fn value(&self, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(mapping) = schema["discriminator"]["mapping"].as_object() {
            let prop = schema["discriminator"]["propertyName"]
                .as_str()
                .unwrap_or("type");
            let tag = v.get(prop).and_then(Value::as_str).unwrap_or_default();
            match mapping.get(tag) {
                Some(target) => {
                    let target = serde_json::json!({ "$ref": target });
                    self.value(&target, v, path, errors);
                }
                None => errors.push(format!("{path}.{prop}: `{tag}` is not a member")),
            }
            return;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema[key].as_array() {
                let mut best: Option<Vec<String>> = None;
                for branch in branches {
                    let mut e = Vec::new();
                    self.value(branch, v, path, &mut e);
                    if e.is_empty() {
                        return;
                    }
                    if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                        best = Some(e);
                    }
                }
                errors.extend(best.unwrap_or_default());
                return;
            }
        }
        if let Some(c) = schema.get("const")
            && c != v
        {
            errors.push(format!("{path}: {v} is not {c}"));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(v)
        {
            errors.push(format!("{path}: {v} is not one of {allowed:?}"));
            return;
        }
        if let Some(kind) = schema["type"].as_str()
            && !type_matches(kind, v)
        {
            errors.push(format!("{path}: {v} is not of type {kind}"));
            return;
        }
        if let Some(obj) = v.as_object()
            && (schema.get("properties").is_some() || schema.get("additionalProperties").is_some())
        {
            let props = schema["properties"].as_object();
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = req.as_str()
                    && !obj.contains_key(name)
                {
                    errors.push(format!("{path}.{name}: required"));
                }
            }
            for (key, val) in obj {
                let at = format!("{path}.{key}");
                match props.and_then(|p| p.get(key)) {
                    Some(s) => self.value(s, val, &at, errors),
                    None => match schema.get("additionalProperties") {
                        // A dictionary type (e.g. metadata): every value checked.
                        Some(extra @ Value::Object(_)) if props.is_none() => {
                            self.value(extra, val, &at, errors);
                        }
                        _ => errors.push(format!("{at}: not a field of this type")),
                    },
                }
            }
        }
        if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
            for (i, item) in list.iter().enumerate() {
                self.value(items, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
}

fn type_matches(kind: &str, v: &Value) -> bool {
    match kind {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schemas_load_and_know_the_ga_events() {
        assert!(generator().starts_with("openai-python"));
        assert!(server_has("response.output_audio.delta"));
        assert!(!server_has("response.audio.delta"), "beta spelling");
    }

    #[test]
    fn a_conforming_event_passes_and_violations_are_named() {
        let ok = json!({"type":"response.content_part.added","event_id":"e","response_id":"r",
            "item_id":"i","output_index":0,"content_index":0,"part":{"type":"audio","transcript":""}});
        assert_eq!(check_server(&ok), Vec::<String>::new());
        let mut bad = ok.clone();
        bad["part"]["type"] = json!("output_audio");
        bad["extra"] = json!(1);
        let errors = check_server(&bad);
        assert!(
            errors.iter().any(|e| e.starts_with("$.part.type")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("$.extra")),
            "{errors:?}"
        );
        let missing = json!({"type":"error","event_id":"e","error":{"type":"x"}});
        assert_eq!(check_server(&missing), vec!["$.error.message: required"]);
    }

    #[test]
    fn the_client_events_this_crate_builds_conform() {
        use crate::client::{ClientEvent, ResponseParams};
        use crate::item::Item;
        use crate::server::Metadata;
        use crate::session::*;
        let session = Session {
            kind: "realtime".into(),
            model: Some("gpt-realtime".into()),
            output_modalities: Some(vec!["audio".into()]),
            instructions: Some("Be brief.".into()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(AudioFormat::pcmu()),
                    transcription: Some(Transcription {
                        model: "gpt-4o-mini-transcribe".into(),
                        language: Some("en".into()),
                        prompt: Some("dental".into()),
                    }),
                    noise_reduction: Some(NoiseReduction {
                        kind: "near_field".into(),
                    }),
                    turn_detection: Some(TurnDetection::SemanticVad {
                        eagerness: Some("low".into()),
                        create_response: Some(true),
                        interrupt_response: Some(true),
                    }),
                }),
                output: Some(AudioOutput {
                    format: Some(AudioFormat::pcmu()),
                    voice: Some("marin".into()),
                    speed: None,
                }),
            }),
            tools: Some(vec![FunctionTool::new(
                "lookup",
                "d",
                json!({"type":"object"}),
            )]),
            tool_choice: Some("auto".into()),
            truncation: Some(Truncation::retention_ratio(0.8, Some(8000))),
            ..Default::default()
        };
        let events = [
            ClientEvent::SessionUpdate {
                event_id: Some("sb_session_1".into()),
                session,
            },
            ClientEvent::append("AAAA".into()),
            ClientEvent::item_create(Item::user_text("hi")),
            ClientEvent::item_create(Item::assistant_text("hello")),
            ClientEvent::item_create(Item::system_text("note")),
            ClientEvent::item_create(Item::function_output("c1", "{}")),
            ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: "i".into(),
                content_index: 0,
                audio_end_ms: 10,
            },
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: "i".into(),
            },
            ClientEvent::ResponseCreate {
                event_id: Some("sb_resp_1".into()),
                response: Some(ResponseParams {
                    instructions: Some("Say exactly: \"hi\"".into()),
                    metadata: Some(Metadata::from([("k".into(), "v".into())])),
                    ..Default::default()
                }),
            },
            ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            },
        ];
        for ev in events {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(check_client(&v), Vec::<String>::new(), "{v}");
        }
    }
}
