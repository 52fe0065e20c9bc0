//! Checks every frame the gateway sends the way Twilio does, so protocol slips show up in tests
//! instead of as warnings in Twilio's debugger.
//!
//! Twilio accepts only JSON text frames of the events `media`, `mark` and `clear`, with exactly
//! the documented fields and the active `streamSid` (otherwise warning 31951; binary frames are
//! 31950). A frame that fails the checks is not applied, as Twilio does not apply it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use switchboard_twilio::media::ServerMessage;

/// A valid instruction from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Raw mu-law audio to play (never empty).
    Media(Vec<u8>),
    /// A named mark after the audio sent so far.
    Mark(String),
    /// Drop the buffered audio.
    Clear,
}

/// Checks a binary frame: always a protocol error.
pub fn binary(len: usize) -> String {
    format!("31950: binary frame of {len} bytes (Twilio accepts only JSON text frames)")
}

/// Checks a text frame for the stream `stream_sid`.
pub fn text(frame: &str, stream_sid: &str) -> Result<Outbound, String> {
    let value: Value = serde_json::from_str(frame)
        .map_err(|e| format!("31951: invalid JSON ({e}): {}", snippet(frame)))?;
    let Value::Object(obj) = value else {
        return Err(format!("31951: not a JSON object: {}", snippet(frame)));
    };
    let event = match obj.get("event") {
        Some(Value::String(e)) => e.as_str(),
        Some(_) => return Err("31951: `event` is not a string".to_owned()),
        None => return Err(format!("31951: no `event` field: {}", snippet(frame))),
    };
    let body_key = match event {
        "media" => Some("media"),
        "mark" => Some("mark"),
        "clear" => None,
        other => return Err(format!("31951: unknown event `{other}`")),
    };
    let mut allowed = vec!["event", "streamSid"];
    allowed.extend(body_key);
    only_fields(&obj, &allowed, event)?;
    match obj.get("streamSid") {
        Some(Value::String(sid)) if sid == stream_sid => {}
        Some(Value::String(sid)) => {
            return Err(format!(
                "31951: {event} for streamSid `{sid}`, but the active stream is `{stream_sid}`"
            ));
        }
        Some(_) => return Err(format!("31951: {event} has a non-string `streamSid`")),
        None => return Err(format!("31951: {event} without `streamSid`")),
    }
    if let Some(key) = body_key {
        match obj.get(key) {
            Some(Value::Object(body)) => {
                let field = if key == "media" { "payload" } else { "name" };
                only_fields(body, &[field], &format!("{event}.{key}"))?;
                match body.get(field) {
                    Some(Value::String(s)) if !s.is_empty() => {}
                    Some(Value::String(_)) => {
                        return Err(format!("31951: {event} with an empty `{key}.{field}`"));
                    }
                    Some(_) => {
                        return Err(format!("31951: {event} `{key}.{field}` is not a string"));
                    }
                    None => return Err(format!("31951: {event} without `{key}.{field}`")),
                }
            }
            Some(_) => return Err(format!("31951: {event} `{key}` is not an object")),
            None => return Err(format!("31951: {event} without `{key}`")),
        }
    }
    // The shape is right; the shared protocol types give the typed message.
    match ServerMessage::parse(frame).map_err(|e| format!("31951: {e}"))? {
        ServerMessage::Media { media, .. } => {
            let audio = B64
                .decode(media.payload.as_bytes())
                .map_err(|_| "31951: media payload is not valid base64".to_owned())?;
            if audio.is_empty() {
                return Err("31951: media payload decodes to no audio".to_owned());
            }
            Ok(Outbound::Media(audio))
        }
        ServerMessage::Mark { mark, .. } => Ok(Outbound::Mark(mark.name)),
        ServerMessage::Clear { .. } => Ok(Outbound::Clear),
    }
}

/// Rejects fields Twilio does not document for this message.
fn only_fields(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(format!("31951: {what} has an unexpected field `{extra}`")),
        None => Ok(()),
    }
}

/// The start of a frame, for error messages.
fn snippet(frame: &str) -> String {
    const MAX: usize = 80;
    match frame.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}...", &frame[..i]),
        None => format!("{frame:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_messages() {
        let sid = "MZ1";
        assert_eq!(
            text(&ServerMessage::media(sid, &[1, 2]).to_json(), sid),
            Ok(Outbound::Media(vec![1, 2]))
        );
        assert_eq!(
            text(&ServerMessage::mark(sid, "m").to_json(), sid),
            Ok(Outbound::Mark("m".into()))
        );
        assert_eq!(
            text(&ServerMessage::clear(sid).to_json(), sid),
            Ok(Outbound::Clear)
        );
    }

    #[test]
    fn flags_what_twilio_flags() {
        let sid = "MZ1";
        for (frame, expect) in [
            ("{", "invalid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"streamSid":"MZ1"}"#, "no `event`"),
            (r#"{"event":"hello","streamSid":"MZ1"}"#, "unknown event"),
            (
                r#"{"event":"clear","streamSid":"MZ2"}"#,
                "active stream is `MZ1`",
            ),
            (
                r#"{"event":"clear","stream_sid":"MZ1"}"#,
                "unexpected field `stream_sid`",
            ),
            (r#"{"event":"clear"}"#, "without `streamSid`"),
            (
                r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#,
                "without `mark.name`",
            ),
            (r#"{"event":"mark","streamSid":"MZ1"}"#, "without `mark`"),
            (
                r#"{"event":"mark","streamSid":"MZ1","mark":{"name":""}}"#,
                "empty",
            ),
            (
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":""}}"#,
                "empty",
            ),
            (
                r#"{"event":"media","streamSid":"MZ1","media":{"playload":"/w=="}}"#,
                "unexpected field `playload`",
            ),
            (
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}"#,
                "not valid base64",
            ),
        ] {
            let err = text(frame, sid).expect_err(frame);
            assert!(err.contains(expect), "{frame}: {err}");
        }
        assert!(binary(3).starts_with("31950"));
    }
}
