//! What a call cost: token usage priced per million tokens.
//!
//! Prices are configuration, not code, because they change and differ per model and contract;
//! the defaults are OpenAI's list prices for `gpt-realtime` (USD per 1M tokens: audio input 32,
//! audio output 64, text input 4, text output 16, cached input 0.40). The estimate is computed
//! when the `ended` event (which carries the usage) is written, and stored with the call, so a
//! later price change does not rewrite history.

use switchboard_proto::Usage;

/// Per-million-token prices in USD (flags with environment fallbacks).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct Prices {
    /// USD per 1M audio input tokens (not cached).
    #[arg(long, env = "PRICE_AUDIO_INPUT", default_value_t = 32.0)]
    pub audio_input: f64,
    /// USD per 1M audio output tokens.
    #[arg(long, env = "PRICE_AUDIO_OUTPUT", default_value_t = 64.0)]
    pub audio_output: f64,
    /// USD per 1M text input tokens (not cached).
    #[arg(long, env = "PRICE_TEXT_INPUT", default_value_t = 4.0)]
    pub text_input: f64,
    /// USD per 1M text output tokens.
    #[arg(long, env = "PRICE_TEXT_OUTPUT", default_value_t = 16.0)]
    pub text_output: f64,
    /// USD per 1M cached input tokens (audio or text).
    #[arg(long, env = "PRICE_CACHED_INPUT", default_value_t = 0.40)]
    pub cached_input: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            audio_input: 32.0,
            audio_output: 64.0,
            text_input: 4.0,
            text_output: 16.0,
            cached_input: 0.40,
        }
    }
}

impl Prices {
    /// The estimated cost of `usage` in USD.
    ///
    /// The usage only says how many input tokens were cached in total, not whether they were
    /// audio or text, so the cached tokens are taken from audio and text input in proportion to
    /// their shares, and the rest is charged at the uncached price of each.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let audio_in = usage.input_audio_tokens as f64;
        let text_in = usage.input_text_tokens as f64;
        let input = audio_in + text_in;
        let cached = (usage.cached_tokens as f64).min(input);
        let (audio_uncached, text_uncached) = if input > 0.0 {
            (
                audio_in - cached * audio_in / input,
                text_in - cached * text_in / input,
            )
        } else {
            (0.0, 0.0)
        };
        let micro = audio_uncached * self.audio_input
            + text_uncached * self.text_input
            + cached * self.cached_input
            + usage.output_audio_tokens as f64 * self.audio_output
            + usage.output_text_tokens as f64 * self.text_output;
        micro / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn prices_a_call_at_gpt_realtime_rates() {
        let p = Prices::default();
        let usage = Usage {
            input_audio_tokens: 1_000_000,
            output_audio_tokens: 1_000_000,
            ..Default::default()
        };
        assert!(close(p.cost(&usage), 96.0));
        let usage = Usage {
            input_text_tokens: 1_000_000,
            output_text_tokens: 1_000_000,
            ..Default::default()
        };
        assert!(close(p.cost(&usage), 20.0));
        assert!(close(p.cost(&Usage::default()), 0.0));
    }

    #[test]
    fn cached_tokens_are_split_across_audio_and_text() {
        let p = Prices::default();
        // 800 audio + 200 text input, 100 of them cached: 80 audio, 20 text cached.
        let usage = Usage {
            input_audio_tokens: 800,
            input_text_tokens: 200,
            cached_tokens: 100,
            ..Default::default()
        };
        let expected = (720.0 * 32.0 + 180.0 * 4.0 + 100.0 * 0.40) / 1e6;
        assert!(close(p.cost(&usage), expected), "{}", p.cost(&usage));
        // More cached than input (a faulty producer) never goes negative.
        let usage = Usage {
            input_audio_tokens: 10,
            cached_tokens: 50,
            ..Default::default()
        };
        assert!(close(p.cost(&usage), 10.0 * 0.40 / 1e6));
    }
}
