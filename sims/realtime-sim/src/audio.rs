//! Audio: the synthesized assistant voice and server VAD over the caller's mu-law audio.
//!
//! Everything here is measured in positions of the audio itself (8 bytes per ms), never in
//! wall-clock time, so a test can push a second of speech in one message and still see the
//! same events a real-time caller would.

use switchboard_twilio::BYTES_PER_MS;
use switchboard_twilio::mulaw;

/// VAD decides per 20 ms chunk.
const CHUNK_MS: u32 = 20;
const CHUNK_BYTES: usize = CHUNK_MS as usize * BYTES_PER_MS;

/// Assistant audio goes out in deltas of 100 ms.
pub(crate) const DELTA_MS: u32 = 100;
pub(crate) const DELTA_BYTES: usize = DELTA_MS as usize * BYTES_PER_MS;

/// RMS level of the synthesized voice: clearly not silence, below a caller's speech.
const VOICE_RMS: f32 = 0.2;
const VOICE_HZ: f32 = 220.0;

/// Samples `start..end` of the simulated assistant voice (a steady tone), as mu-law.
/// Generated piece by piece, so a long answer never sits in memory whole.
pub(crate) fn voice(start: usize, end: usize) -> Vec<u8> {
    let amplitude = VOICE_RMS * std::f32::consts::SQRT_2 * f32::from(i16::MAX);
    let samples_per_period = BYTES_PER_MS as f32 * 1000.0 / VOICE_HZ;
    (start..end)
        .map(|i| {
            // The phase restarts every period, so precision does not drift on long answers.
            let phase = (i as f32 % samples_per_period) / samples_per_period;
            mulaw::encode((amplitude * (std::f32::consts::TAU * phase).sin()) as i16)
        })
        .collect()
}

/// An audio format of the session (`audio.input.format` / `audio.output.format`). The
/// simulator works in mu-law internally and converts at the edges, so a client that sends or
/// plays the wrong format hears (and is heard as) noise, as with the real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// `audio/pcm`: 16-bit little-endian PCM at 24 kHz (the default of a new session).
    #[default]
    Pcm,
    /// `audio/pcmu`: G.711 mu-law at 8 kHz.
    Pcmu,
    /// `audio/pcma`: G.711 A-law at 8 kHz.
    Pcma,
}

impl Format {
    /// The format named by `kind` (`audio/pcm` for anything unknown, which validation refuses
    /// before it could be set).
    pub(crate) fn from_kind(kind: &str) -> Format {
        match kind {
            switchboard_realtime::session::PCMU => Format::Pcmu,
            switchboard_realtime::session::PCMA => Format::Pcma,
            _ => Format::Pcm,
        }
    }

    /// Client audio in this format, as the mu-law the VAD listens to.
    pub(crate) fn to_mulaw(self, audio: &[u8]) -> Vec<u8> {
        match self {
            Format::Pcmu => audio.to_vec(),
            Format::Pcma => audio
                .iter()
                .map(|&a| mulaw::encode(alaw_decode(a)))
                .collect(),
            // 24 kHz to 8 kHz: every third sample.
            Format::Pcm => audio
                .chunks_exact(6)
                .map(|s| mulaw::encode(i16::from_le_bytes([s[0], s[1]])))
                .collect(),
        }
    }

    /// Simulated speech (mu-law) in this format.
    pub(crate) fn encode_mulaw(self, audio: &[u8]) -> Vec<u8> {
        match self {
            Format::Pcmu => audio.to_vec(),
            Format::Pcma => audio
                .iter()
                .map(|&m| alaw_encode(mulaw::decode(m)))
                .collect(),
            Format::Pcm => audio
                .iter()
                .flat_map(|&m| {
                    let [a, b] = mulaw::decode(m).to_le_bytes();
                    [a, b, a, b, a, b]
                })
                .collect(),
        }
    }
}

