//! What a call cost: its model usage priced per model, its caller transcription priced per
//! transcription model, and its Twilio minutes.
//!
//! Prices are configuration, not code, because they change and differ per contract: the table
//! built in here ([`Prices::builtin`], listed in docs/operations.md) holds OpenAI's published
//! prices where the model pages state them and **placeholders** elsewhere (marked as such in
//! every breakdown), and a deployment overrides or extends it with `PRICES_FILE` (TOML). The
//! model part is computed when the `ended` event (which carries the usage) is written and
//! stored with the call, so a later price change does not rewrite history; Twilio minutes come
//! from Twilio's status callback (often after `ended`), so they are priced when read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchboard_proto::Usage;

/// The model of a usage that names none (workers before `Usage.model`): the worker's default.
const DEFAULT_MODEL: &str = "gpt-realtime";

/// Where the price table comes from (a flag with an environment fallback).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct PriceArgs {
    /// TOML file overriding or extending the built-in price table (`[model."<id>"]`,
    /// `[transcription."<id>"]`, `twilio_per_minute`; see docs/operations.md).
    #[arg(long, env = "PRICES_FILE")]
    pub prices_file: Option<PathBuf>,
}

impl PriceArgs {
    /// The built-in table with the file's entries applied.
    pub fn load(&self) -> Result<Prices, PricesError> {
        match &self.prices_file {
            None => Ok(Prices::builtin()),
            Some(path) => Prices::from_file(path),
        }
    }
}

/// A price file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    #[error("{file}: cannot read the price file: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// Where a price comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// OpenAI's published price (the model page named in docs/operations.md).
    Published,
    /// Not found in a published source: a stand-in for the operator to set in `PRICES_FILE`.
    Placeholder,
    /// Set by the deployment's `PRICES_FILE`.
    Operator,
}

/// USD per 1M tokens of a Realtime model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrices {
    pub audio_input: f64,
    pub audio_cached_input: f64,
    pub audio_output: f64,
    pub text_input: f64,
    pub text_cached_input: f64,
    pub text_output: f64,
}

/// What a transcription model costs: per 1M tokens, or per minute of audio.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum TranscriptionPrices {
    Tokens {
        audio_input: f64,
        text_input: f64,
        text_output: f64,
    },
    Minutes {
        per_minute: f64,
    },
}

/// The price table.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    models: BTreeMap<String, (ModelPrices, Source)>,
    transcription: BTreeMap<String, (TranscriptionPrices, Source)>,
    /// USD per started minute of a Twilio call; `None` (the default) until the operator sets
    /// it, since Twilio's rates depend on the number and the contract.
    twilio_per_minute: Option<f64>,
}

impl Default for Prices {
    fn default() -> Self {
        Self::builtin()
    }
}

/// The price file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    twilio_per_minute: Option<f64>,
    #[serde(default)]
    model: BTreeMap<String, ModelPrices>,
    #[serde(default)]
    transcription: BTreeMap<String, TranscriptionPrices>,
}

const fn model(audio: (f64, f64, f64), text: (f64, f64, f64)) -> ModelPrices {
    ModelPrices {
        audio_input: audio.0,
        audio_cached_input: audio.1,
        audio_output: audio.2,
        text_input: text.0,
        text_cached_input: text.1,
        text_output: text.2,
    }
}

/// `gpt-realtime-1.5` and `gpt-realtime-2` audio: input, cached input, output.
const FLAGSHIP_AUDIO: (f64, f64, f64) = (32.0, 0.40, 64.0);
/// `gpt-realtime-2.1-mini` audio.
const MINI_AUDIO: (f64, f64, f64) = (10.0, 0.30, 20.0);
/// `gpt-realtime-2.1-mini` text.
const MINI_TEXT: (f64, f64, f64) = (0.60, 0.06, 2.40);

