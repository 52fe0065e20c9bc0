//! Events a Realtime server sends.

use serde::{Deserialize, Serialize};

use crate::item::Item;
use crate::session::Session;

/// A server event. Renamed events accept their beta spelling too (`response.audio.delta` for
/// `response.output_audio.delta`, ...); [`ServerEvent::Unknown`] takes anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    #[serde(rename = "error")]
    Error {
        #[serde(default)]
        event_id: String,
        error: ErrorDetail,
    },
    #[serde(rename = "session.created")]
    SessionCreated {
        #[serde(default)]
        event_id: String,
        session: Session,
    },
    #[serde(rename = "session.updated", alias = "transcription_session.updated")]
    SessionUpdated {
        #[serde(default)]
        event_id: String,
        session: Session,
    },
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        #[serde(default)]
        event_id: String,
        audio_start_ms: u32,
        item_id: String,
    },
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        #[serde(default)]
        event_id: String,
        audio_end_ms: u32,
        item_id: String,
    },
    #[serde(rename = "input_audio_buffer.committed")]
    InputAudioBufferCommitted {
        #[serde(default)]
        event_id: String,
        item_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
    },
    #[serde(rename = "input_audio_buffer.cleared")]
    InputAudioBufferCleared {
        #[serde(default)]
        event_id: String,
    },
    #[serde(rename = "input_audio_buffer.timeout_triggered")]
    InputAudioBufferTimeoutTriggered {
        #[serde(default)]
        event_id: String,
        #[serde(default)]
        audio_start_ms: u32,
        #[serde(default)]
        audio_end_ms: u32,
        #[serde(default)]
        item_id: String,
    },
    /// GA: an item started (`conversation.item.created` is its beta name).
    #[serde(
        rename = "conversation.item.added",
        alias = "conversation.item.created"
    )]
    ConversationItemAdded {
        #[serde(default)]
        event_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        item: Item,
    },
    /// GA: an item is final.
    #[serde(rename = "conversation.item.done")]
    ConversationItemDone {
        #[serde(default)]
        event_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        item: Item,
    },
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputTranscriptionDelta {
        #[serde(default)]
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        #[serde(default)]
        delta: String,
    },
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptionCompleted {
        #[serde(default)]
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        transcript: String,
        /// What the transcription model billed (required in the GA type; absent in old captures).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<TranscriptionUsage>,
    },
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    InputTranscriptionFailed {
        #[serde(default)]
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        error: TranscriptionError,
    },
    #[serde(rename = "conversation.item.truncated")]
    ConversationItemTruncated {
        #[serde(default)]
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        audio_end_ms: u32,
    },
    #[serde(rename = "conversation.item.deleted")]
    ConversationItemDeleted {
        #[serde(default)]
        event_id: String,
        item_id: String,
    },
    #[serde(rename = "response.created")]
    ResponseCreated {
        #[serde(default)]
        event_id: String,
        response: Response,
    },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        #[serde(default)]
        event_id: String,
        response_id: String,
        #[serde(default)]
        output_index: u32,
        item: Item,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        #[serde(default)]
        output_index: u32,
        item: Item,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        /// The part being started (empty transcript/text so far).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<ResponsePart>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        /// The finished part (with its whole transcript/text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<ResponsePart>,
    },
    /// Assistant audio (base64 in the output format).
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    OutputAudioDelta {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        delta: String,
    },
    #[serde(rename = "response.output_audio.done", alias = "response.audio.done")]
    OutputAudioDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
    },
    #[serde(
        rename = "response.output_audio_transcript.delta",
        alias = "response.audio_transcript.delta"
    )]
    OutputAudioTranscriptDelta {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        delta: String,
    },
    #[serde(
        rename = "response.output_audio_transcript.done",
        alias = "response.audio_transcript.done"
    )]
    OutputAudioTranscriptDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        transcript: String,
    },
    #[serde(rename = "response.output_text.delta", alias = "response.text.delta")]
    OutputTextDelta {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        delta: String,
    },
    #[serde(rename = "response.output_text.done", alias = "response.text.done")]
    OutputTextDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        text: String,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        call_id: String,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        #[serde(default)]
        event_id: String,
        response_id: String,
        item_id: String,
        #[serde(default)]
        output_index: u32,
        call_id: String,
        /// Missing in the beta shape; take it from `response.output_item.*` then.
        #[serde(default)]
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.done")]
    ResponseDone {
        #[serde(default)]
        event_id: String,
        response: Response,
    },
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated {
        #[serde(default)]
        event_id: String,
        #[serde(default)]
        rate_limits: Vec<RateLimit>,
    },
    /// Any event this crate does not model.
    #[serde(other)]
    Unknown,
}

/// The body of an `error` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `server_error`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub param: Option<String>,
    /// The client event that caused it, when known (often null).
    #[serde(default)]
    pub event_id: Option<String>,
}

/// The `error` of `conversation.item.input_audio_transcription.failed` (every field optional;
/// unlike an `error` event's body it has no `event_id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionError {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// A response, as in `response.created` / `response.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: Option<String>,
    /// `in_progress`, `completed`, `cancelled`, `failed`, `incomplete`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_details: Option<StatusDetails>,
    #[serde(default)]
    pub output: Vec<Item>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The conversation the response writes to; `null` for an out-of-band response
    /// (`response.create` with `conversation: "none"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The `metadata` given in `response.create`, echoed back (`null` for a response the
    /// server started by itself, e.g. after server VAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Why a response ended other than `completed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `turn_detected`, `client_cancelled`, `max_output_tokens`, `content_filter`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

/// Token usage of one response (`RealtimeResponseUsage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub input_token_details: Option<InputTokenDetails>,
    #[serde(default)]
    pub output_token_details: Option<OutputTokenDetails>,
}

