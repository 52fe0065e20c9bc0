//! A small JSON Schema checker for tool arguments.
//!
//! Models usually produce arguments that match the declared schema, but not always (a missing
//! field, a number where a string belongs). Checking before the handler runs turns those into an
//! `invalid_arguments` error naming the field, which the model can act on, instead of a handler
//! failing somewhere deep. It covers what function schemas use in practice: `type` (one name or a
//! list), `enum`, `required`, `properties`, `additionalProperties: false` and `items`. Anything
//! else in the schema is accepted without checking.
//!
//! It also derives a function-parameters schema from a Rust type ([`object_schema_for`]) for
//! [`Tool::typed`](crate::Tool::typed).

use serde_json::{Map, Value};

/// Checks `value` against `schema`; the error names the offending field.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    // `true`, `{}` and anything that is not an object schema accept every value.
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(expected) = schema.get("type") {
        check_type(expected, value, path)?;
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        let options: Vec<String> = options.iter().map(Value::to_string).collect();
        return Err(format!(
            "{} must be one of {}",
            describe(path),
            options.join(", ")
        ));
    }
    match value {
        Value::Object(fields) => check_object(schema, fields, path),
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| check(item_schema, item, &format!("{path}[{i}]"))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn check_object(
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Err(format!("missing required field `{}`", join(path, name)));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(properties) = properties {
        for (name, sub_schema) in properties {
            if let Some(field) = fields.get(name) {
                check(sub_schema, field, &join(path, name))?;
            }
        }
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        let known = |name: &str| properties.is_some_and(|p| p.contains_key(name));
        if let Some(name) = fields.keys().find(|name| !known(name)) {
            return Err(format!("unexpected field `{}`", join(path, name)));
        }
    }
    Ok(())
}

fn check_type(expected: &Value, value: &Value, path: &str) -> Result<(), String> {
    let names: Vec<&str> = match expected {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    if names.is_empty() || names.iter().any(|name| is_type(value, name)) {
        return Ok(());
    }
    let wanted: Vec<String> = names.iter().map(|n| article(n)).collect();
    Err(format!(
        "{} must be {} (got {})",
        describe(path),
        wanted.join(" or "),
        article(type_of(value))
    ))
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        // An unknown type name is a schema problem, not the model's: accept.
        _ => true,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn article(name: &str) -> String {
    match name {
        "null" => "null".to_owned(),
        "array" | "object" | "integer" => format!("an {name}"),
        _ => format!("a {name}"),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn describe(path: &str) -> String {
    if path.is_empty() {
        "the arguments".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// Integer and float `format` names schemars adds (`uint32`, `double`, ...). They are not JSON
/// Schema formats and only add noise for the model, so they are removed.
const NUMERIC_FORMATS: &[&str] = &[
    "int", "int8", "int16", "int32", "int64", "int128", "uint", "uint8", "uint16", "uint32",
    "uint64", "uint128", "float", "double",
];

/// The JSON Schema of `T` in the shape OpenAI accepts for function parameters: an object schema
/// (`type: object`, `properties`, `required`) with every subschema inlined, so there is no
/// `$ref`/`$defs` unless `T` is recursive, and without `$schema`, the root `title` or numeric
/// `format`s. `None` if `T` is not serialized as a JSON object (a tool's arguments always are).
pub fn object_schema_for<T: schemars::JsonSchema>() -> Option<Value> {
    let settings = schemars::generate::SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    let root = schema.as_object_mut()?;
    if root.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    root.remove("title");
    root.remove("$schema");
    root.entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    root.entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    strip_numeric_formats(&mut schema);
    Some(schema)
}

fn strip_numeric_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| NUMERIC_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            map.values_mut().for_each(strip_numeric_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_numeric_formats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "phone": {"type": "string"},
                "party": {"type": "integer"},
                "slot": {"type": "string", "enum": ["morning", "afternoon"]},
                "note": {"type": ["string", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "who": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                    "additionalProperties": false
                }
            },
            "required": ["phone"]
        })
    }

    #[test]
    fn accepts_matching_arguments() {
        let args = json!({"phone": "+1", "party": 2, "slot": "morning", "note": null,
            "tags": ["a"], "who": {"name": "Maria"}});
        assert_eq!(validate(&schema(), &args), Ok(()));
        assert_eq!(validate(&json!({}), &json!(42)), Ok(()));
        assert_eq!(
            validate(&schema(), &json!({"phone": "1", "party": 2.0})),
            Ok(())
        );
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let s = schema();
        assert_eq!(
            validate(&s, &json!({})),
            Err("missing required field `phone`".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": 5})),
            Err("`phone` must be a string (got a number)".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": "1", "party": 1.5})),
            Err("`party` must be an integer (got a number)".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": "1", "slot": "noon"})),
            Err("`slot` must be one of \"morning\", \"afternoon\"".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": "1", "tags": ["a", 1]})),
            Err("`tags[1]` must be a string (got a number)".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": "1", "who": {}})),
            Err("missing required field `who.name`".into())
        );
        assert_eq!(
            validate(&s, &json!({"phone": "1", "who": {"name": "x", "age": 3}})),
            Err("unexpected field `who.age`".into())
        );
        assert_eq!(
            validate(&s, &json!([1])),
            Err("the arguments must be an object (got an array)".into())
        );
    }
}
