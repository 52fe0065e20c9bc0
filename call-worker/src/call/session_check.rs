//! Whether the model session really has the configuration the call sent.
//!
//! A `session.update` the server refuses (an unknown voice, a bad tool schema, a misspelled
//! field) leaves the session as it was: on a new session that is `audio/pcm` at 24 kHz both ways,
//! so the caller would hear noise and the model would hear noise. The server answers a good update
//! with `session.updated` (the whole effective configuration, without our `event_id`) and a bad one
//! with an `error` carrying our `event_id`; updates are answered in order. So every update carries
//! an `event_id` and what it must achieve, and the answer is checked against it: G.711 mu-law both
//! ways, the voice, the tools. A refusal or a mismatch ends the call (`model_config_rejected`).
//!
//! Until the first update of a session is confirmed, that session's audio is not trusted to be
//! mu-law, so the call does not play it. On a working server `session.updated` precedes any
//! response audio anyway (events are answered in order).

use std::collections::VecDeque;

use switchboard_realtime::Session;
use switchboard_realtime::server::ErrorDetail;

/// What one `session.update` must achieve.
#[derive(Debug, Clone)]
struct Expected {
    event_id: String,
    /// Formats set by this update (checked to be `audio/pcmu` both ways).
    formats: bool,
    voice: Option<String>,
    tools: Option<Vec<String>>,
}

/// The `session.update`s of one Realtime session awaiting their answers.
#[derive(Debug, Default)]
pub struct SessionCheck {
    pending: VecDeque<Expected>,
    /// The session's audio formats are confirmed.
    confirmed: bool,
    next_id: u64,
}