/// G.711 A-law to linear 16-bit.
fn alaw_decode(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mantissa = i16::from(a & 0x0f) << 4;
    let segment = (a & 0x70) >> 4;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        s => (mantissa + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 { magnitude } else { -magnitude }
}

/// Linear 16-bit to G.711 A-law.
fn alaw_encode(sample: i16) -> u8 {
    let (sign, magnitude) = if sample >= 0 {
        (0x80u8, sample)
    } else {
        (0x00u8, sample.saturating_neg())
    };
    let magnitude = (magnitude >> 3).min(0x0fff);
    let (segment, mantissa) = if magnitude < 32 {
        (0u8, (magnitude >> 1) as u8)
    } else {
        let segment = (16 - (magnitude as u16).leading_zeros() as u8).saturating_sub(5);
        (segment, ((magnitude >> segment) & 0x0f) as u8)
    };
    (sign | (segment << 4) | mantissa) ^ 0x55
}

/// Converts a byte count of mu-law audio to milliseconds.
pub(crate) fn bytes_to_ms(bytes: u64) -> u32 {
    u32::try_from(bytes / BYTES_PER_MS as u64).unwrap_or(u32::MAX)
}

/// Server VAD parameters (`audio.input.turn_detection` of type `server_vad`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct VadParams {
    pub threshold: f32,
    pub prefix_padding_ms: u32,
    pub silence_duration_ms: u32,
}

/// A VAD transition, at a position in the appended audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VadEvent {
    /// Speech began; `audio_start_ms` includes the prefix padding.
    Started { audio_start_ms: u32 },
    /// `silence_duration_ms` of non-speech followed speech; `audio_end_ms` is where that
    /// silence ended (so it includes it, like the real API). `duration_ms` is the length of
    /// the segment to commit (padding, speech and the trailing silence); the buffer is empty
    /// again afterwards.
    Stopped { audio_end_ms: u32, duration_ms: u32 },
}

/// The input audio buffer and the voice activity detector watching it.
#[derive(Debug, Default)]
pub(crate) struct InputBuffer {
    /// The tail of the appended audio that does not fill a whole chunk yet.
    partial: Vec<u8>,
    /// Bytes appended in the session so far (whole chunks only).
    position: u64,
    /// Where the uncommitted audio starts, in bytes; `None` when the buffer is empty.
    start: Option<u64>,
    speaking: bool,
    silence_ms: u32,
}

impl InputBuffer {
    /// Adds caller audio. With `vad` set, speech transitions are appended to `events`; without
    /// it (manual turns) everything appended is buffered until a commit.
    pub(crate) fn append(
        &mut self,
        audio: &[u8],
        vad: Option<VadParams>,
        events: &mut Vec<VadEvent>,
    ) {
        self.partial.extend_from_slice(audio);
        let whole = self.partial.len() / CHUNK_BYTES * CHUNK_BYTES;
        let chunks: Vec<u8> = self.partial.drain(..whole).collect();
        for chunk in chunks.chunks_exact(CHUNK_BYTES) {
            let chunk_start = self.position;
            self.position += CHUNK_BYTES as u64;
            let Some(vad) = vad else {
                self.start.get_or_insert(chunk_start);
                continue;
            };
            let speech = mulaw::rms(chunk) > 0.1 * vad.threshold;
            if !self.speaking {
                if speech {
                    self.speaking = true;
                    self.silence_ms = 0;
                    let padding = u64::from(vad.prefix_padding_ms) * BYTES_PER_MS as u64;
                    let start = chunk_start.saturating_sub(padding);
                    self.start = Some(start);
                    events.push(VadEvent::Started {
                        audio_start_ms: bytes_to_ms(start),
                    });
                }
                continue;
            }
            if speech {
                self.silence_ms = 0;
                continue;
            }
            self.silence_ms += CHUNK_MS;
            if self.silence_ms >= vad.silence_duration_ms {
                let duration_ms = self.take();
                events.push(VadEvent::Stopped {
                    audio_end_ms: bytes_to_ms(self.position),
                    duration_ms,
                });
            }
        }
    }

    /// Milliseconds of audio appended in this session.
    #[cfg(test)]
    pub(crate) fn position_ms(&self) -> u32 {
        bytes_to_ms(self.position)
    }

    /// Milliseconds of uncommitted audio (under server VAD: of the current speech).
    pub(crate) fn buffered_ms(&self) -> u32 {
        self.start
            .map_or(0, |start| bytes_to_ms(self.position.saturating_sub(start)))
    }

    /// Whether VAD is inside a speech segment.
    #[cfg(test)]
    pub(crate) fn speaking(&self) -> bool {
        self.speaking
    }

