//! Media Streams messages (bidirectional `<Connect><Stream>`).
//!
//! Every message is a JSON text frame. Counters (`sequenceNumber`, `chunk`, `timestamp`) are JSON
//! strings holding numbers; Twilio's documentation and traffic agree on that, so we parse and
//! write them as strings.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// A message Twilio sends on the media socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TwilioMessage {
    /// First frame of every stream.
    Connected {
        #[serde(default)]
        protocol: String,
        #[serde(default)]
        version: String,
    },
    /// The stream started; carries the call and our `<Parameter>`s.
    Start {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: String,
        #[serde(rename = "streamSid")]
        stream_sid: String,
        start: Start,
    },
    /// Caller audio.
    Media {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: String,
        #[serde(rename = "streamSid")]
        stream_sid: String,
        media: InboundMedia,
    },
    /// A key press.
    Dtmf {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: String,
        #[serde(rename = "streamSid")]
        stream_sid: String,
        dtmf: DtmfDigit,
    },
    /// Echo of a mark we sent: the audio before it has played.
    Mark {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: String,
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: MarkName,
    },
    /// The stream ended.
    Stop {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: String,
        #[serde(rename = "streamSid")]
        stream_sid: String,
        #[serde(default)]
        stop: StopInfo,
    },
}

/// The body of a `start` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    #[serde(rename = "streamSid")]
    pub stream_sid: String,
    #[serde(rename = "accountSid")]
    pub account_sid: String,
    #[serde(rename = "callSid")]
    pub call_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    #[serde(rename = "customParameters", default)]
    pub custom_parameters: HashMap<String, String>,
    #[serde(rename = "mediaFormat", default)]
    pub media_format: MediaFormat,
}

/// The audio format of a stream; always mu-law 8 kHz mono for Twilio voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaFormat {
    pub encoding: String,
    #[serde(rename = "sampleRate")]
    pub sample_rate: u32,
    pub channels: u32,
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// The body of an inbound `media` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMedia {
    #[serde(default)]
    pub track: String,
    #[serde(default)]
    pub chunk: String,
    #[serde(default)]
    pub timestamp: String,
    /// Base64 mu-law.
    pub payload: String,
}

/// The body of a `dtmf` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfDigit {
    #[serde(default)]
    pub track: String,
    pub digit: String,
}

/// A mark's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkName {
    pub name: String,
}

/// The body of a `stop` message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopInfo {
    #[serde(rename = "accountSid", default)]
    pub account_sid: String,
    #[serde(rename = "callSid", default)]
    pub call_sid: String,
}

/// A message we send to Twilio on the media socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ServerMessage {
    /// Audio to play.
    Media {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        media: OutboundMedia,
    },
    /// A mark after the audio sent so far.
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: MarkName,
    },
    /// Drop buffered audio.
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

/// The body of an outbound `media` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMedia {
    /// Base64 mu-law; never empty.
    pub payload: String,
}

/// Why a frame from Twilio was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON text frame of a known event, or fields are missing.
    #[error("malformed media stream message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The audio payload is not base64.
    #[error("media payload is not valid base64")]
    BadPayload,
    /// A counter is not a decimal number.
    #[error("`{0}` is not a number")]
    BadNumber(String),
}

impl TwilioMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The stream this message belongs to (`connected` has none).
    pub fn stream_sid(&self) -> Option<&str> {
        match self {
            Self::Connected { .. } => None,
            Self::Start { stream_sid, .. }
            | Self::Media { stream_sid, .. }
            | Self::Dtmf { stream_sid, .. }
            | Self::Mark { stream_sid, .. }
            | Self::Stop { stream_sid, .. } => Some(stream_sid),
        }
    }
}

impl InboundMedia {
    /// The decoded mu-law bytes.
    pub fn audio(&self) -> Result<Vec<u8>, FrameError> {
        B64.decode(&self.payload)
            .map_err(|_| FrameError::BadPayload)
    }

    /// The media timestamp in milliseconds since the stream started.
    pub fn timestamp_ms(&self) -> Result<u32, FrameError> {
        parse_counter(&self.timestamp)
    }

    /// The chunk counter.
    pub fn chunk_number(&self) -> Result<u32, FrameError> {
        parse_counter(&self.chunk)
    }
}

/// Parses a string counter; an empty string counts as 0.
fn parse_counter(s: &str) -> Result<u32, FrameError> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| FrameError::BadNumber(s.to_owned()))
}

