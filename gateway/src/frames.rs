//! Translation between Twilio's Media Streams JSON and the `switchboard.v1` frames on NATS.
//!
//! Pure functions, so the wire mapping is tested without sockets: inbound Twilio messages become
//! [`inbound_frame::Frame`]s (audio base64-decoded to raw mu-law), and outbound audio is cut into
//! Twilio-sized `media` messages.
//!
//! Audio is 50 frames a second per stream each way, so its two paths avoid the general
//! message types: [`parse_inbound`] reads a `media` frame borrowing from the socket's text
//! (no intermediate JSON tree, no owned strings), and [`MediaWriter`] renders outbound `media`
//! JSON straight from the audio bytes (the stream's JSON prefix is built once). Everything
//! else (start, marks, dtmf, stop, clear) is rare and goes through
//! [`switchboard_twilio::media`].

use std::borrow::Cow;
use std::collections::HashMap;

use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use switchboard_proto::event::StopReason;
use switchboard_proto::{Dtmf, InboundAudio, MarkEcho, StreamStart, StreamStop, inbound_frame};
use switchboard_twilio::FRAME_BYTES;
use switchboard_twilio::media::{FrameError, InboundMedia, ServerMessage, Start, TwilioMessage};

use crate::stream_token::StreamGrant;

/// The name of the stream-token `<Parameter>`; only the gateway interprets it.
pub const TOKEN_PARAMETER: &str = "token";

/// The `<Parameter>` carrying the W3C `traceparent` of the call's `webhook` span, so the
/// gateway replica that takes the media socket continues the call's trace. Only the gateway
/// interprets it (the worker's trace context comes with the offer).
pub const TRACEPARENT_PARAMETER: &str = "traceparent";

/// Largest audio payload per outbound `media` message: one second of mu-law, a whole number of
/// 20 ms frames. Twilio documents no limit; this keeps each message well inside any sane one.
pub const MAX_AUDIO_CHUNK: usize = 50 * FRAME_BYTES;

/// The `start` frame for the worker: Twilio's start minus our token and trace parameter, plus
/// where and when.
pub fn stream_start(
    stream_sid: &str,
    start: &Start,
    gateway_id: &str,
    grant: StreamGrant,
    started_at_ms: i64,
) -> inbound_frame::Frame {
    inbound_frame::Frame::Start(stream_start_of(
        stream_sid,
        start,
        gateway_id,
        grant,
        started_at_ms,
    ))
}

/// The [`StreamStart`] of [`stream_start`] (kept by the stream, which sends it again, resumed,
/// to each new owner).
pub fn stream_start_of(
    stream_sid: &str,
    start: &Start,
    gateway_id: &str,
    grant: StreamGrant,
    started_at_ms: i64,
) -> StreamStart {
    let custom_parameters: HashMap<String, String> = start
        .custom_parameters
        .iter()
        .filter(|(k, _)| k.as_str() != TOKEN_PARAMETER && k.as_str() != TRACEPARENT_PARAMETER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    StreamStart {
        stream_sid: stream_sid.to_owned(),
        call_sid: start.call_sid.clone(),
        account_sid: start.account_sid.clone(),
        custom_parameters,
        gateway_id: gateway_id.to_owned(),
        started_at_ms,
        epoch: grant.epoch,
        resumed: grant.resumed(),
        attach: grant.stream_number(),
        // Set by the stream once it knows whether its agent records.
        recorded: false,
    }
}

/// Caller audio, decoded; a bad payload or counter makes the whole frame malformed.
pub fn audio(media: &InboundMedia) -> Result<inbound_frame::Frame, FrameError> {
    Ok(inbound_frame::Frame::Audio(InboundAudio {
        payload: Bytes::from(media.audio()?),
        timestamp_ms: media.timestamp_ms()?,
        chunk: media.chunk_number()?,
        replayed: false,
    }))
}

/// An inbound text frame, read with the fast path for audio.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// A `media` frame: its streamSid and the audio frame for the worker (or why the audio is
    /// malformed).
    Media {
        stream_sid: Cow<'a, str>,
        frame: Result<inbound_frame::Frame, FrameError>,
    },
    /// Any other message, fully parsed.
    Other(TwilioMessage),
}

