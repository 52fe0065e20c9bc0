//! The caller script: what the simulated caller does, step by step, written in TOML.
//!
//! ```toml
//! [[step]]
//! listen = { max_ms = 15000, silence_ms = 700 }
//! [[step]]
//! say_ms = 1500
//! [[step]]
//! barge_in = { after_ms = 800, say_ms = 1000 }
//! [[step]]
//! dtmf = "1"
//! [[step]]
//! expect_digits = "12#"
//! [[step]]
//! pause_ms = 500
//! [[step]]
//! hangup = true
//! ```
//!
//! Each `[[step]]` table holds exactly one key. Scripts are checked when loaded, so a typo fails
//! before any call is placed instead of half-way through a load run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest any single step may last; keeps every call (and so every load run) bounded.
pub const MAX_STEP_MS: u64 = 3_600_000;
/// How long a `barge_in` waits for the assistant to be speaking long enough before the step
/// fails; the TOML format has no field for it.
pub const BARGE_IN_MAX_WAIT_MS: u64 = 15_000;
/// How long an `expect_digits` waits for the keys before the step fails.
pub const EXPECT_DIGITS_MAX_WAIT_MS: u64 = 20_000;
/// Slack added to the sum of the steps' longest durations to get the call's time limit.
pub const CALL_SLACK_MS: u64 = 30_000;

/// DTMF digits a phone keypad can send.
const DTMF_DIGITS: &str = "0123456789*#";

/// A caller's behaviour for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerScript {
    /// The steps, run in order. When they run out the caller hangs up (sends `stop`).
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
}

/// One thing the caller does. Media frames keep flowing every 20 ms during every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Wait until some assistant audio has played and then `silence_ms` passed with nothing
    /// playing. Failing to get there within `max_ms` fails the call.
    Listen {
        #[serde(default = "default_listen_max_ms")]
        max_ms: u64,
        #[serde(default = "default_silence_ms")]
        silence_ms: u64,
    },
    /// Speak (synthetic voice-like audio) for this many milliseconds.
    SayMs(u64),
    /// Wait until assistant audio has been playing for `after_ms`, then speak for `say_ms`.
    BargeIn { after_ms: u64, say_ms: u64 },
    /// Press keys: one Twilio `dtmf` message per digit, 20 ms apart.
    Dtmf(String),
    /// The callee is an automated menu (IVR): wait until the line has played these keys
    /// (`<Play digits>`, pauses left out), within [`EXPECT_DIGITS_MAX_WAIT_MS`]; other keys,
    /// or none in time, fail the call.
    ExpectDigits(String),
    /// Stay silent for this many milliseconds.
    PauseMs(u64),
    /// `true`: send `stop` and close the socket, as Twilio does when the caller hangs up.
    /// `false`: drop the connection without `stop` or a close frame, like a network failure.
    Hangup(bool),
}

/// Checks that `digits` (of step `what`) are keypad digits, at least one.
fn keypad(digits: &str, what: &str) -> Result<(), String> {
    if digits.is_empty() {
        return Err(format!("{what} needs at least one digit"));
    }
    match digits.chars().find(|c| !DTMF_DIGITS.contains(*c)) {
        Some(c) => Err(format!("{what} digit {c:?} is not one of {DTMF_DIGITS:?}")),
        None => Ok(()),
    }
}

fn default_listen_max_ms() -> u64 {
    15_000
}

fn default_silence_ms() -> u64 {
    700
}

/// A caller script that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read caller script {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML of the documented shape.
    #[error("invalid caller script: {0}")]
    Parse(#[from] toml::de::Error),
    /// Well-formed, but a step makes no sense.
    #[error("invalid caller script: step {step}: {reason}")]
    Invalid {
        /// 1-based, as a person counts `[[step]]` tables.
        step: usize,
        reason: String,
    },
    /// No steps at all.
    #[error("invalid caller script: it has no [[step]]")]
    Empty,
}

