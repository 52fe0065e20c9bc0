//! Events a Realtime client sends.

use serde::{Deserialize, Serialize};

use crate::item::Item;
use crate::session::{FunctionTool, Session};

/// A client event. Every variant accepts an optional `event_id`, echoed in `error` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(
    clippy::large_enum_variant,
    reason = "one event per message; boxing the session would only complicate construction"
)]
pub enum ClientEvent {
    /// Change the session configuration.
    #[serde(rename = "session.update")]
    SessionUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        session: Session,
    },
    /// Append caller audio (base64 in the input format).
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        audio: String,
    },
    /// Turn the buffer into a user item (manual turns only; never under server VAD).
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Drop the buffered audio.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Add an item to the conversation.
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        item: Item,
    },
    /// Cut an assistant audio item to what the caller heard (barge-in).
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        item_id: String,
        content_index: u32,
        audio_end_ms: u32,
    },
    /// Remove an item from the conversation (e.g. an assistant item the caller never heard).
    #[serde(rename = "conversation.item.delete")]
    ConversationItemDelete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        item_id: String,
    },
    /// Start a response.
    #[serde(rename = "response.create")]
    ResponseCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<ResponseParams>,
    },
    /// Cancel the active response.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
}

/// Per-response overrides of `response.create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<FunctionTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    /// `auto` or `none` (an out-of-band response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Echoed in the response's `response.created` / `response.done`: how a client tells its
    /// own responses from those the server starts by itself (server VAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<crate::server::Metadata>,
}

impl ClientEvent {
    /// The JSON text of this event.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a client event (the server side of the protocol).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// `input_audio_buffer.append` with base64 audio.
    pub fn append(audio_b64: String) -> Self {
        Self::InputAudioBufferAppend {
            event_id: None,
            audio: audio_b64,
        }
    }

    /// `response.create` with no overrides.
    pub fn response_create() -> Self {
        Self::ResponseCreate {
            event_id: None,
            response: None,
        }
    }

    /// `conversation.item.create` appending `item`.
    pub fn item_create(item: Item) -> Self {
        Self::ConversationItemCreate {
            event_id: None,
            previous_item_id: None,
            item,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::*;

    #[test]
    fn session_update_has_the_ga_shape() {
        let ev = ClientEvent::SessionUpdate {
            event_id: None,
            session: Session {
                kind: "realtime".into(),
                model: Some("gpt-realtime".into()),
                output_modalities: Some(vec!["audio".into()]),
                instructions: Some("be nice".into()),
                audio: Some(AudioConfig {
                    input: Some(AudioInput {
                        format: Some(AudioFormat::pcmu()),
                        transcription: None,
                        noise_reduction: None,
                        turn_detection: Some(TurnDetection::ServerVad {
                            threshold: Some(0.5),
                            prefix_padding_ms: Some(300),
                            silence_duration_ms: Some(500),
                            idle_timeout_ms: None,
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
                    serde_json::json!({"type":"object"}),
                )]),
                ..Default::default()
            },
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["type"], "session.update");
        assert_eq!(v["session"]["type"], "realtime");
        assert_eq!(
            v["session"]["audio"]["input"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(
            v["session"]["audio"]["input"]["turn_detection"]["type"],
            "server_vad"
        );
        assert_eq!(v["session"]["audio"]["output"]["voice"], "marin");
        assert_eq!(v["session"]["tools"][0]["type"], "function");
        assert_eq!(v["session"]["tools"][0]["name"], "lookup");
        // Beta-only fields never appear.
        assert!(v["session"].get("voice").is_none());
        assert!(v["session"].get("input_audio_format").is_none());
        assert_eq!(ClientEvent::parse(&ev.to_json()).unwrap(), ev);
    }

    #[test]
    fn truncate_and_tool_output_shapes() {
        let t = ClientEvent::ConversationItemTruncate {
            event_id: None,
            item_id: "item_1".into(),
            content_index: 0,
            audio_end_ms: 1500,
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"type":"conversation.item.truncate","item_id":"item_1",
                               "content_index":0,"audio_end_ms":1500})
        );
        let d = ClientEvent::ConversationItemDelete {
            event_id: None,
            item_id: "item_1".into(),
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"type":"conversation.item.delete","item_id":"item_1"})
        );
        let o = ClientEvent::item_create(Item::function_output("call_1", "{\"ok\":true}"));
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"type":"conversation.item.create",
                "item":{"type":"function_call_output","call_id":"call_1","output":"{\"ok\":true}"}})
        );
    }
}
