//! Property tests: whatever Twilio (or anyone holding a socket) sends, the frame parser and the
//! gateway's frame mapping answer with a value or an error, never a panic.

use std::collections::HashMap;

use gateway::frames;
use proptest::prelude::*;
use serde_json::Value;
use switchboard_proto::{Message as _, OutboundFrame, inbound_frame};
use switchboard_twilio::FRAME_BYTES;
use switchboard_twilio::media::{Start, TwilioMessage};

const STREAM: &str = "MZ00000000000000000000000000000000";

/// Valid frames of every kind Twilio sends.
fn valid_frames() -> Vec<String> {
    let start = TwilioMessage::Start {
        sequence_number: "1".into(),
        stream_sid: STREAM.into(),
        start: Start {
            stream_sid: STREAM.into(),
            account_sid: "AC1".into(),
            call_sid: "CA1".into(),
            tracks: vec!["inbound".into()],
            custom_parameters: HashMap::from([("token".to_owned(), "t".to_owned())]),
            media_format: Default::default(),
        },
    };
    vec![
        TwilioMessage::connected().to_json(),
        start.to_json(),
        TwilioMessage::media(2, STREAM, 1, 20, &[0xff; 160]).to_json(),
        r#"{"event":"dtmf","sequenceNumber":"3","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}"#.to_owned(),
        r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"m1"}}"#.to_owned(),
        r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#.to_owned(),
    ]
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{0,12}".prop_map(Value::String),
        "[A-Za-z0-9+/=]{0,64}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A mutation applied somewhere inside a valid frame.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at the `n`th position (depth-first) by this one.
    Replace(usize, Value),
    /// Remove the `n`th object key.
    Remove(usize),
    /// Cut the JSON text at this fraction of its length.
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), json_value()).prop_map(|(n, v)| Mutation::Replace(n, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn replace_at(v: &mut Value, n: &mut usize, with: &Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| replace_at(c, n, with)),
        Value::Object(o) => o.values_mut().any(|c| replace_at(c, n, with)),
        _ => false,
    }
}

fn remove_key(v: &mut Value, n: &mut usize) -> bool {
    match v {
        Value::Object(o) => {
            if *n < o.len() {
                let key = o.keys().nth(*n).cloned();
                if let Some(key) = key {
                    o.remove(&key);
                }
                return true;
            }
            *n -= o.len();
            o.values_mut().any(|c| remove_key(c, n))
        }
        Value::Array(a) => a.iter_mut().any(|c| remove_key(c, n)),
        _ => false,
    }
}

fn mutate(text: &str, m: &Mutation) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    match m {
        Mutation::Replace(n, with) => {
            let mut n = n % count(&v);
            replace_at(&mut v, &mut n, with);
        }
        Mutation::Remove(n) => {
            let keys = count(&v);
            let mut n = n % keys;
            remove_key(&mut v, &mut n);
        }
        Mutation::Truncate(f) => {
            let cut = (text.len() as f64 * f) as usize;
            let mut end = cut.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            return text[..end].to_owned();
        }
    }
    v.to_string()
}

/// What the gateway's stream actor does with one text frame, minus the socket and NATS. The
/// actor reads frames with the fast path, [`frames::parse_inbound`]: whatever the full parser
/// accepts, the fast path accepts too, with the same streamSid and the same audio (or the same
/// audio error). It may also pass the audio of a `media` frame whose fields the gateway does not
/// use (`track`, `sequenceNumber`) have the wrong type, which the full parser refuses whole.
fn map(text: &str) {
    let fast = frames::parse_inbound(text);
    let full = TwilioMessage::parse(text);
    match (&fast, &full) {
        (
            Ok(frames::Inbound::Media { stream_sid, frame }),
            Ok(TwilioMessage::Media {
                stream_sid: sid,
                media,
                ..
            }),
        ) => {
            assert_eq!(stream_sid.as_ref(), sid.as_str(), "{text:?}");
            assert_eq!(
                format!("{frame:?}"),
                format!("{:?}", frames::audio(media)),
                "{text:?}"
            );
        }
        (Ok(frames::Inbound::Media { .. }), Err(_)) => {}
        (Ok(frames::Inbound::Media { .. }), Ok(other)) => {
            panic!("{text:?}: the fast path read media, the full parser {other:?}")
        }
        (fast, full) => assert_eq!(
            format!("{fast:?}"),
            format!(
                "{:?}",
                full.as_ref().map(|m| frames::Inbound::Other(m.clone()))
            ),
            "{text:?}"
        ),
    }
    let Ok(msg) = full else {
        return;
    };
    let _ = msg.stream_sid();
    match msg {
        TwilioMessage::Start {
            stream_sid, start, ..
        } => {
            let f = frames::stream_start(
                &stream_sid,
                &start,
                "gw",
                gateway::stream_token::StreamGrant::FIRST,
                0,
            );
            if let inbound_frame::Frame::Start(s) = f {
                assert!(!s.custom_parameters.contains_key(frames::TOKEN_PARAMETER));
            }
        }
        TwilioMessage::Media { media, .. } => {
            if let Ok(inbound_frame::Frame::Audio(a)) = frames::audio(&media) {
                assert_eq!(a.timestamp_ms, media.timestamp_ms().unwrap_or_default());
            }
        }
        TwilioMessage::Dtmf { dtmf, .. } => {
            let _ = frames::dtmf(&dtmf.digit);
        }
        TwilioMessage::Mark { mark, .. } => {
            let _ = frames::mark_echo(&mark.name);
        }
        TwilioMessage::Connected { .. } | TwilioMessage::Stop { .. } => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        map(&text);
    }

    #[test]
    fn json_shaped_garbage_never_panics(v in json_value(), event in prop_oneof![
        Just("connected"), Just("start"), Just("media"), Just("dtmf"), Just("mark"),
        Just("stop"), Just("other")]) {
        let mut v = v;
        if let Value::Object(o) = &mut v {
            o.insert("event".into(), Value::from(event));
        }
        map(&v.to_string());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0..6usize,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut text = valid_frames()[which].clone();
        for m in &mutations {
            text = mutate(&text, m);
        }
        map(&text);
    }

    #[test]
    fn worker_frames_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(OutboundFrame { frame: Some(switchboard_proto::outbound_frame::Frame::Audio(a)), .. })
            = OutboundFrame::decode(bytes.as_slice())
        {
            let _ = frames::audio_messages(STREAM, &a.payload);
        }
    }

    #[test]
    fn outbound_audio_is_split_without_loss(len in 0..40_000usize) {
        let audio = vec![0x55u8; len];
        let messages = frames::audio_messages(STREAM, &audio);
        prop_assert_eq!(messages.len(), len.div_ceil(frames::MAX_AUDIO_CHUNK));
        prop_assert_eq!(frames::MAX_AUDIO_CHUNK % FRAME_BYTES, 0);
    }
}

#[test]
fn the_valid_frames_are_valid() {
    for text in valid_frames() {
        assert!(TwilioMessage::parse(&text).is_ok(), "{text}");
    }
}