/// The fields of a `media` message, borrowed from the text where it has no escapes.
#[derive(Deserialize)]
struct MediaPeek<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    media: Option<MediaBody<'a>>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow, default)]
    chunk: Cow<'a, str>,
    #[serde(borrow, default)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

/// Parses one text frame from Twilio. A well-formed `media` frame is read in one pass without
/// owned copies; anything else (other events, and malformed frames, so errors read the same)
/// goes through [`TwilioMessage::parse`]. Accepts everything [`TwilioMessage::parse`] accepts,
/// with the same audio; it also passes the audio of a `media` frame whose unused fields
/// (`track`, `sequenceNumber`) have the wrong type, rather than dropping it over them (the
/// property tests in tests/bad_input.rs hold it to this).
pub fn parse_inbound(text: &str) -> Result<Inbound<'_>, FrameError> {
    if let Ok(MediaPeek {
        event,
        stream_sid: Some(stream_sid),
        media: Some(media),
    }) = serde_json::from_str::<MediaPeek<'_>>(text)
        && event == "media"
    {
        let frame = media_audio(&media);
        return Ok(Inbound::Media { stream_sid, frame });
    }
    TwilioMessage::parse(text).map(Inbound::Other)
}

fn media_audio(media: &MediaBody<'_>) -> Result<inbound_frame::Frame, FrameError> {
    let payload = B64
        .decode(media.payload.as_bytes())
        .map_err(|_| FrameError::BadPayload)?;
    Ok(inbound_frame::Frame::Audio(InboundAudio {
        payload: Bytes::from(payload),
        timestamp_ms: counter(&media.timestamp)?,
        chunk: counter(&media.chunk)?,
        replayed: false,
    }))
}

/// A string counter as [`InboundMedia`] reads it (empty counts as 0).
fn counter(s: &str) -> Result<u32, FrameError> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| FrameError::BadNumber(s.to_owned()))
}

/// Renders outbound `media` messages for one stream: the same JSON as
/// [`ServerMessage::media`] + `to_json`, without building the message first.
#[derive(Debug, Clone)]
pub struct MediaWriter {
    /// `{"event":"media","streamSid":"MZ…","media":{"payload":"`
    prefix: String,
}

const MEDIA_SUFFIX: &str = "\"}}";

impl MediaWriter {
    pub fn new(stream_sid: &str) -> Self {
        // A streamSid is plain ASCII, but escape it properly all the same.
        let sid = serde_json::to_string(stream_sid).unwrap_or_else(|_| "\"\"".to_owned());
        Self {
            prefix: format!(r#"{{"event":"media","streamSid":{sid},"media":{{"payload":""#),
        }
    }

    /// The text of one `media` message carrying `audio` (raw mu-law, not empty).
    pub fn render(&self, audio: &[u8]) -> Utf8Bytes {
        let mut text = String::with_capacity(
            self.prefix.len() + audio.len().div_ceil(3) * 4 + MEDIA_SUFFIX.len(),
        );
        text.push_str(&self.prefix);
        B64.encode_string(audio, &mut text);
        text.push_str(MEDIA_SUFFIX);
        Utf8Bytes::from(text)
    }

    /// [`Self::render`] for every chunk of `audio` (see [`audio_messages`]).
    pub fn render_chunks<'a>(&'a self, audio: &'a [u8]) -> impl Iterator<Item = Utf8Bytes> + 'a {
        audio
            .chunks(MAX_AUDIO_CHUNK)
            .filter(|c| !c.is_empty())
            .map(|c| self.render(c))
    }
}

/// A key press.
pub fn dtmf(digit: &str) -> inbound_frame::Frame {
    inbound_frame::Frame::Dtmf(Dtmf {
        digit: digit.to_owned(),
    })
}

/// Twilio echoed a mark.
pub fn mark_echo(name: &str) -> inbound_frame::Frame {
    inbound_frame::Frame::Mark(MarkEcho {
        name: name.to_owned(),
    })
}

/// The end of the stream, with why (see `StreamStop.reason`).
pub fn stop(reason: StopReason) -> inbound_frame::Frame {
    inbound_frame::Frame::Stop(StreamStop {
        reason: reason.as_str().to_owned(),
    })
}

/// The metric label of an inbound frame.
pub fn inbound_kind(frame: &inbound_frame::Frame) -> &'static str {
    match frame {
        inbound_frame::Frame::Start(_) => "start",
        inbound_frame::Frame::Audio(_) => "media",
        inbound_frame::Frame::Dtmf(_) => "dtmf",
        inbound_frame::Frame::Mark(_) => "mark",
        inbound_frame::Frame::Stop(_) => "stop",
        inbound_frame::Frame::TransferResult(_) => "transfer_result",
        inbound_frame::Frame::Amd(_) => "amd",
        inbound_frame::Frame::Recorded(_) => "recorded",
    }
}

