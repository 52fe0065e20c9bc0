//! Translation between Twilio's Media Streams JSON and the `switchboard.v1` frames on NATS.
//!
//! Pure functions, so the wire mapping is tested without sockets: inbound Twilio messages become
//! [`inbound_frame::Frame`]s (audio base64-decoded to raw mu-law), and outbound audio is cut into
//! Twilio-sized `media` messages.

use std::collections::HashMap;

use bytes::Bytes;
use switchboard_proto::{Dtmf, InboundAudio, MarkEcho, StreamStart, StreamStop, inbound_frame};
use switchboard_twilio::FRAME_BYTES;
use switchboard_twilio::media::{FrameError, InboundMedia, ServerMessage, Start};

/// The name of the stream-token `<Parameter>`; only the gateway interprets it.
pub const TOKEN_PARAMETER: &str = "token";

/// Largest audio payload per outbound `media` message: one second of mu-law, a whole number of
/// 20 ms frames. Twilio documents no limit; this keeps each message well inside any sane one.
pub const MAX_AUDIO_CHUNK: usize = 50 * FRAME_BYTES;

/// The `start` frame for the worker: Twilio's start minus our token, plus where and when.
pub fn stream_start(
    stream_sid: &str,
    start: &Start,
    gateway_id: &str,
    started_at_ms: i64,
) -> inbound_frame::Frame {
    let custom_parameters: HashMap<String, String> = start
        .custom_parameters
        .iter()
        .filter(|(k, _)| k.as_str() != TOKEN_PARAMETER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    inbound_frame::Frame::Start(StreamStart {
        stream_sid: stream_sid.to_owned(),
        call_sid: start.call_sid.clone(),
        account_sid: start.account_sid.clone(),
        custom_parameters,
        gateway_id: gateway_id.to_owned(),
        started_at_ms,
    })
}

/// Caller audio, decoded; a bad payload or counter makes the whole frame malformed.
pub fn audio(media: &InboundMedia) -> Result<inbound_frame::Frame, FrameError> {
    Ok(inbound_frame::Frame::Audio(InboundAudio {
        payload: Bytes::from(media.audio()?),
        timestamp_ms: media.timestamp_ms()?,
        chunk: media.chunk_number()?,
    }))
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
pub fn stop(reason: &str) -> inbound_frame::Frame {
    inbound_frame::Frame::Stop(StreamStop {
        reason: reason.to_owned(),
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
                ("agent".to_owned(), "front-desk".to_owned()),
            ]),
            media_format: Default::default(),
        };
        let inbound_frame::Frame::Start(s) = stream_start("MZ1", &start, "gw-1", 42) else {
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