impl Prices {
    /// The built-in table (USD; docs/operations.md names each source).
    pub fn builtin() -> Self {
        use Source::{Placeholder, Published};
        let models = [
            // developers.openai.com/api/docs/models/gpt-realtime-1.5
            (
                "gpt-realtime-1.5",
                model(FLAGSHIP_AUDIO, (4.0, 0.40, 16.0)),
                Published,
            ),
            // developers.openai.com/api/docs/models/gpt-realtime-2
            (
                "gpt-realtime-2",
                model(FLAGSHIP_AUDIO, (4.0, 0.40, 24.0)),
                Published,
            ),
            // developers.openai.com/api/docs/models/gpt-realtime-2.1-mini
            (
                "gpt-realtime-2.1-mini",
                model(MINI_AUDIO, MINI_TEXT),
                Published,
            ),
            // Not on a model page found: gpt-realtime-1.5's prices stand in.
            (
                "gpt-realtime",
                model(FLAGSHIP_AUDIO, (4.0, 0.40, 16.0)),
                Placeholder,
            ),
            // Only its text input ($0.60) is published (2.1-mini page); 2.1-mini's stand in.
            (
                "gpt-realtime-mini",
                model(MINI_AUDIO, MINI_TEXT),
                Placeholder,
            ),
            // Not found: gpt-realtime-2's prices stand in.
            (
                "gpt-realtime-2.1",
                model(FLAGSHIP_AUDIO, (4.0, 0.40, 24.0)),
                Placeholder,
            ),
        ];
        let transcription = [
            // developers.openai.com/api/docs/models/gpt-realtime-whisper: $0.017 a minute.
            (
                "gpt-realtime-whisper",
                TranscriptionPrices::Minutes { per_minute: 0.017 },
                Published,
            ),
            // developers.openai.com/api/docs/models/compare?model=gpt-4o-mini-transcribe:
            // $1.25 in, $5.00 out per 1M tokens.
            (
                "gpt-4o-mini-transcribe",
                TranscriptionPrices::Tokens {
                    audio_input: 1.25,
                    text_input: 1.25,
                    text_output: 5.00,
                },
                Published,
            ),
            // Not found: stand-ins for the operator to set.
            (
                "whisper-1",
                TranscriptionPrices::Minutes { per_minute: 0.017 },
                Placeholder,
            ),
            (
                "gpt-4o-transcribe",
                TranscriptionPrices::Tokens {
                    audio_input: 1.25,
                    text_input: 1.25,
                    text_output: 5.00,
                },
                Placeholder,
            ),
        ];
        Self {
            models: models
                .into_iter()
                .map(|(id, p, s)| (id.to_owned(), (p, s)))
                .collect(),
            transcription: transcription
                .into_iter()
                .map(|(id, p, s)| (id.to_owned(), (p, s)))
                .collect(),
            twilio_per_minute: None,
        }
    }