impl SessionCheck {
    /// Records an update about to be sent and returns the `event_id` it must carry.
    pub fn sent(&mut self, session: &Session) -> String {
        self.next_id += 1;
        let event_id = format!("sb_session_{}", self.next_id);
        let audio = session.audio.as_ref();
        let formats = audio.is_some_and(|a| {
            a.input.as_ref().is_some_and(|i| i.format.is_some())
                || a.output.as_ref().is_some_and(|o| o.format.is_some())
        });
        let voice = audio
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.voice.clone());
        let tools = session
            .tools
            .as_ref()
            .map(|t| t.iter().map(|f| f.name.clone()).collect());
        self.pending.push_back(Expected {
            event_id: event_id.clone(),
            formats,
            voice,
            tools,
        });
        event_id
    }

    /// Whether the session's audio formats are confirmed (its audio may be played).
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// A new Realtime session: nothing of it is confirmed.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.confirmed = false;
    }

    /// `session.updated` answers the oldest pending update: `Err` says what the session lacks.
    pub fn on_updated(&mut self, session: &Session) -> Result<(), String> {
        let Some(expected) = self.pending.pop_front() else {
            // `session.created`-like echo or an update of someone else: only formats matter.
            return Ok(());
        };
        let audio = session.audio.as_ref();
        if expected.formats || !self.confirmed {
            let input = audio
                .and_then(|a| a.input.as_ref())
                .and_then(|i| i.format.as_ref());
            let output = audio
                .and_then(|a| a.output.as_ref())
                .and_then(|o| o.format.as_ref());
            for (side, format) in [("input", input), ("output", output)] {
                match format {
                    Some(f) if f.is_pcmu() => {}
                    other => {
                        return Err(format!(
                            "audio.{side}.format is {} instead of audio/pcmu",
                            other.map_or("missing", |f| f.kind.as_str())
                        ));
                    }
                }
            }
        }
        if let Some(voice) = &expected.voice {
            let got = audio
                .and_then(|a| a.output.as_ref())
                .and_then(|o| o.voice.as_deref());
            if got != Some(voice.as_str()) {
                return Err(format!(
                    "voice is {} instead of {voice}",
                    got.unwrap_or("missing")
                ));
            }
        }
        if let Some(tools) = &expected.tools {
            let mut want = tools.clone();
            let mut got: Vec<String> = session
                .tools
                .iter()
                .flatten()
                .map(|f| f.name.clone())
                .collect();
            want.sort();
            got.sort();
            if want != got {
                return Err(format!("tools are {got:?} instead of {want:?}"));
            }
        }
        self.confirmed = true;
        Ok(())
    }

    /// An `error`: `Some(why)` when it refuses one of our pending updates (matched by our
    /// `event_id`, or, when the server left it out, by a `session.*` parameter or a code only a
    /// `session.update` gets).
    pub fn on_error(&mut self, error: &ErrorDetail) -> Option<String> {
        let ours = match &error.event_id {
            Some(id) => self.pending.iter().any(|e| e.event_id == *id),
            None => {
                !self.pending.is_empty()
                    && (error
                        .param
                        .as_deref()
                        .is_some_and(|p| p.starts_with("session"))
                        || error.code.as_deref() == Some("cannot_update_voice"))
            }
        };
        if !ours {
            return None;
        }
        self.pending.clear();
        Some(format!(
            "session.update refused: {} ({})",
            error.message,
            error.code.as_deref().unwrap_or("no code")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_realtime::session::{AudioConfig, AudioFormat, AudioInput, AudioOutput};

    fn session(input: AudioFormat, output: AudioFormat, voice: &str) -> Session {
        Session {
            kind: "realtime".into(),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(input),
                    ..Default::default()
                }),
                output: Some(AudioOutput {
                    format: Some(output),
                    voice: Some(voice.into()),
                    speed: None,
                }),
            }),
            tools: Some(Vec::new()),
            ..Default::default()
        }
    }

    #[test]
    fn confirmed_by_a_matching_session_updated() {
        let mut c = SessionCheck::default();
        let sent = session(AudioFormat::pcmu(), AudioFormat::pcmu(), "marin");
        assert_eq!(c.sent(&sent), "sb_session_1");
        assert!(!c.confirmed());
        assert_eq!(c.on_updated(&sent), Ok(()));
        assert!(c.confirmed());
    }

    #[test]
    fn the_default_pcm_session_is_a_mismatch() {
        let mut c = SessionCheck::default();
        c.sent(&session(AudioFormat::pcmu(), AudioFormat::pcmu(), "marin"));
        let got = session(AudioFormat::pcm(), AudioFormat::pcm(), "marin");
        let err = c.on_updated(&got).unwrap_err();
        assert!(err.contains("audio/pcm instead of audio/pcmu"), "{err}");
        assert!(!c.confirmed());
    }

    #[test]
    fn another_voice_is_a_mismatch() {
        let mut c = SessionCheck::default();
        c.sent(&session(AudioFormat::pcmu(), AudioFormat::pcmu(), "marin"));
        let got = session(AudioFormat::pcmu(), AudioFormat::pcmu(), "alloy");
        assert!(c.on_updated(&got).unwrap_err().contains("voice is alloy"));
    }

    #[test]
    fn refusals_are_matched_by_event_id_or_session_param() {
        let mut c = SessionCheck::default();
        let id = c.sent(&session(AudioFormat::pcmu(), AudioFormat::pcmu(), "marin"));
        let other = ErrorDetail {
            code: Some("invalid_value".into()),
            event_id: Some("sb_resp_1".into()),
            ..Default::default()
        };
        assert_eq!(c.on_error(&other), None);
        let no_id_other = ErrorDetail {
            code: Some("item_truncate_invalid_item_id".into()),
            param: Some("item_id".into()),
            ..Default::default()
        };
        assert_eq!(c.on_error(&no_id_other), None);
        let refused = ErrorDetail {
            code: Some("invalid_value".into()),
            message: "Invalid value: 'nova'.".into(),
            param: Some("session.audio.output.voice".into()),
            event_id: Some(id),
            ..Default::default()
        };
        assert!(c.on_error(&refused).unwrap().contains("Invalid value"));
        c.sent(&session(AudioFormat::pcmu(), AudioFormat::pcmu(), "marin"));
        let no_id = ErrorDetail {
            code: Some("unknown_parameter".into()),
            param: Some("session.foo".into()),
            ..Default::default()
        };
        assert!(c.on_error(&no_id).is_some());
    }
}
