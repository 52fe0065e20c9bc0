//! Where the caller's audio sent to the Realtime session sits in the media stream's time.
//!
//! The Realtime API reports speech boundaries (`speech_stopped.audio_end_ms`) in milliseconds
//! of audio appended to the session's input buffer since the session started; Twilio stamps
//! each media frame with its stream time (`InboundAudio.timestamp_ms`). A caller's transcript
//! entry records where its speech ended in stream time (`TranscriptEntry.audio_end_ms`), so a
//! worker taking the call over can skip the replayed audio the transcript already holds.
//! The clock keeps the last [`SPAN_FRAMES`] appended frames (about 20 s at 20 ms a frame).

use std::collections::{HashMap, VecDeque};

/// Frames remembered: speech is reported stopped well within this span of its audio.
pub const SPAN_FRAMES: usize = 1000;

/// mu-law at 8 kHz: bytes per millisecond.
const BYTES_PER_MS: usize = 8;

/// One appended frame: where it starts in session time and in stream time, and how long it is.
#[derive(Debug, Clone, Copy)]
struct Frame {
    session_ms: u32,
    stream_ms: u32,
    len_ms: u32,
}

/// The session-to-stream time map of one Realtime session, and the speech ends seen.
#[derive(Debug, Default)]
pub struct StreamClock {
    appended_ms: u32,
    frames: VecDeque<Frame>,
    /// Stream time of the end of each caller item's speech, by item id.
    speech_ends: HashMap<String, u32>,
    /// Stream time of the latest end of the caller's speech (kept across sessions).
    last_speech_end: u32,
}

impl StreamClock {
    /// A frame of `bytes` bytes stamped `stream_ms` was appended to the session.
    pub fn appended(&mut self, stream_ms: u32, bytes: usize) {
        let len_ms = u32::try_from(bytes / BYTES_PER_MS).unwrap_or(u32::MAX);
        if self.frames.len() == SPAN_FRAMES {
            self.frames.pop_front();
        }
        self.frames.push_back(Frame {
            session_ms: self.appended_ms,
            stream_ms,
            len_ms,
        });
        self.appended_ms = self.appended_ms.saturating_add(len_ms);
    }

    /// The stream time of session time `session_ms`, if a remembered frame covers it.
    pub fn stream_time(&self, session_ms: u32) -> Option<u32> {
        let i = self
            .frames
            .partition_point(|f| f.session_ms.saturating_add(f.len_ms) < session_ms);
        let f = self.frames.get(i)?;
        (f.session_ms <= session_ms).then(|| f.stream_ms.saturating_add(session_ms - f.session_ms))
    }

    /// The session reported item `item_id`'s speech stopped at session time `audio_end_ms`.
    pub fn speech_stopped(&mut self, item_id: &str, audio_end_ms: u32) {
        if let Some(at) = self.stream_time(audio_end_ms) {
            self.speech_ends.insert(item_id.to_owned(), at);
            self.last_speech_end = self.last_speech_end.max(at);
        }
    }

    /// Stream time at which the caller last stopped speaking (0: not yet): whatever the model
    /// does now answers the caller's speech up to here.
    pub fn last_speech_end(&self) -> u32 {
        self.last_speech_end
    }

    /// Where item `item_id`'s speech ended in stream time (0: unknown); forgets it.
    pub fn take_speech_end(&mut self, item_id: &str) -> u32 {
        self.speech_ends.remove(item_id).unwrap_or(0)
    }

    /// A new session starts at session time 0.
    pub fn new_session(&mut self) {
        *self = Self {
            last_speech_end: self.last_speech_end,
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_session_time_to_stream_time_across_a_gap() {
        let mut c = StreamClock::default();
        // Two frames, then the stream skips 1 s (frames lost before the session got them).
        c.appended(5_000, 160);
        c.appended(5_020, 160);
        c.appended(6_040, 160);
        assert_eq!(c.stream_time(0), Some(5_000));
        assert_eq!(c.stream_time(30), Some(5_030));
        assert_eq!(c.stream_time(40), Some(5_040));
        assert_eq!(c.stream_time(50), Some(6_050));
        assert_eq!(c.stream_time(61), None);
        c.speech_stopped("item_1", 35);
        assert_eq!(c.take_speech_end("item_1"), 5_035);
        assert_eq!(c.take_speech_end("item_1"), 0);
        c.new_session();
        assert_eq!(c.stream_time(0), None);
    }

    #[test]
    fn remembers_a_bounded_span() {
        let mut c = StreamClock::default();
        for i in 0..(SPAN_FRAMES as u32 + 10) {
            c.appended(i * 20, 160);
        }
        assert_eq!(c.frames.len(), SPAN_FRAMES);
        assert_eq!(c.stream_time(0), None);
        assert_eq!(c.stream_time(20 * 10 + 5), Some(205));
    }
}
