//! What a call used of the model, summed from the Realtime usage reports into the `Usage` of the
//! call's `ended` event, which the persister prices.
//!
//! Responses report `usage` in `response.done` (`RealtimeResponseUsage`: input and output tokens
//! by modality, cached input tokens with their split in `cached_tokens_details`); caller
//! transcription reports its own in `...input_audio_transcription.completed`, billed at the
//! transcription model's prices by tokens or by seconds of audio.

use switchboard_proto::Usage;
use switchboard_realtime::server::{self, TranscriptionUsage};

/// Adds the usage of one response.
pub fn add_response(total: &mut Usage, u: &server::Usage) {
    let input = u.input_token_details.clone().unwrap_or_default();
    let output = u.output_token_details.clone().unwrap_or_default();
    total.input_tokens += u.input_tokens;
    total.output_tokens += u.output_tokens;
    total.input_audio_tokens += input.audio_tokens;
    total.input_text_tokens += input.text_tokens;
    total.cached_tokens += input.cached_tokens;
    if let Some(cached) = &input.cached_tokens_details {
        total.cached_audio_tokens += cached.audio_tokens;
        total.cached_text_tokens += cached.text_tokens;
    }
    total.output_audio_tokens += output.audio_tokens;
    total.output_text_tokens += output.text_tokens;
}

/// Adds the usage of one caller transcription.
pub fn add_transcription(total: &mut Usage, u: &TranscriptionUsage) {
    match u {
        TranscriptionUsage::Tokens {
            input_tokens,
            output_tokens,
            input_token_details,
            ..
        } => {
            match input_token_details {
                Some(d) => {
                    total.transcription_input_audio_tokens += d.audio_tokens;
                    total.transcription_input_text_tokens += d.text_tokens;
                }
                // Without the split every input token is audio (what the model transcribed).
                None => total.transcription_input_audio_tokens += input_tokens,
            }
            total.transcription_output_tokens += output_tokens;
        }
        TranscriptionUsage::Duration { seconds } => {
            if seconds.is_finite() && *seconds > 0.0 {
                total.transcription_seconds += seconds;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_responses_with_the_cached_split_and_transcriptions() {
        let mut total = Usage::default();
        let u: server::Usage = serde_json::from_value(serde_json::json!({
            "total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
            "input_token_details": {"text_tokens": 5, "audio_tokens": 15, "image_tokens": 0,
                "cached_tokens": 12, "cached_tokens_details":
                    {"text_tokens": 4, "audio_tokens": 8, "image_tokens": 0}},
            "output_token_details": {"text_tokens": 3, "audio_tokens": 7}}))
        .unwrap();
        add_response(&mut total, &u);
        add_response(&mut total, &u);
        assert_eq!(
            (
                total.input_tokens,
                total.cached_tokens,
                total.cached_audio_tokens
            ),
            (40, 24, 16)
        );
        assert_eq!(total.cached_text_tokens, 8);
        assert_eq!(total.output_audio_tokens, 14);
        add_transcription(
            &mut total,
            &serde_json::from_value(serde_json::json!({"type": "tokens", "input_tokens": 20,
                "output_tokens": 6, "total_tokens": 26,
                "input_token_details": {"audio_tokens": 18, "text_tokens": 2}}))
            .unwrap(),
        );
        add_transcription(
            &mut total,
            &serde_json::from_value(serde_json::json!({"type": "duration", "seconds": 2.5}))
                .unwrap(),
        );
        assert_eq!(total.transcription_input_audio_tokens, 18);
        assert_eq!(total.transcription_input_text_tokens, 2);
        assert_eq!(total.transcription_output_tokens, 6);
        assert!((total.transcription_seconds - 2.5).abs() < 1e-9);
    }
}