/// Twilio `media` messages for `audio`: chunks of at most [`MAX_AUDIO_CHUNK`] bytes (whole 20 ms
/// frames except possibly the last); nothing at all for empty audio, because Twilio rejects
/// empty payloads.
pub fn audio_messages(stream_sid: &str, audio: &[u8]) -> Vec<ServerMessage> {
    audio
        .chunks(MAX_AUDIO_CHUNK)
        .filter(|c| !c.is_empty())
        .map(|c| ServerMessage::media(stream_sid, c))
        .collect()
}

/// The metric label of an outbound message.
pub fn outbound_kind(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Media { .. } => "media",
        ServerMessage::Mark { .. } => "mark",
        ServerMessage::Clear { .. } => "clear",
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use switchboard_twilio::media::TwilioMessage;

    use super::*;

    #[test]
    fn start_drops_the_token_and_keeps_other_parameters() {
        let start = Start {
            stream_sid: "MZ1".into(),
            account_sid: "AC1".into(),
            call_sid: "CA1".into(),
            tracks: vec!["inbound".into()],
            custom_parameters: HashMap::from([
                ("token".to_owned(), "secret".to_owned()),
                (
                    "traceparent".to_owned(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                ),
                ("agent".to_owned(), "front-desk".to_owned()),
            ]),
            media_format: Default::default(),
        };
        let inbound_frame::Frame::Start(s) =
            stream_start("MZ1", &start, "gw-1", StreamGrant::FIRST, 42)
        else {
            panic!()
        };
        assert_eq!(s.call_sid, "CA1");
        assert_eq!(s.account_sid, "AC1");
        assert_eq!(s.stream_sid, "MZ1");
        assert_eq!(s.gateway_id, "gw-1");
        assert_eq!(s.started_at_ms, 42);
        assert_eq!(
            s.custom_parameters,
            HashMap::from([("agent".to_owned(), "front-desk".to_owned())])
        );
        assert_eq!((s.resumed, s.attach, s.epoch), (false, 1, 0));
        // A re-attach token's stream: the call's third stream, under owner epoch 2.
        let grant = StreamGrant {
            attach: 2,
            epoch: 2,
        };
        let inbound_frame::Frame::Start(s) = stream_start("MZ2", &start, "gw-2", grant, 43) else {
            panic!()
        };
        assert_eq!((s.resumed, s.attach, s.epoch), (true, 3, 2));
    }

    #[test]
    fn media_is_decoded_to_raw_bytes() {
        let TwilioMessage::Media { media, .. } = TwilioMessage::media(3, "MZ1", 2, 40, &[1, 2, 3])
        else {
            panic!()
        };
        let inbound_frame::Frame::Audio(a) = audio(&media).unwrap() else {
            panic!()
        };
        assert_eq!(&a.payload[..], &[1, 2, 3]);
        assert_eq!(a.timestamp_ms, 40);
        assert_eq!(a.chunk, 2);

        let mut bad = media.clone();
        bad.payload = "***".into();
        assert!(audio(&bad).is_err());
        let mut bad = media;
        bad.timestamp = "soon".into();
        assert!(audio(&bad).is_err());
    }

    #[test]
    fn the_media_fast_path_agrees_with_the_full_parser() {
        let media = TwilioMessage::media(3, "MZ1", 2, 40, &[1, 2, 3]).to_json();
        let Ok(Inbound::Media { stream_sid, frame }) = parse_inbound(&media) else {
            panic!("media not on the fast path")
        };
        assert_eq!(stream_sid, "MZ1");
        let TwilioMessage::Media { media: full, .. } = TwilioMessage::parse(&media).unwrap() else {
            panic!()
        };
        assert_eq!(frame.unwrap(), audio(&full).unwrap());

        // Escaped text (legal JSON) still works, it is just not borrowed.
        let escaped = r#"{"event":"media","streamSid":"M\u005a1","media":{"payload":"\/w=="}}"#;
        let Ok(Inbound::Media { stream_sid, frame }) = parse_inbound(escaped) else {
            panic!()
        };
        assert_eq!(stream_sid, "MZ1");
        let Ok(inbound_frame::Frame::Audio(a)) = frame else {
            panic!()
        };
        assert_eq!(&a.payload[..], &[0xff]);

        // Bad audio or counters are reported on the media frame.
        for bad in [
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w==","chunk":"x"}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w==","timestamp":"-1"}}"#,
        ] {
            assert!(
                matches!(parse_inbound(bad), Ok(Inbound::Media { frame: Err(_), .. })),
                "{bad}"
            );
        }
        // What the full parser refuses is refused.
        for bad in [
            "",
            "{",
            r#"{"event":"media","streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"payload":"/w=="}}"#,
            r#"{"event":"nope","streamSid":"MZ1","media":{"payload":"/w=="}}"#,
        ] {
            assert!(parse_inbound(bad).is_err(), "{bad}");
        }
        // Other events take the full parser.
        let stop = TwilioMessage::Stop {
            sequence_number: "9".into(),
            stream_sid: "MZ1".into(),
            stop: Default::default(),
        };
        assert!(matches!(
            parse_inbound(&stop.to_json()),
            Ok(Inbound::Other(TwilioMessage::Stop { .. }))
        ));
    }

    #[test]
    fn rendered_media_is_what_the_message_type_writes() {
        for sid in ["MZ1", "MZ\"odd\\"] {
            let writer = MediaWriter::new(sid);
            for len in [1usize, 2, 3, 160, 8000] {
                let audio: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let text = writer.render(&audio);
                assert_eq!(
                    ServerMessage::parse(&text).unwrap(),
                    ServerMessage::media(sid, &audio)
                );
                assert_eq!(text.as_str(), ServerMessage::media(sid, &audio).to_json());
            }
        }
        let writer = MediaWriter::new("MZ1");
        let texts: Vec<_> = writer.render_chunks(&[0xff; 8160]).collect();
        let messages = audio_messages("MZ1", &[0xff; 8160]);
        assert_eq!(texts.len(), messages.len());
        for (text, msg) in texts.iter().zip(&messages) {
            assert_eq!(text.as_str(), msg.to_json());
        }
    }

    #[test]
    fn outbound_audio_is_chunked_in_whole_frames() {
        let sizes = |n: usize| -> Vec<usize> {
            audio_messages("MZ1", &vec![0xff; n])
                .iter()
                .map(|m| match m {
                    ServerMessage::Media { media, stream_sid } => {
                        assert_eq!(stream_sid, "MZ1");
                        base64::engine::general_purpose::STANDARD
                            .decode(&media.payload)
                            .unwrap()
                            .len()
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(160), vec![160]);
        assert_eq!(sizes(800), vec![800]);
        assert_eq!(sizes(8000), vec![8000]);
        assert_eq!(sizes(8160), vec![8000, 160]);
        assert_eq!(sizes(20_000), vec![8000, 8000, 4000]);
        assert_eq!(MAX_AUDIO_CHUNK % FRAME_BYTES, 0);
    }
}