impl CallerScript {
    /// Parses and checks a script.
    pub fn from_toml_str(text: &str) -> Result<Self, ScriptError> {
        // serde's own message for a step with two keys is cryptic; name them instead.
        let table: toml::Table = toml::from_str(text)?;
        if let Some(toml::Value::Array(steps)) = table.get("step") {
            for (i, step) in steps.iter().enumerate() {
                if let toml::Value::Table(t) = step
                    && t.len() != 1
                {
                    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
                    return Err(ScriptError::Invalid {
                        step: i + 1,
                        reason: format!(
                            "each [[step]] holds exactly one action, found {} ({})",
                            t.len(),
                            keys.join(", ")
                        ),
                    });
                }
            }
        }
        let script: Self = toml::from_str(text)?;
        script.validate()?;
        Ok(script)
    }

    /// Reads, parses and checks a script file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScriptError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// The default conversation: hear the greeting, ask something, hear the answer, say one more
    /// thing, hear the reply, hang up.
    pub fn demo() -> Self {
        let listen = Step::Listen {
            max_ms: default_listen_max_ms(),
            silence_ms: default_silence_ms(),
        };
        Self {
            steps: vec![
                listen.clone(),
                Step::SayMs(1500),
                listen.clone(),
                Step::SayMs(1200),
                listen,
                Step::Hangup(true),
            ],
        }
    }

    /// Checks what serde cannot: durations are bounded, digits are keypad digits, nothing follows
    /// a hang-up.
    pub fn validate(&self) -> Result<(), ScriptError> {
        if self.steps.is_empty() {
            return Err(ScriptError::Empty);
        }
        let bounded = |ms: u64, what: &str| {
            if ms > MAX_STEP_MS {
                Err(format!("{what} = {ms} is longer than {MAX_STEP_MS} ms"))
            } else {
                Ok(())
            }
        };
        let positive = |ms: u64, what: &str| {
            if ms == 0 {
                Err(format!("{what} must be greater than 0"))
            } else {
                bounded(ms, what)
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            let check = match step {
                Step::Listen { max_ms, silence_ms } => {
                    positive(*max_ms, "listen.max_ms").and_then(|()| {
                        if silence_ms >= max_ms {
                            Err(format!(
                                "listen.silence_ms ({silence_ms}) must be less than max_ms ({max_ms})"
                            ))
                        } else {
                            Ok(())
                        }
                    })
                }
                Step::SayMs(ms) => positive(*ms, "say_ms"),
                Step::BargeIn { after_ms, say_ms } => bounded(*after_ms, "barge_in.after_ms")
                    .and_then(|()| positive(*say_ms, "barge_in.say_ms")),
                Step::Dtmf(digits) => keypad(digits, "dtmf"),
                Step::ExpectDigits(digits) => keypad(digits, "expect_digits"),
                Step::PauseMs(ms) => bounded(*ms, "pause_ms"),
                Step::Hangup(_) => Ok(()),
            };
            let check = check.and_then(|()| {
                if i > 0 && matches!(self.steps[i - 1], Step::Hangup(_)) {
                    Err("comes after a hangup, so it would never run".to_owned())
                } else {
                    Ok(())
                }
            });
            check.map_err(|reason| ScriptError::Invalid {
                step: i + 1,
                reason,
            })?;
        }
        Ok(())
    }

    /// The longest the script can take, plus slack for the agent's last words: the call's time
    /// limit, so a silent or stuck gateway can never hang a call (or a load run).
    pub fn time_limit(&self) -> Duration {
        let steps: u64 = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Listen { max_ms, .. } => *max_ms,
                Step::SayMs(ms) | Step::PauseMs(ms) => *ms,
                Step::BargeIn { say_ms, .. } => BARGE_IN_MAX_WAIT_MS + say_ms,
                Step::Dtmf(d) => 20 * d.chars().count() as u64,
                Step::ExpectDigits(_) => EXPECT_DIGITS_MAX_WAIT_MS,
                Step::Hangup(_) => 0,
            })
            .sum();
        Duration::from_millis(steps.saturating_add(CALL_SLACK_MS))
    }
}
