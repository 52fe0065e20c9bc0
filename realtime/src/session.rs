//! Session configuration (`session.update`, `session.created`, `session.updated`).

use serde::{Deserialize, Serialize};

/// A session configuration. In `session.update` only the fields present are changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Always `realtime` for a voice session (required by the GA interface).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<FunctionTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// An integer 1-4096 or `"inf"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<serde_json::Value>,
    /// What the server drops when the conversation outgrows the context (or a token limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    /// Server copies only: the session id (`sess_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Server copies only: `realtime.session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Server copies only: Unix seconds when the session expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// `session.audio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AudioInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// `session.audio.input`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<Transcription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_reduction: Option<NoiseReduction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
}

/// `session.audio.output`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

/// An audio format: `audio/pcmu` (G.711 mu-law, what Twilio uses), `audio/pcma`, or `audio/pcm`
/// with `rate: 24000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
}

/// `audio/pcmu`: G.711 mu-law, what Twilio streams.
pub const PCMU: &str = "audio/pcmu";
/// `audio/pcm`: 16-bit PCM at 24 kHz, a session's default when nothing else is set.
pub const PCM: &str = "audio/pcm";
/// `audio/pcma`: G.711 A-law.
pub const PCMA: &str = "audio/pcma";
/// The only rate `audio/pcm` supports.
pub const PCM_RATE: u32 = 24_000;

impl AudioFormat {
    /// G.711 mu-law, 8 kHz.
    pub fn pcmu() -> Self {
        Self {
            kind: PCMU.into(),
            rate: None,
        }
    }

    /// 16-bit PCM at 24 kHz (the server's default format).
    pub fn pcm() -> Self {
        Self {
            kind: PCM.into(),
            rate: Some(PCM_RATE),
        }
    }

    /// Whether this is G.711 mu-law.
    pub fn is_pcmu(&self) -> bool {
        self.kind == PCMU
    }
}

/// `session.truncation`: `"auto"`, `"disabled"`, or a retention ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Truncation {
    /// `auto` or `disabled`.
    Mode(String),
    /// Drop old items until `retention_ratio` of the limit is used, whenever the conversation
    /// after the instructions exceeds `token_limits.post_instructions` (or the model's window).
    RetentionRatio(RetentionRatio),
}

/// `{"type": "retention_ratio", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionRatio {
    /// Always `retention_ratio`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 0.0-1.0.
    pub retention_ratio: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_limits: Option<TokenLimits>,
}

/// `truncation.token_limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// Tokens allowed after the instructions (and tool definitions) before truncating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_instructions: Option<u64>,
}

impl Truncation {
    /// A retention-ratio truncation.
    pub fn retention_ratio(ratio: f64, post_instructions: Option<u64>) -> Self {
        Self::RetentionRatio(RetentionRatio {
            kind: "retention_ratio".into(),
            retention_ratio: ratio,
            token_limits: post_instructions.map(|p| TokenLimits {
                post_instructions: Some(p),
            }),
        })
    }
}

/// `session.audio.input.transcription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `session.audio.input.noise_reduction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseReduction {
    /// `near_field` (close-talking: a handset) or `far_field` (a speakerphone).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The values of `noise_reduction.type`.
pub const NOISE_REDUCTION_TYPES: [&str; 2] = ["near_field", "far_field"];
/// The values of `semantic_vad.eagerness`.
pub const EAGERNESS: [&str; 4] = ["low", "medium", "high", "auto"];
/// The built-in voices (a custom voice is `{"id": "voice_..."}`, which this crate does not send).
pub const VOICES: [&str; 10] = [
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
];
/// The transcription models of the GA `AudioTranscription.model` enum.
pub const TRANSCRIPTION_MODELS: [&str; 8] = [
    "whisper-1",
    "gpt-transcribe",
    "gpt-live-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe",
    "gpt-4o-transcribe-diarize",
    "gpt-realtime-whisper",
];

/// `session.audio.input.turn_detection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// Voice activity detection on audio energy.
    ServerVad {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_padding_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silence_duration_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_timeout_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
    /// A model decides when the caller finished.
    SemanticVad {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eagerness: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
}

/// A function the model may call. The GA shape is flat (no `function: {}` wrapper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

impl FunctionTool {
    /// A function tool.
    pub fn new(name: &str, description: &str, parameters: serde_json::Value) -> Self {
        Self {
            kind: "function".into(),
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}
