//! NATS subject names of the contract (ARCHITECTURE.md section 4).
//!
//! A [`Subjects`] value carries the prefix (`voice` unless `NATS_SUBJECT_PREFIX` says otherwise)
//! and builds every subject from it.

use std::fmt;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "voice";

/// KV bucket of the gateways' one-time claims on a call (keys `<call_sid>.offered`,
/// `<call_sid>.attached`, `<call_sid>.issued`): a voice webhook offers a call once, and a media
/// stream token opens one stream. Shared by every gateway replica; entries expire.
pub const CALLS_BUCKET: &str = "voice-calls";

/// A name that is not a safe single subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid {1}")]
pub struct InvalidToken(pub String, pub &'static str);

/// Builds subject names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Subjects {
    /// Subjects under `prefix` (e.g. `voice`, or `staging.voice`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `voice.calls.offer`: offers to the `call-workers` queue group.
    pub fn offer(&self) -> String {
        format!("{}.calls.offer", self.prefix)
    }

    /// `voice.calls.takeover`: takeover offers, to every call-worker at once (no queue group).
    /// The first worker whose fenced claim of the next epoch wins answers; the others stay
    /// silent. A queue group would hand a takeover to a paused or partitioned worker as readily
    /// as to a live one, and every such draw costs the caller an offer's timeout of silence.
    pub fn takeover(&self) -> String {
        format!("{}.calls.takeover", self.prefix)
    }

    /// `voice.call.<call_sid>.in`: Twilio frames for the worker owning the call.
    pub fn call_in(&self, call_sid: &str) -> String {
        format!("{}.call.{call_sid}.in", self.prefix)
    }

    /// `voice.call.<call_sid>.out`: worker instructions for the gateway holding the socket.
    pub fn call_out(&self, call_sid: &str) -> String {
        format!("{}.call.{call_sid}.out", self.prefix)
    }

    /// `voice.call.<call_sid>.owner`: the gateway's liveness probe of the call's owner
    /// (`OwnerProbe` -> `OwnerAck`).
    pub fn call_owner(&self, call_sid: &str) -> String {
        format!("{}.call.{call_sid}.owner", self.prefix)
    }

    /// `voice.tools.<name>`: requests to a tool service.
    pub fn tool(&self, name: &str) -> String {
        format!("{}.tools.{name}", self.prefix)
    }

    /// `voice.events.<call_sid>.<kind>`: one call event.
    pub fn event(&self, call_sid: &str, kind: &str) -> String {
        format!("{}.events.{call_sid}.{kind}", self.prefix)
    }

    /// `voice.events.>`: every call event (the stream's subject filter).
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `voice.events.<call_sid>.>`: every event of one call.
    pub fn call_events(&self, call_sid: &str) -> String {
        format!("{}.events.{call_sid}.>", self.prefix)
    }
}

/// Checks OpenAI's function-name rule `^[A-Za-z0-9_-]{1,64}$`, which also makes the name a safe
/// subject token.
pub fn validate_tool_name(name: &str) -> Result<(), InvalidToken> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidToken(name.to_owned(), "tool name"))
    }
}

/// Checks that a CallSid is a safe single subject token (Twilio's are `CA` + 32 hex digits; the
/// check is looser so simulators and tests may use readable ids).
pub fn validate_call_sid(sid: &str) -> Result<(), InvalidToken> {
    let ok = (1..=64).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidToken(sid.to_owned(), "call sid"))
    }
}

impl fmt::Display for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_contract_subjects() {
        let s = Subjects::default();
        assert_eq!(s.offer(), "voice.calls.offer");
        assert_eq!(s.call_in("CA1"), "voice.call.CA1.in");
        assert_eq!(s.call_out("CA1"), "voice.call.CA1.out");
        assert_eq!(s.tool("lookup_customer"), "voice.tools.lookup_customer");
        assert_eq!(s.event("CA1", "started"), "voice.events.CA1.started");
        assert_eq!(s.all_events(), "voice.events.>");
        assert_eq!(Subjects::new("x.y").offer(), "x.y.calls.offer");
    }

    #[test]
    fn tool_names_follow_the_function_name_rule() {
        assert!(validate_tool_name("lookup_customer").is_ok());
        assert!(validate_tool_name("a-b_C9").is_ok());
        assert!(validate_tool_name("").is_err());
        assert!(validate_tool_name("a.b").is_err());
        assert!(validate_tool_name("a b").is_err());
        assert!(validate_tool_name("*").is_err());
        assert!(validate_tool_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn call_sids_must_be_single_tokens() {
        assert!(validate_call_sid("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(validate_call_sid("CA.1").is_err());
        assert!(validate_call_sid("CA>").is_err());
        assert!(validate_call_sid("").is_err());
    }
}