/// `usage.input_token_details`. Cached tokens are a subset of the input tokens; their split by
/// modality is in `cached_tokens_details` (audio and text are priced differently when cached).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputTokenDetails {
    #[serde(default)]
    pub text_tokens: u64,
    #[serde(default)]
    pub audio_tokens: u64,
    #[serde(default)]
    pub image_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub cached_tokens_details: Option<CachedTokenDetails>,
}

/// `usage.input_token_details.cached_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedTokenDetails {
    #[serde(default)]
    pub text_tokens: u64,
    #[serde(default)]
    pub audio_tokens: u64,
    #[serde(default)]
    pub image_tokens: u64,
}

/// `usage.output_token_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTokenDetails {
    #[serde(default)]
    pub text_tokens: u64,
    #[serde(default)]
    pub audio_tokens: u64,
}

/// `usage` of `conversation.item.input_audio_transcription.completed`, billed at the
/// transcription model's prices: by tokens, or by audio duration (`whisper-1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptionUsage {
    Tokens {
        input_tokens: u64,
        output_tokens: u64,
        total_tokens: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_token_details: Option<TranscriptionTokenDetails>,
    },
    Duration {
        seconds: f64,
    },
}

/// `usage.input_token_details` of a token-billed transcription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionTokenDetails {
    #[serde(default)]
    pub audio_tokens: u64,
    #[serde(default)]
    pub text_tokens: u64,
}

/// The `part` of `response.content_part.added` / `.done`. Its `type` is `audio` or `text`
/// (the conversation item's own content says `output_audio` / `output_text`; `output_*` is
/// accepted here too, in case a server sends the item spelling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponsePart {
    #[serde(alias = "output_audio")]
    Audio {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    #[serde(alias = "output_text")]
    Text {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

/// `metadata` of a response: at most 16 pairs, keys up to 64 and values up to 512 characters.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub limit: u64,
    #[serde(default)]
    pub remaining: u64,
    #[serde(default)]
    pub reset_seconds: f64,
}

impl ServerEvent {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON text of this event (the server side of the protocol).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ga_and_beta_spellings() {
        let ga = r#"{"type":"response.output_audio.delta","event_id":"e1","response_id":"r1",
            "item_id":"i1","output_index":0,"content_index":0,"delta":"/w=="}"#;
        let beta = ga.replace("response.output_audio.delta", "response.audio.delta");
        assert!(matches!(
            ServerEvent::parse(ga).unwrap(),
            ServerEvent::OutputAudioDelta { .. }
        ));
        assert!(matches!(
            ServerEvent::parse(&beta).unwrap(),
            ServerEvent::OutputAudioDelta { .. }
        ));
        let created = r#"{"type":"conversation.item.created","item":{"type":"message","role":"user","content":[]}}"#;
        assert!(matches!(
            ServerEvent::parse(created).unwrap(),
            ServerEvent::ConversationItemAdded { .. }
        ));
    }

    #[test]
    fn content_parts_and_response_extras_round_trip() {
        let ev = ServerEvent::ContentPartAdded {
            event_id: "e".into(),
            response_id: "r".into(),
            item_id: "i".into(),
            output_index: 0,
            content_index: 0,
            part: Some(ResponsePart::Audio {
                transcript: Some(String::new()),
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["part"]["type"], "audio");
        assert_eq!(ServerEvent::parse(&ev.to_json()).unwrap(), ev);
        // Older captures without `part` still parse.
        let bare = r#"{"type":"response.content_part.done","response_id":"r","item_id":"i"}"#;
        assert!(matches!(
            ServerEvent::parse(bare).unwrap(),
            ServerEvent::ContentPartDone { part: None, .. }
        ));
        let d = r#"{"type":"response.done","response":{"id":"r","status":"completed",
            "conversation_id":"conv_1","metadata":{"turn":"1"}}}"#;
        let ServerEvent::ResponseDone { response, .. } = ServerEvent::parse(d).unwrap() else {
            panic!()
        };
        assert_eq!(response.conversation_id.as_deref(), Some("conv_1"));
        assert_eq!(
            response.metadata,
            Some(Metadata::from([("turn".into(), "1".into())]))
        );
    }

    #[test]
    fn unknown_events_do_not_fail() {
        assert_eq!(
            ServerEvent::parse(r#"{"type":"mcp_list_tools.in_progress","x":1}"#).unwrap(),
            ServerEvent::Unknown
        );
        assert!(ServerEvent::parse(r#"{"no":"type"}"#).is_err());
    }

    #[test]
    fn parses_error_and_response_done() {
        let e = r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error",
            "code":"session_expired","message":"Your session hit the maximum duration of 60 minutes.",
            "param":null,"event_id":null}}"#;
        let ServerEvent::Error { error, .. } = ServerEvent::parse(e).unwrap() else {
            panic!()
        };
        assert_eq!(error.code.as_deref(), Some("session_expired"));
        let d = r#"{"type":"response.done","event_id":"e","response":{"id":"r1","object":"realtime.response",
            "status":"completed","output":[{"type":"function_call","id":"i1","call_id":"c1","name":"f","arguments":"{}"}],
            "usage":{"total_tokens":10,"input_tokens":6,"output_tokens":4,
              "input_token_details":{"text_tokens":1,"audio_tokens":5,"cached_tokens":0},
              "output_token_details":{"text_tokens":1,"audio_tokens":3}}}}"#;
        let ServerEvent::ResponseDone { response, .. } = ServerEvent::parse(d).unwrap() else {
            panic!()
        };
        assert_eq!(
            response
                .usage
                .unwrap()
                .output_token_details
                .unwrap()
                .audio_tokens,
            3
        );
        assert!(matches!(response.output[0], Item::FunctionCall { .. }));
    }
}