impl ServerMessage {
    /// A `media` message carrying `audio` (raw mu-law).
    pub fn media(stream_sid: &str, audio: &[u8]) -> Self {
        Self::Media {
            stream_sid: stream_sid.to_owned(),
            media: OutboundMedia {
                payload: B64.encode(audio),
            },
        }
    }

    /// A `mark` message.
    pub fn mark(stream_sid: &str, name: &str) -> Self {
        Self::Mark {
            stream_sid: stream_sid.to_owned(),
            mark: MarkName {
                name: name.to_owned(),
            },
        }
    }

    /// A `clear` message.
    pub fn clear(stream_sid: &str) -> Self {
        Self::Clear {
            stream_sid: stream_sid.to_owned(),
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one text frame (used by simulators and tests).
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The streamSid this message addresses.
    pub fn stream_sid(&self) -> &str {
        match self {
            Self::Media { stream_sid, .. }
            | Self::Mark { stream_sid, .. }
            | Self::Clear { stream_sid } => stream_sid,
        }
    }
}

/// Builders for the messages Twilio sends, used by simulators.
impl TwilioMessage {
    /// `connected`.
    pub fn connected() -> Self {
        Self::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        }
    }

    /// A `media` frame with raw mu-law `audio`.
    pub fn media(seq: u64, stream_sid: &str, chunk: u32, timestamp_ms: u32, audio: &[u8]) -> Self {
        Self::Media {
            sequence_number: seq.to_string(),
            stream_sid: stream_sid.to_owned(),
            media: InboundMedia {
                track: "inbound".into(),
                chunk: chunk.to_string(),
                timestamp: timestamp_ms.to_string(),
                payload: B64.encode(audio),
            },
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_frames() {
        let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1",
            "start":{"streamSid":"MZ1","accountSid":"AC1","callSid":"CA1","tracks":["inbound"],
            "customParameters":{"k":"v"},
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        match TwilioMessage::parse(start).unwrap() {
            TwilioMessage::Start { start, .. } => {
                assert_eq!(start.call_sid, "CA1");
                assert_eq!(start.custom_parameters["k"], "v");
            }
            other => panic!("{other:?}"),
        }
        let media = r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1",
            "media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/w=="}}"#;
        let TwilioMessage::Media { media, .. } = TwilioMessage::parse(media).unwrap() else {
            panic!()
        };
        assert_eq!(media.audio().unwrap(), vec![0xff]);
        assert_eq!(media.timestamp_ms().unwrap(), 5);
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5",
            "dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert!(matches!(
            TwilioMessage::parse(dtmf).unwrap(),
            TwilioMessage::Dtmf { .. }
        ));
        let stop = r#"{"event":"stop","sequenceNumber":"9","streamSid":"MZ1",
            "stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert!(matches!(
            TwilioMessage::parse(stop).unwrap(),
            TwilioMessage::Stop { .. }
        ));
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        assert_eq!(TwilioMessage::parse(connected).unwrap().stream_sid(), None);
    }

    #[test]
    fn rejects_malformed_frames_without_panicking() {
        for bad in [
            "",
            "{",
            "null",
            r#"{"event":"nope"}"#,
            r#"{"event":"media","streamSid":"MZ1"}"#,
            r#"{"event":"start","streamSid":"MZ1","start":{}}"#,
            "\u{0}\u{1}",
        ] {
            assert!(TwilioMessage::parse(bad).is_err(), "{bad:?} parsed");
        }
        let media = InboundMedia {
            track: String::new(),
            chunk: "x".into(),
            timestamp: "-1".into(),
            payload: "***".into(),
        };
        assert!(media.audio().is_err());
        assert!(media.timestamp_ms().is_err());
        assert!(media.chunk_number().is_err());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&ServerMessage::media("MZ1", &[0xff; 2]).to_json()).unwrap();
        assert_eq!(v["event"], "media");
        assert_eq!(v["streamSid"], "MZ1");
        assert_eq!(v["media"]["payload"], "//8=");
        let v: serde_json::Value =
            serde_json::from_str(&ServerMessage::mark("MZ1", "m1").to_json()).unwrap();
        assert_eq!(v["mark"]["name"], "m1");
        let v: serde_json::Value =
            serde_json::from_str(&ServerMessage::clear("MZ1").to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"event":"clear","streamSid":"MZ1"}));
    }
}
