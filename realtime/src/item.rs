//! Conversation items and content parts.

use serde::{Deserialize, Serialize};

/// A conversation item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A message from the user, the assistant or the system.
    Message {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `user`, `assistant` or `system`.
        role: String,
        #[serde(default)]
        content: Vec<ContentPart>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// The model calls a function.
    FunctionCall {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        call_id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        arguments: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// The result of a function call; `output` is a string (JSON text).
    FunctionCallOutput {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        call_id: String,
        output: String,
    },
    /// Any item type this crate does not model (MCP calls, ...).
    #[serde(other)]
    Other,
}

/// A content part of a message item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// User or system text.
    InputText { text: String },
    /// User audio (base64) and/or its transcript.
    InputAudio {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// Assistant text (GA).
    OutputText { text: String },
    /// Assistant audio; audio bytes are left out of item events.
    OutputAudio {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// Assistant text (beta spelling).
    Text { text: String },
    /// Assistant audio (beta spelling).
    Audio {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// Any other part.
    #[serde(other)]
    Other,
}

impl Item {
    /// A user message with text (how DTMF digits and replayed caller turns reach the model).
    pub fn user_text(text: &str) -> Self {
        Self::Message {
            id: None,
            role: "user".into(),
            content: vec![ContentPart::InputText { text: text.into() }],
            status: None,
        }
    }

    /// An assistant message with text (replay of what the agent said earlier).
    pub fn assistant_text(text: &str) -> Self {
        Self::Message {
            id: None,
            role: "assistant".into(),
            content: vec![ContentPart::OutputText { text: text.into() }],
            status: None,
        }
    }

    /// A system message.
    pub fn system_text(text: &str) -> Self {
        Self::Message {
            id: None,
            role: "system".into(),
            content: vec![ContentPart::InputText { text: text.into() }],
            status: None,
        }
    }

    /// A function call output.
    pub fn function_output(call_id: &str, output: &str) -> Self {
        Self::FunctionCallOutput {
            id: None,
            call_id: call_id.into(),
            output: output.into(),
        }
    }

    /// The item id, if the item has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Message { id, .. }
            | Self::FunctionCall { id, .. }
            | Self::FunctionCallOutput { id, .. } => id.as_deref(),
            Self::Other => None,
        }
    }

    /// The text of a message item: its text parts and transcripts, joined.
    pub fn text(&self) -> String {
        let Self::Message { content, .. } = self else {
            return String::new();
        };
        content
            .iter()
            .filter_map(|p| match p {
                ContentPart::InputText { text }
                | ContentPart::OutputText { text }
                | ContentPart::Text { text } => Some(text.as_str()),
                ContentPart::InputAudio { transcript, .. }
                | ContentPart::OutputAudio { transcript }
                | ContentPart::Audio { transcript } => transcript.as_deref(),
                ContentPart::Other => None,
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