    /// The built-in table with the entries of the TOML file at `path` applied.
    pub fn from_file(path: &Path) -> Result<Self, PricesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PricesError::Read {
            file: file.clone(),
            source,
        })?;
        Self::builtin()
            .with_overrides(&text)
            .map_err(|message| PricesError::Invalid { file, message })
    }

    fn with_overrides(mut self, text: &str) -> Result<Self, String> {
        let parsed: PriceFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let check = |what: String, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{what}: a price must be a number >= 0, got {v}"))
            }
        };
        if let Some(p) = parsed.twilio_per_minute {
            check("twilio_per_minute".into(), p)?;
            self.twilio_per_minute = Some(p);
        }
        for (id, p) in parsed.model {
            for (field, v) in [
                ("audio_input", p.audio_input),
                ("audio_cached_input", p.audio_cached_input),
                ("audio_output", p.audio_output),
                ("text_input", p.text_input),
                ("text_cached_input", p.text_cached_input),
                ("text_output", p.text_output),
            ] {
                check(format!("model.\"{id}\".{field}"), v)?;
            }
            self.models.insert(id, (p, Source::Operator));
        }
        for (id, p) in parsed.transcription {
            let values: Vec<(&str, f64)> = match p {
                TranscriptionPrices::Tokens {
                    audio_input,
                    text_input,
                    text_output,
                } => vec![
                    ("audio_input", audio_input),
                    ("text_input", text_input),
                    ("text_output", text_output),
                ],
                TranscriptionPrices::Minutes { per_minute } => vec![("per_minute", per_minute)],
            };
            for (field, v) in values {
                check(format!("transcription.\"{id}\".{field}"), v)?;
            }
            self.transcription.insert(id, (p, Source::Operator));
        }
        Ok(self)
    }

    /// A model's prices: the exact id, else the id without a snapshot date
    /// (`gpt-realtime-2025-08-28` is priced as `gpt-realtime`).
    fn model(&self, id: &str) -> Option<(&ModelPrices, Source)> {
        lookup(&self.models, id).map(|(p, s)| (p, *s))
    }

    /// The estimated cost of `usage` in USD (model and transcription); `None` when the model
    /// (or the transcription model) has no price.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let b = self.breakdown(usage);
        b.priced.then_some(b.total_usd)
    }

    /// The itemised cost of `usage`. A usage without a model (from older workers) is priced
    /// as `gpt-realtime`.
    pub fn breakdown(&self, usage: &Usage) -> CostBreakdown {
        let model_id = if usage.model.is_empty() {
            DEFAULT_MODEL
        } else {
            usage.model.as_str()
        };
        let mut lines = Vec::new();
        let mut priced = true;
        let mut placeholder = false;
        let (audio_uncached, audio_cached, text_uncached, text_cached) = split_cached(usage);
        match self.model(model_id) {
            Some((p, source)) => {
                placeholder |= source == Source::Placeholder;
                for (item, tokens, price) in [
                    ("audio input", audio_uncached, p.audio_input),
                    ("audio input, cached", audio_cached, p.audio_cached_input),
                    ("text input", text_uncached, p.text_input),
                    ("text input, cached", text_cached, p.text_cached_input),
                    (
                        "audio output",
                        usage.output_audio_tokens as f64,
                        p.audio_output,
                    ),
                    (
                        "text output",
                        usage.output_text_tokens as f64,
                        p.text_output,
                    ),
                ] {
                    lines.push(CostLine::tokens("model", item, tokens, price, source));
                }
            }
            None => priced = false,
        }
        let transcribed = usage.transcription_input_audio_tokens
            + usage.transcription_input_text_tokens
            + usage.transcription_output_tokens
            > 0
            || usage.transcription_seconds > 0.0;
        if transcribed {
            match lookup(&self.transcription, &usage.transcription_model) {
                Some((
                    TranscriptionPrices::Tokens {
                        audio_input,
                        text_input,
                        text_output,
                    },
                    s,
                )) => {
                    placeholder |= *s == Source::Placeholder;
                    for (item, tokens, price) in [
                        (
                            "audio input",
                            usage.transcription_input_audio_tokens,
                            *audio_input,
                        ),
                        (
                            "text input",
                            usage.transcription_input_text_tokens,
                            *text_input,
                        ),
                        (
                            "text output",
                            usage.transcription_output_tokens,
                            *text_output,
                        ),
                    ] {
                        lines.push(CostLine::tokens(
                            "transcription",
                            item,
                            tokens as f64,
                            price,
                            *s,
                        ));
                    }
                }
                Some((TranscriptionPrices::Minutes { per_minute }, s)) => {
                    placeholder |= *s == Source::Placeholder;
                    let minutes = usage.transcription_seconds / 60.0;
                    lines.push(CostLine {
                        part: "transcription",
                        item: "audio",
                        quantity: minutes,
                        unit: "minutes",
                        usd_per_unit: *per_minute,
                        usd: minutes * per_minute,
                        source: *s,
                    });
                }
                None => priced = false,
            }
        }
        let sum =
            |part: &str| -> f64 { lines.iter().filter(|l| l.part == part).map(|l| l.usd).sum() };
        let model_usd = sum("model");
        let transcription_usd = sum("transcription");
        CostBreakdown {
            model: model_id.to_owned(),
            transcription_model: (!usage.transcription_model.is_empty())
                .then(|| usage.transcription_model.clone()),
            priced,
            placeholder,
            model_usd,
            transcription_usd,
            total_usd: model_usd + transcription_usd,
            lines,
        }
    }

    /// The Twilio part of a call of `seconds`: minutes started, and their cost when a
    /// per-minute price is configured. `estimated`: the seconds are the worker's count, because
    /// Twilio's final status callback (its billed duration) has not arrived.
    pub fn twilio(&self, seconds: i64, estimated: bool) -> TwilioCost {
        let minutes = (seconds.max(0) as u64).div_ceil(60);
        TwilioCost {
            seconds,
            estimated,
            minutes,
            usd_per_minute: self.twilio_per_minute,
            usd: self.twilio_per_minute.map(|p| p * minutes as f64),
        }
    }
}

fn lookup<'a, T>(table: &'a BTreeMap<String, T>, id: &str) -> Option<&'a T> {
    table.get(id).or_else(|| table.get(strip_snapshot(id)))
}

