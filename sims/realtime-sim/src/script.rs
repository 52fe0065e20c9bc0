//! The simulator's script: what the simulated model hears and answers (TOML).
//!
//! One script drives every session of a server. Each session keeps its own cursors into
//! `hear` and `response`, so every call placed against the simulator plays the same
//! conversation from the start.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The built-in dental front-desk conversation (used when no script file is given).
const DEMO: &str = include_str!("demo.toml");

/// What the simulated model says when the scripted responses have run out.
pub const FALLBACK_SAY: &str = "Is there anything else I can help you with?";

/// What the simulated model hears when the scripted caller turns have run out.
pub const FALLBACK_HEAR: &str = "(inaudible)";

/// Bounds of the settings, so no script can make a timer or an answer absurdly long.
const MIN_SPEED: f64 = 0.01;
const MAX_SPEED: f64 = 10_000.0;
const MAX_MS_PER_WORD: u32 = 10_000;
const MAX_SESSION_SECONDS: u64 = 7 * 24 * 3600;

/// A simulator script. `Default` is the empty script: default session settings, nothing
/// heard (every turn is "(inaudible)") and no responses (every response is [`FALLBACK_SAY`]).
///
/// `hear` may also be written inside `[session]`: a `hear = [...]` line placed after the
/// `[session]` header belongs to that table under TOML's rules, and scripts are commonly laid
/// out that way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawScript")]
pub struct Script {
    /// Session-wide settings.
    pub session: SessionSettings,
    /// The transcript of each committed caller turn, in order.
    pub hear: Vec<String>,
    /// The responses, consumed in order (TOML `[[response]]`).
    #[serde(rename = "response")]
    pub responses: Vec<ScriptedResponse>,
}

/// The script as written, before `hear` is taken from wherever it was put.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    hear: Option<Vec<String>>,
    #[serde(default, rename = "response")]
    responses: Vec<ScriptedResponse>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    max_seconds: Option<u64>,
    ms_per_word: Option<u32>,
    speed: Option<f64>,
    require_api_key: Option<bool>,
    hear: Option<Vec<String>>,
    transcription_delay_ms: Option<u32>,
    #[serde(default)]
    transcription_fails: Vec<u32>,
    #[serde(default)]
    vad_race: Vec<u32>,
    vad_race_order: Option<RaceOrder>,
}

impl TryFrom<RawScript> for Script {
    type Error = String;

    fn try_from(raw: RawScript) -> Result<Self, Self::Error> {
        let defaults = SessionSettings::default();
        let s = raw.session;
        let hear = match (raw.hear, s.hear) {
            (Some(_), Some(_)) => {
                return Err("`hear` is given twice (at the top level and in [session])".into());
            }
            (Some(h), None) | (None, Some(h)) => h,
            (None, None) => Vec::new(),
        };
        Ok(Script {
            session: SessionSettings {
                max_seconds: s.max_seconds.unwrap_or(defaults.max_seconds),
                ms_per_word: s.ms_per_word.unwrap_or(defaults.ms_per_word),
                speed: s.speed.unwrap_or(defaults.speed),
                require_api_key: s.require_api_key.unwrap_or(defaults.require_api_key),
                transcription_delay_ms: s.transcription_delay_ms,
                transcription_fails: s.transcription_fails,
                vad_race: s.vad_race,
                vad_race_order: s.vad_race_order.unwrap_or_default(),
            },
            hear,
            responses: raw.responses,
        })
    }
}

/// `[session]`: how long sessions live and how fast the simulated model talks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Sessions end with `session_expired` (and close code 1001) after this many seconds.
    pub max_seconds: u64,
    /// Length of synthesized assistant speech per word.
    pub ms_per_word: u32,
    /// Audio deltas are sent this many times faster than real time.
    pub speed: f64,
    /// Refuse upgrades without `Authorization: Bearer <key>` (HTTP 401).
    pub require_api_key: bool,
    /// The caller's transcript (`...input_audio_transcription.completed`) arrives this long after
    /// the commit (default: 150 ms of script time, i.e. divided by `speed`). A long delay makes it
    /// arrive after the response to the turn, as it may on the real server.
    pub transcription_delay_ms: Option<u32>,
    /// Caller turns (1-based, in `hear` order) whose transcription fails
    /// (`conversation.item.input_audio_transcription.failed`).
    pub transcription_fails: Vec<u32>,
    /// Client `response.create`s (1-based, counted per session) that race a server-VAD response:
    /// the server starts its own response (no metadata) and refuses the client's with
    /// `conversation_already_has_active_response`, in the order of `vad_race_order`.
    pub vad_race: Vec<u32>,
    /// Which of the two comes first in a [`SessionSettings::vad_race`].
    pub vad_race_order: RaceOrder,
}

