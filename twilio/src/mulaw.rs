//! G.711 mu-law, the audio format of Twilio voice (8 kHz, one byte per sample).
//!
//! Switchboard forwards mu-law untouched; decoding is only needed to measure audio (voice
//! activity in the Realtime simulator, what a simulated caller heard) and encoding to synthesize
//! test audio.

/// mu-law silence (a decoded 0).
pub const SILENCE: u8 = 0xFF;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Decodes one mu-law byte to a linear 16-bit sample.
pub fn decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes a linear 16-bit sample as mu-law.
pub fn encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Root-mean-square level of a mu-law chunk, 0.0 (silence) to 1.0 (full scale).
pub fn rms(chunk: &[u8]) -> f32 {
    if chunk.is_empty() {
        return 0.0;
    }
    let sum: f64 = chunk
        .iter()
        .map(|&b| {
            let s = decode(b) as f64 / 32768.0;
            s * s
        })
        .sum();
    (sum / chunk.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_quantization_error() {
        for s in (-32768i32..=32767).step_by(97) {
            let s = s as i16;
            let back = decode(encode(s)) as i32;
            let err = (back - s as i32).abs();
            // mu-law step size grows with magnitude: at most 1/16 of the value plus the bias.
            assert!(err <= (s as i32).abs() / 16 + 8, "{s} -> {back}");
        }
        assert_eq!(decode(SILENCE), 0);
        assert_eq!(encode(0), SILENCE);
    }

    #[test]
    fn rms_tells_speech_from_silence() {
        assert_eq!(rms(&[SILENCE; 160]), 0.0);
        let tone: Vec<u8> = (0..160)
            .map(|i| encode(((i as f32 / 8.0).sin() * 8000.0) as i16))
            .collect();
        assert!(rms(&tone) > 0.1);
    }
}