/// `gpt-realtime-mini-2025-10-06` -> `gpt-realtime-mini`.
fn strip_snapshot(id: &str) -> &str {
    let bytes = id.as_bytes();
    if bytes.len() > 11 {
        let tail = &id[id.len() - 11..];
        let dated = tail.starts_with('-')
            && tail[1..].bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if dated {
            return &id[..id.len() - 11];
        }
    }
    id
}

/// Uncached and cached input tokens of each modality: the reported split of the cached tokens,
/// and whatever of them the report left unsplit shared out in proportion to each modality's
/// input.
fn split_cached(u: &Usage) -> (f64, f64, f64, f64) {
    let audio_in = u.input_audio_tokens as f64;
    let text_in = u.input_text_tokens as f64;
    let mut audio_cached = (u.cached_audio_tokens as f64).min(audio_in);
    let mut text_cached = (u.cached_text_tokens as f64).min(text_in);
    let rest = (u.cached_tokens as f64 - audio_cached - text_cached).max(0.0);
    let (audio_left, text_left) = (audio_in - audio_cached, text_in - text_cached);
    if rest > 0.0 && audio_left + text_left > 0.0 {
        let rest = rest.min(audio_left + text_left);
        let to_audio = rest * audio_left / (audio_left + text_left);
        audio_cached += to_audio;
        text_cached += rest - to_audio;
    }
    (
        audio_in - audio_cached,
        audio_cached,
        text_in - text_cached,
        text_cached,
    )
}

/// One priced quantity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostLine {
    /// `model` or `transcription`.
    pub part: &'static str,
    /// `audio input`, `audio input, cached`, `text output`, ...
    pub item: &'static str,
    pub quantity: f64,
    /// `tokens` or `minutes`.
    pub unit: &'static str,
    /// USD per 1M tokens, or per minute.
    pub usd_per_unit: f64,
    pub usd: f64,
    pub source: Source,
}

impl CostLine {
    fn tokens(
        part: &'static str,
        item: &'static str,
        tokens: f64,
        per_million: f64,
        source: Source,
    ) -> Self {
        Self {
            part,
            item,
            quantity: tokens,
            unit: "tokens",
            usd_per_unit: per_million,
            usd: tokens * per_million / 1_000_000.0,
            source,
        }
    }
}

/// The itemised model and transcription cost of a call, as stored with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostBreakdown {
    pub model: String,
    pub transcription_model: Option<String>,
    /// Every part had a price (otherwise the total leaves the unpriced part out).
    pub priced: bool,
    /// Some price used is a placeholder (see [`Source::Placeholder`]).
    pub placeholder: bool,
    pub model_usd: f64,
    pub transcription_usd: f64,
    pub total_usd: f64,
    pub lines: Vec<CostLine>,
}

