//! Synthetic caller speech: a voice-like tone, mu-law encoded, 20 ms at a time.
//!
//! Not speech, but it has what a voice activity detector looks at: a level around RMS 0.3 in
//! every frame (well above any sane speech threshold), a wandering pitch and a syllable-rate
//! loudness contour, so it is not mistaken for a steady test tone or for silence.

use std::f64::consts::TAU;

use switchboard_twilio::{FRAME_BYTES, mulaw};

const SAMPLE_RATE: f64 = 8000.0;
/// Peak amplitude (fraction of full scale), chosen so the long-run RMS is about 0.3.
const AMPLITUDE: f64 = 0.70;

/// A continuous synthetic voice; successive frames join without clicks.
#[derive(Debug, Default, Clone)]
pub struct Voice {
    /// Samples produced so far.
    n: u64,
    /// Phase of the fundamental, in cycles (kept in [0, 1)).
    phase: f64,
}

impl Voice {
    /// A new voice at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next 20 ms of speech as mu-law.
    pub fn frame(&mut self) -> [u8; FRAME_BYTES] {
        let mut out = [mulaw::SILENCE; FRAME_BYTES];
        for byte in &mut out {
            let t = self.n as f64 / SAMPLE_RATE;
            // Pitch wanders 145..195 Hz, loudness swells at about three syllables a second.
            let pitch = 170.0 + 25.0 * (TAU * 0.7 * t).sin();
            let envelope = 0.7 + 0.3 * (TAU * 3.0 * t).sin();
            self.phase = (self.phase + pitch / SAMPLE_RATE).fract();
            let carrier = 0.8 * (TAU * self.phase).sin() + 0.2 * (2.0 * TAU * self.phase).sin();
            let sample = AMPLITUDE * envelope * carrier;
            *byte = mulaw::encode((sample * f64::from(i16::MAX)) as i16);
            self.n += 1;
        }
        out
    }
}

/// A frame of silence.
pub fn silence() -> [u8; FRAME_BYTES] {
    [mulaw::SILENCE; FRAME_BYTES]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_speech_and_the_level_is_about_0_3() {
        let mut voice = Voice::new();
        let mut all = Vec::new();
        for _ in 0..100 {
            let frame = voice.frame();
            // Far above the Realtime VAD's 0.05 speech threshold in every single frame.
            assert!(mulaw::rms(&frame) > 0.12, "{}", mulaw::rms(&frame));
            all.extend_from_slice(&frame);
        }
        let level = mulaw::rms(&all);
        assert!((0.25..0.35).contains(&level), "rms {level}");
        assert_eq!(mulaw::rms(&silence()), 0.0);
    }
}