/// The order of the two events of a VAD race.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceOrder {
    /// The VAD response's `response.created`, then the client's refusal (livekit/agents #6817).
    #[default]
    CreatedThenError,
    /// The refusal, then the VAD response's `response.created`.
    ErrorThenCreated,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_seconds: 3600,
            ms_per_word: 250,
            speed: 4.0,
            require_api_key: false,
            transcription_delay_ms: None,
            transcription_fails: Vec::new(),
            vad_race: Vec::new(),
            vad_race_order: RaceOrder::default(),
        }
    }
}

/// One `[[response]]`: speech, a function call, both (speech first), or an error instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResponse {
    /// Speech; `{{field}}` is replaced by that top-level field of the latest function output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say: Option<String>,
    /// A function call, after the speech if both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<ScriptedCall>,
    /// An `error` event sent instead of a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ScriptedError>,
    /// Instead of a response, the connection is dropped without a close frame (a network
    /// failure), to test clients that must reconnect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
}

/// A scripted function call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCall {
    /// The function name.
    pub name: String,
    /// The arguments as JSON text, sent as-is (so a script can also send malformed arguments).
    #[serde(default = "empty_object")]
    pub arguments: String,
}

/// A scripted `error` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedError {
    /// `error.code`, e.g. `rate_limit_exceeded`.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// `error.type`.
    #[serde(rename = "type", default = "invalid_request_error")]
    pub kind: String,
}

fn empty_object() -> String {
    "{}".into()
}

fn invalid_request_error() -> String {
    "invalid_request_error".into()
}

/// Why a script could not be loaded. Every variant names where the script came from.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read realtime-sim script {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// The text is not valid TOML or does not have the script's shape.
    #[error("invalid realtime-sim script {origin}: {message}")]
    Parse { origin: String, message: String },
    /// The script parsed but says something impossible.
    #[error("invalid realtime-sim script {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Script {
    /// Parses a script from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Script, ScriptError> {
        Self::parse(text, "(inline)")
    }

    /// Reads and parses a script file.
    pub fn from_file(path: &Path) -> Result<Script, ScriptError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScriptError::Read {
            path: origin.clone(),
            error,
        })?;
        Self::parse(&text, &origin)
    }

    /// The built-in dental front-desk demo: the caller asks for their account, the model looks
    /// the caller up (`lookup_customer`, which finds the caller by the call's number) and greets them by
    /// `{{name}}`, then answers a question and says goodbye.
    pub fn demo() -> Script {
        // The demo text is part of this crate and covered by a unit test; should it ever fail
        // to parse, fall back to an empty script rather than take the process down.
        Self::parse(DEMO, "(built-in demo)").unwrap_or_default()
    }

    fn parse(text: &str, origin: &str) -> Result<Script, ScriptError> {
        let script: Script = toml::from_str(text).map_err(|e| ScriptError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        script.validate().map_err(|message| ScriptError::Invalid {
            origin: origin.to_string(),
            message,
        })?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.session;
        if !(MIN_SPEED..=MAX_SPEED).contains(&s.speed) {
            return Err(format!(
                "session.speed must be between {MIN_SPEED} and {MAX_SPEED}, got {}",
                s.speed
            ));
        }
        if !(1..=MAX_MS_PER_WORD).contains(&s.ms_per_word) {
            return Err(format!(
                "session.ms_per_word must be between 1 and {MAX_MS_PER_WORD}, got {}",
                s.ms_per_word
            ));
        }
        if !(1..=MAX_SESSION_SECONDS).contains(&s.max_seconds) {
            return Err(format!(
                "session.max_seconds must be between 1 and {MAX_SESSION_SECONDS}, got {}",
                s.max_seconds
            ));
        }
        for (i, r) in self.responses.iter().enumerate() {
            let n = i + 1;
            if r.drop {
                if r.say.is_some() || r.call.is_some() || r.error.is_some() {
                    return Err(format!(
                        "response #{n}: `drop` cannot be combined with `say`, `call` or `error`"
                    ));
                }
                continue;
            }
            match (&r.say, &r.call, &r.error) {
                (None, None, None) => {
                    return Err(format!(
                        "response #{n} has none of `say`, `call`, `error` or `drop`"
                    ));
                }
                (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                    return Err(format!(
                        "response #{n}: `error` cannot be combined with `say` or `call`"
                    ));
                }
                _ => {}
            }
            if let Some(call) = &r.call
                && call.name.trim().is_empty()
            {
                return Err(format!("response #{n}: call.name is empty"));
            }
        }
        Ok(())
    }
}