/// The Twilio part of a call's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwilioCost {
    /// Twilio's billed duration (or the call's own, see `estimated`).
    pub seconds: i64,
    /// `seconds` is the call's duration as the worker counted it, not Twilio's.
    pub estimated: bool,
    /// Minutes started (Twilio bills voice per started minute).
    pub minutes: u64,
    /// `null` until `twilio_per_minute` is set in `PRICES_FILE`.
    pub usd_per_minute: Option<f64>,
    pub usd: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn usage(model: &str) -> Usage {
        Usage {
            model: model.into(),
            ..Default::default()
        }
    }

    #[test]
    fn prices_a_call_per_model() {
        let p = Prices::builtin();
        let mut u = usage("gpt-realtime-1.5");
        u.input_audio_tokens = 1_000_000;
        u.output_audio_tokens = 1_000_000;
        assert!(close(p.cost(&u).unwrap(), 96.0));
        u.model = "gpt-realtime-2.1-mini".into();
        assert!(close(p.cost(&u).unwrap(), 30.0));
        let mut t = usage("gpt-realtime-2");
        t.input_text_tokens = 1_000_000;
        t.output_text_tokens = 1_000_000;
        assert!(close(p.cost(&t).unwrap(), 28.0));
        assert!(!p.breakdown(&t).placeholder);
        assert!(p.breakdown(&usage("gpt-realtime")).placeholder);
        assert!(close(p.cost(&Usage::default()).unwrap(), 0.0));
        assert_eq!(p.cost(&usage("gpt-nonexistent")), None);
    }

    #[test]
    fn snapshots_are_priced_as_their_model() {
        let p = Prices::builtin();
        assert_eq!(
            strip_snapshot("gpt-realtime-mini-2025-10-06"),
            "gpt-realtime-mini"
        );
        assert_eq!(strip_snapshot("gpt-realtime-2"), "gpt-realtime-2");
        let b = p.breakdown(&usage("gpt-realtime-2025-08-28"));
        assert!(b.priced);
    }

    #[test]
    fn cached_tokens_use_the_reported_split_and_share_out_the_rest() {
        let p = Prices::builtin();
        // 800 audio + 200 text input; cached: 60 audio and 10 text reported, 30 unsplit.
        let mut u = usage("gpt-realtime-1.5");
        u.input_audio_tokens = 800;
        u.input_text_tokens = 200;
        u.cached_tokens = 100;
        u.cached_audio_tokens = 60;
        u.cached_text_tokens = 10;
        let (au, ac, tu, tc) = split_cached(&u);
        // The 30 unsplit go 740:190 to audio and text.
        let to_audio = 30.0 * 740.0 / 930.0;
        assert!(close(ac, 60.0 + to_audio) && close(tc, 10.0 + 30.0 - to_audio));
        assert!(close(au + ac, 800.0) && close(tu + tc, 200.0));
        let expected = (au * 32.0 + ac * 0.40 + tu * 4.0 + tc * 0.40) / 1e6;
        assert!(close(p.cost(&u).unwrap(), expected));
        // More cached than input (a faulty producer) never goes negative.
        let mut bad = usage("gpt-realtime-1.5");
        bad.input_audio_tokens = 10;
        bad.cached_tokens = 50;
        assert!(close(p.cost(&bad).unwrap(), 10.0 * 0.40 / 1e6));
    }

    #[test]
    fn mini_saves_less_on_cached_audio() {
        let p = Prices::builtin();
        let (full, _) = p.model("gpt-realtime-1.5").unwrap();
        let (mini, _) = p.model("gpt-realtime-2.1-mini").unwrap();
        assert!(close(full.audio_input / mini.audio_input, 3.2));
        assert!((full.audio_cached_input / mini.audio_cached_input - 1.333).abs() < 0.01);
    }

    #[test]
    fn transcription_is_priced_by_tokens_or_minutes() {
        let p = Prices::builtin();
        let mut u = usage("gpt-realtime-1.5");
        u.transcription_model = "gpt-4o-mini-transcribe".into();
        u.transcription_input_audio_tokens = 1_000_000;
        u.transcription_output_tokens = 1_000_000;
        let b = p.breakdown(&u);
        assert!(close(b.transcription_usd, 6.25));
        let mut w = usage("gpt-realtime-1.5");
        w.transcription_model = "gpt-realtime-whisper".into();
        w.transcription_seconds = 120.0;
        assert!(close(p.breakdown(&w).transcription_usd, 0.034));
        w.transcription_model = "unknown-asr".into();
        assert!(!p.breakdown(&w).priced);
    }

    #[test]
    fn a_price_file_overrides_and_extends() {
        let p = Prices::builtin()
            .with_overrides(
                "twilio_per_minute = 0.0085\n\
                 [model.\"gpt-realtime\"]\naudio_input = 30.0\naudio_cached_input = 0.3\n\
                 audio_output = 60.0\ntext_input = 4.0\ntext_cached_input = 0.4\ntext_output = 16.0\n\
                 [transcription.\"whisper-1\"]\nper_minute = 0.006\n",
            )
            .unwrap();
        let mut u = usage("gpt-realtime");
        u.input_audio_tokens = 1_000_000;
        let b = p.breakdown(&u);
        assert!(close(b.total_usd, 30.0));
        assert!(!b.placeholder, "set by the operator");
        assert_eq!(b.lines[0].source, Source::Operator);
        let t = p.twilio(61, false);
        assert_eq!(t.minutes, 2);
        assert!(close(t.usd.unwrap(), 0.017));
        assert_eq!(Prices::builtin().twilio(61, false).usd, None);
        for bad in [
            "twilio_per_minute = -1.0",
            "[model.\"x\"]\naudio_input = 1.0",
            "[model.\"x\"]\naudio_inpt = 1.0",
            "nonsense = 1",
        ] {
            assert!(Prices::builtin().with_overrides(bad).is_err(), "{bad}");
        }
    }
}