    /// Empties the buffer (a commit, a clear, or the end of a VAD speech segment).
    pub(crate) fn take(&mut self) -> u32 {
        let ms = self.buffered_ms();
        self.start = None;
        self.speaking = false;
        self.silence_ms = 0;
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_convert_to_and_from_mulaw() {
        let speech: Vec<u8> = voice(0, 800);
        for format in [Format::Pcmu, Format::Pcma, Format::Pcm] {
            let wire = format.encode_mulaw(&speech);
            let bytes_per_ms = if format == Format::Pcm { 48 } else { 8 };
            assert_eq!(wire.len(), 100 * bytes_per_ms, "{format:?}");
            let back = format.to_mulaw(&wire);
            let (a, b) = (mulaw::rms(&speech), mulaw::rms(&back));
            assert!((a - b).abs() < 0.01, "{format:?}: {a} vs {b}");
        }
        // mu-law read as 24 kHz PCM is not the same sound.
        let misread = Format::Pcm.to_mulaw(&speech);
        assert_eq!(misread.len(), speech.len() / 6);
    }

    const PARAMS: VadParams = VadParams {
        threshold: 0.5,
        prefix_padding_ms: 300,
        silence_duration_ms: 500,
    };

    fn tone(ms: usize, rms: f32) -> Vec<u8> {
        let amp = rms * std::f32::consts::SQRT_2 * 32767.0;
        (0..ms * 8)
            .map(|i| mulaw::encode((amp * (i as f32 * 0.3).sin()) as i16))
            .collect()
    }

    #[test]
    fn the_voice_is_audible_and_sized() {
        let v = voice(0, 8000);
        assert_eq!(v.len(), 8000);
        assert_eq!(voice(800, 1600), v[800..1600], "pieces join seamlessly");
        let level = mulaw::rms(&v);
        assert!((level - VOICE_RMS).abs() < 0.03, "{level}");
    }

    #[test]
    fn detects_speech_by_position() {
        let mut buf = InputBuffer::default();
        let mut ev = Vec::new();
        buf.append(&[mulaw::SILENCE; 8000], Some(PARAMS), &mut ev);
        assert!(ev.is_empty());
        assert_eq!(buf.buffered_ms(), 0);
        // Odd sizes: VAD works on whole 20 ms chunks whatever the append size.
        let speech = tone(1000, 0.3);
        for piece in speech.chunks(333) {
            buf.append(piece, Some(PARAMS), &mut ev);
        }
        assert_eq!(
            ev,
            [VadEvent::Started {
                audio_start_ms: 700
            }]
        );
        assert!(buf.speaking());
        ev.clear();
        buf.append(&[mulaw::SILENCE; 8000], Some(PARAMS), &mut ev);
        assert_eq!(
            ev,
            [VadEvent::Stopped {
                audio_end_ms: 2500,
                duration_ms: 1800
            }]
        );
        assert!(!buf.speaking());
        assert_eq!(
            buf.buffered_ms(),
            0,
            "silence after the turn is not buffered"
        );
        assert_eq!(buf.position_ms(), 3000);
    }

    #[test]
    fn quiet_noise_and_short_pauses_do_not_end_speech() {
        let mut buf = InputBuffer::default();
        let mut ev = Vec::new();
        buf.append(&tone(500, 0.02), Some(PARAMS), &mut ev);
        assert!(ev.is_empty(), "noise below 0.1 * threshold is not speech");
        buf.append(&tone(200, 0.3), Some(PARAMS), &mut ev);
        buf.append(&[mulaw::SILENCE; 400 * 8], Some(PARAMS), &mut ev);
        buf.append(&tone(200, 0.3), Some(PARAMS), &mut ev);
        assert_eq!(
            ev,
            [VadEvent::Started {
                audio_start_ms: 200
            }]
        );
    }

    #[test]
    fn manual_turns_buffer_everything() {
        let mut buf = InputBuffer::default();
        let mut ev = Vec::new();
        buf.append(&[mulaw::SILENCE; 800], None, &mut ev);
        assert_eq!(buf.buffered_ms(), 100);
        assert!(ev.is_empty());
        assert_eq!(buf.take(), 100);
        assert_eq!(buf.buffered_ms(), 0);
    }
}