/// The text between the first pair of double quotes in `instructions`, if any: a response
/// told to say something "exactly" speaks that text (greetings and goodbyes).
pub(crate) fn quoted(instructions: &str) -> Option<&str> {
    let start = instructions.find('"')? + 1;
    let len = instructions[start..].find('"')?;
    Some(&instructions[start..start + len])
}

/// What a scripted model has said or heard, read from a conversation its client seeded (a
/// session that goes on with a call another session began): the script goes on after it, as a
/// real model answers from the conversation it is given instead of starting over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded<'a> {
    /// A caller turn (user text).
    Heard(&'a str),
    /// An answer (assistant text); an interrupted one is the start of what was scripted.
    Said(&'a str),
    /// A function call the model made.
    Called(&'a str),
}

impl Script {
    /// The index of the first `hear` entry at or after `from` that `item` is, for a caller
    /// turn; the next caller turn the model hears is the one after it.
    pub fn heard_at(&self, from: usize, item: Seeded<'_>) -> Option<usize> {
        let Seeded::Heard(text) = item else {
            return None;
        };
        let text = text.trim();
        (from..self.hear.len()).find(|&i| self.hear[i].trim() == text)
    }

    /// The index of the first response at or after `from` that produced `item` (its speech,
    /// with `{{field}}`s filled from `output`, or its function call); the next response is the
    /// one after it.
    pub fn answered_at(
        &self,
        from: usize,
        item: Seeded<'_>,
        output: Option<&serde_json::Value>,
    ) -> Option<usize> {
        (from..self.responses.len()).find(|&i| {
            let r = &self.responses[i];
            match item {
                Seeded::Said(text) => {
                    let text = text.trim();
                    !text.is_empty()
                        && r.say
                            .as_deref()
                            .is_some_and(|say| substitute(say, output).starts_with(text))
                }
                Seeded::Called(name) => r.call.as_ref().is_some_and(|c| c.name == name),
                Seeded::Heard(_) => false,
            }
        })
    }
}

/// Replaces every `{{field}}` in `text` by that top-level field of `output` (strings as-is,
/// other values as JSON, missing fields and `null` as the empty string).
pub(crate) fn substitute(text: &str, output: Option<&serde_json::Value>) -> String {
    let mut result = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        result.push_str(&rest[..open]);
        let field = rest[open + 2..open + 2 + close].trim();
        match output.and_then(|o| o.get(field)) {
            Some(serde_json::Value::String(s)) => result.push_str(s),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => result.push_str(&other.to_string()),
        }
        rest = &rest[open + 2 + close + 2..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let s = Script::from_toml_str(
            r#"
            [session]
            max_seconds = 60
            speeed = 50.0
            "#,
        );
        // A typo is named, not ignored.
        let err = s.unwrap_err().to_string();
        assert!(err.contains("speeed"), "{err}");

        // The layout of the documented example: `hear` after `[session]` lands in that table.
        let s = Script::from_toml_str(
            r#"
            [session]
            speed = 50.0

            hear = ["in the session table"]
            "#,
        )
        .unwrap();
        assert_eq!(s.hear, ["in the session table"]);
        assert_eq!(s.session.speed, 50.0);
        let err = Script::from_toml_str("hear = [\"a\"]\n[session]\nhear = [\"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");

        let s = Script::from_toml_str(
            r#"
            hear = ["one", "two"]
            [session]
            max_seconds = 60
            ms_per_word = 100
            speed = 50.0
            require_api_key = true
            [[response]]
            call = { name = "lookup_customer", arguments = '{"phone":"+15550001234"}' }
            [[response]]
            say = "Hello {{name}}."
            [[response]]
            say = "Let me check."
            call = { name = "end_call" }
            [[response]]
            error = { code = "rate_limit_exceeded", message = "Rate limit reached" }
            "#,
        )
        .unwrap();
        assert_eq!(s.session.max_seconds, 60);
        assert_eq!(s.session.ms_per_word, 100);
        assert!(s.session.require_api_key);
        assert_eq!(s.hear, ["one", "two"]);
        assert_eq!(s.responses.len(), 4);
        assert_eq!(
            s.responses[0].call.as_ref().unwrap().arguments,
            r#"{"phone":"+15550001234"}"#
        );
        assert_eq!(s.responses[2].call.as_ref().unwrap().arguments, "{}");
        let e = s.responses[3].error.as_ref().unwrap();
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code, "rate_limit_exceeded");
    }

    #[test]
    fn defaults_and_demo() {
        let s = Script::default();
        assert_eq!(s.session.ms_per_word, 250);
        assert_eq!(s.session.speed, 4.0);
        assert_eq!(s.session.max_seconds, 3600);
        assert!(!s.session.require_api_key);
        assert!(s.responses.is_empty() && s.hear.is_empty());

        let demo = Script::parse(DEMO, "demo").unwrap();
        assert_eq!(Script::demo(), demo);
        assert!(!demo.hear.is_empty());
        let call = demo.responses[0].call.as_ref().unwrap();
        assert_eq!(call.name, "lookup_customer");
        let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, serde_json::json!({}));
        assert!(demo.responses[1].say.as_ref().unwrap().contains("{{name}}"));
    }

    #[test]
    fn invalid_scripts_say_what_is_wrong() {
        let cases = [
            ("[session]\nspeed = 0.0", "session.speed"),
            ("[session]\nspeed = nan", "session.speed"),
            ("[session]\nmax_seconds = 0", "max_seconds"),
            ("[session]\nms_per_word = 0", "ms_per_word"),
            ("[[response]]\n", "response #1 has none"),
            (
                "[[response]]\nsay = \"a\"\nerror = { code = \"c\", message = \"m\" }",
                "cannot be combined",
            ),
            ("[[response]]\nsay = 3", "say"),
            ("[[response]]\nshout = \"hi\"", "shout"),
            ("[[response]]\ncall = { arguments = '{}' }", "name"),
            ("hear = [", "invalid realtime-sim script (inline)"),
        ];
        for (text, needle) in cases {
            let err = Script::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = Script::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[response]]\nsay = \"a\"\nsay = \"b\"\n").unwrap();
        let err = Script::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("say"), "{err}");

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "hear = [\"hi\"]\n").unwrap();
        assert_eq!(Script::from_file(&good).unwrap().hear, ["hi"]);
    }

    #[test]
    fn the_shared_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".model.toml") {
                Script::from_file(&path).unwrap();
            }
        }
    }

    #[test]
    fn drop_stands_alone() {
        let s = Script::from_toml_str("[[response]]\ndrop = true\n").unwrap();
        assert!(s.responses[0].drop);
        assert!(Script::from_toml_str("[[response]]\ndrop = true\nsay = \"hi\"\n").is_err());
        assert!(
            !Script::from_toml_str("[[response]]\nsay = \"hi\"\n")
                .unwrap()
                .responses[0]
                .drop
        );
    }

    #[test]
    fn quoted_instructions() {
        assert_eq!(
            quoted(r#"Greet the caller by saying exactly: "Hello there.""#),
            Some("Hello there.")
        );
        assert_eq!(quoted(r#"Say "a" then "b""#), Some("a"));
        assert_eq!(quoted("no quotes"), None);
        assert_eq!(quoted(r#"only "one quote"#), None);
    }

    #[test]
    fn a_seeded_conversation_moves_the_script_on() {
        let s = Script::from_toml_str(
            r#"
            hear = ["Look me up.", "Thanks."]
            [[response]]
            call = { name = "lookup" }
            [[response]]
            say = "Found you, {{name}}. Anything else?"
            [[response]]
            say = "Bye."
            "#,
        )
        .unwrap();
        assert_eq!(s.heard_at(0, Seeded::Heard(" Look me up. ")), Some(0));
        assert_eq!(s.heard_at(1, Seeded::Heard("Look me up.")), None);
        assert_eq!(s.heard_at(0, Seeded::Heard("Press 1.")), None);
        assert_eq!(s.answered_at(0, Seeded::Called("lookup"), None), Some(0));
        assert_eq!(s.answered_at(1, Seeded::Called("lookup"), None), None);
        let out = serde_json::json!({"name": "Maria"});
        // An interrupted answer is the start of the scripted one.
        assert_eq!(
            s.answered_at(1, Seeded::Said("Found you, Maria."), Some(&out)),
            Some(1)
        );
        assert_eq!(
            s.answered_at(0, Seeded::Said("Found you, Bob."), Some(&out)),
            None
        );
        // A greeting (not scripted) and empty text move nothing.
        assert_eq!(s.answered_at(0, Seeded::Said("Hello, Acme."), None), None);
        assert_eq!(s.answered_at(0, Seeded::Said(" "), None), None);
    }

    #[test]
    fn substitutes_fields() {
        let out = serde_json::json!({"name": "Maria", "visits": 3, "gone": null});
        assert_eq!(
            substitute(
                "Hi {{name}}, {{ visits }} visits{{gone}}{{missing}}.",
                Some(&out)
            ),
            "Hi Maria, 3 visits."
        );
        assert_eq!(substitute("Hi {{name}}.", None), "Hi .");
        assert_eq!(substitute("Unclosed {{name", Some(&out)), "Unclosed {{name");
    }
}
