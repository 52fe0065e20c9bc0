//! One response in flight: speech streamed as paced audio and transcript deltas, then an
//! optional function call, then `response.done`.
//!
//! The run is a plain state machine driven by its session actor: [`ResponseRun::tick`] is
//! called when [`ResponseRun::next_at`] is due and appends the events to send, so cancelling a
//! response is just not ticking it again (and emitting the closing events).

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use switchboard_realtime::server::{
    CachedTokenDetails, InputTokenDetails, Metadata, OutputTokenDetails, RateLimit, Response,
    ResponsePart, StatusDetails, Usage,
};
use switchboard_realtime::{ContentPart, Item, ServerEvent};
use tokio::time::Instant;

use crate::audio::{self, DELTA_BYTES, Format};
use crate::conversation::{Conversation, Entry, word_tokens};
use crate::ids;
use crate::script::ScriptedCall;
use switchboard_twilio::BYTES_PER_MS;

/// What a response will produce, after the script and instructions have been resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub say: Option<String>,
    pub call: Option<ScriptedCall>,
}

/// How fast the simulated model talks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Milliseconds of speech per word (already adjusted for the session's output speed).
    pub ms_per_word: f64,
    /// Real time between two 100 ms deltas.
    pub delta_interval: Duration,
}

/// Options of the `response.create` that started the response.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Whether the output becomes part of the conversation (`conversation: "none"` does not).
    pub in_conversation: bool,
    pub conversation_id: Option<String>,
    pub metadata: Option<Metadata>,
    /// Input tokens served from cache (the prefix the previous response already read): text,
    /// audio.
    pub cached_tokens: (u64, u64),
    /// The session's output format (the audio deltas are in it).
    pub format: Format,
}

enum Part {
    Speech(Speech),
    Call(ScriptedCall),
}

struct Speech {
    item_id: String,
    output_index: u32,
    words: Vec<String>,
    /// Length of the speech in bytes (samples) of mu-law.
    total: usize,
    sent: usize,
    words_sent: usize,
    started: bool,
}

impl Speech {
    /// Sends the transcript deltas of the words that start before word position `until`
    /// (word `i` starts at `i * ms_per_word`), one word per delta.
    fn say_words(&mut self, response_id: &str, until: f64, out: &mut Vec<ServerEvent>) {
        while self.words_sent < self.words.len() && (self.words_sent as f64) < until {
            let word = &self.words[self.words_sent];
            let delta = if self.words_sent == 0 {
                word.clone()
            } else {
                format!(" {word}")
            };
            self.words_sent += 1;
            out.push(ServerEvent::OutputAudioTranscriptDelta {
                event_id: ids::event(),
                response_id: response_id.to_string(),
                item_id: self.item_id.clone(),
                output_index: self.output_index,
                content_index: 0,
                delta,
            });
        }
    }

    fn transcript_so_far(&self) -> String {
        self.words[..self.words_sent].join(" ")
    }
}

/// The active response of a session.
pub(crate) struct ResponseRun {
    pub(crate) id: String,
    options: Options,
    pace: Pace,
    parts: VecDeque<Part>,
    output: Vec<Item>,
    /// When the next tick is due.
    pub(crate) next_at: Instant,
    input_text_tokens: u64,
    input_audio_tokens: u64,
    output_text_tokens: u64,
    output_audio_ms: u64,
}

impl ResponseRun {
    /// Starts a response: returns it with `response.created` and `rate_limits.updated` in
    /// `out`. The first tick is due at once.
    pub(crate) fn start(
        plan: Plan,
        pace: Pace,
        options: Options,
        conv: &Conversation,
        instructions: &str,
        now: Instant,
        out: &mut Vec<ServerEvent>,
    ) -> ResponseRun {
        let (input_text_tokens, input_audio_tokens) = conv.input_tokens(instructions);
        let mut parts = VecDeque::new();
        if let Some(text) = plan.say {
            let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            let duration_ms = (words.len() as f64 * pace.ms_per_word).ceil() as u32;
            let total = duration_ms as usize * BYTES_PER_MS;
            parts.push_back(Part::Speech(Speech {
                item_id: ids::new("item"),
                output_index: 0,
                words,
                total,
                sent: 0,
                words_sent: 0,
                started: false,
            }));
        }
        if let Some(call) = plan.call {
            parts.push_back(Part::Call(call));
        }
        let run = ResponseRun {
            id: ids::new("resp"),
            options,
            pace,
            parts,
            output: Vec::new(),
            next_at: now,
            input_text_tokens,
            input_audio_tokens,
            output_text_tokens: 0,
            output_audio_ms: 0,
        };
        out.push(ServerEvent::ResponseCreated {
            event_id: ids::event(),
            response: run.response("in_progress", None, false),
        });
        let reserved = run.input_text_tokens + run.input_audio_tokens + 4096;
        out.push(ServerEvent::RateLimitsUpdated {
            event_id: ids::event(),
            rate_limits: vec![
                RateLimit {
                    name: "requests".into(),
                    limit: 5000,
                    remaining: 4999,
                    reset_seconds: 0.012,
                },
                RateLimit {
                    name: "tokens".into(),
                    limit: 40_000,
                    remaining: 40_000u64.saturating_sub(reserved),
                    reset_seconds: reserved as f64 * 0.0015,
                },
            ],
        });
        run
    }

    /// Emits what is due now. Returns `true` when the response is finished (`response.done`
    /// has been appended to `out`).
    pub(crate) fn tick(&mut self, conv: &mut Conversation, out: &mut Vec<ServerEvent>) -> bool {
        loop {
            match self.parts.front_mut() {
                None => {
                    out.push(ServerEvent::ResponseDone {
                        event_id: ids::event(),
                        response: self.response("completed", None, true),
                    });
                    return true;
                }
                Some(Part::Speech(speech)) => {
                    if !speech.started {
                        speech.started = true;
                        let (id, index) = (speech.item_id.clone(), speech.output_index);
                        self.speech_started(&id, index, conv, out);
                    }
                    let Some(Part::Speech(speech)) = self.parts.front_mut() else {
                        continue;
                    };
                    if speech.sent < speech.total {
                        let end = (speech.sent + DELTA_BYTES).min(speech.total);
                        let end_ms = f64::from(audio::bytes_to_ms(end as u64));
                        speech.say_words(&self.id, end_ms / self.pace.ms_per_word, out);
                        out.push(ServerEvent::OutputAudioDelta {
                            event_id: ids::event(),
                            response_id: self.id.clone(),
                            item_id: speech.item_id.clone(),
                            output_index: speech.output_index,
                            content_index: 0,
                            delta: B64.encode(
                                self.options
                                    .format
                                    .encode_mulaw(&audio::voice(speech.sent, end)),
                            ),
                        });
                        self.output_audio_ms += ((end - speech.sent) / 8) as u64;
                        speech.sent = end;
                        if let Some(entry) = conv.get_mut(&speech.item_id) {
                            entry.audio_ms = audio::bytes_to_ms(end as u64);
                        }
                        if speech.sent < speech.total {
                            let step = self.pace.delta_interval;
                            self.next_at += step;
                            return false;
                        }
                    }
                    // Every word goes out by the end of the audio, whatever the rounding.
                    speech.say_words(&self.id, f64::INFINITY, out);
                    self.finish_speech("completed", conv, out);
                }
                Some(Part::Call(_)) => {
                    if let Some(Part::Call(call)) = self.parts.pop_front() {
                        self.emit_call(call, conv, out);
                    }
                }
            }
        }
    }

    /// Cancels the response (`turn_detected` or `client_cancelled`): the speech in progress
    /// ends where it is, nothing else is produced, and `response.done` says `cancelled`.
    pub(crate) fn cancel(
        &mut self,
        reason: &str,
        conv: &mut Conversation,
        out: &mut Vec<ServerEvent>,
    ) {
        if let Some(Part::Speech(speech)) = self.parts.front()
            && speech.started
        {
            self.finish_speech("incomplete", conv, out);
        }
        self.parts.clear();
        let details = StatusDetails {
            kind: Some("cancelled".into()),
            reason: Some(reason.into()),
            error: None,
        };
        out.push(ServerEvent::ResponseDone {
            event_id: ids::event(),
            response: self.response("cancelled", Some(details), true),
        });
    }

    fn speech_started(
        &mut self,
        item_id: &str,
        output_index: u32,
        conv: &mut Conversation,
        out: &mut Vec<ServerEvent>,
    ) {
        let item = Item::Message {
            id: Some(item_id.to_string()),
            role: "assistant".into(),
            content: Vec::new(),
            status: Some("in_progress".into()),
        };
        out.push(ServerEvent::OutputItemAdded {
            event_id: ids::event(),
            response_id: self.id.clone(),
            output_index,
            item: item.clone(),
        });
        if self.options.in_conversation {
            let previous_item_id = conv.push(Entry {
                item: item.clone(),
                audio_ms: 0,
                assistant_audio: true,
            });
            out.push(ServerEvent::ConversationItemAdded {
                event_id: ids::event(),
                previous_item_id,
                item,
            });
        }
        out.push(ServerEvent::ContentPartAdded {
            event_id: ids::event(),
            response_id: self.id.clone(),
            item_id: item_id.to_string(),
            output_index,
            content_index: 0,
            part: Some(ResponsePart::Audio {
                transcript: Some(String::new()),
            }),
        });
    }

    /// Closes the speech at the front: `status` is `completed`, or `incomplete` when cut short.
    fn finish_speech(&mut self, status: &str, conv: &mut Conversation, out: &mut Vec<ServerEvent>) {
        let Some(Part::Speech(speech)) = self.parts.pop_front() else {
            return;
        };
        let transcript = speech.transcript_so_far();
        self.output_text_tokens += word_tokens(&transcript);
        let (id, index) = (speech.item_id.clone(), speech.output_index);
        out.push(ServerEvent::OutputAudioDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            item_id: id.clone(),
            output_index: index,
            content_index: 0,
        });
        out.push(ServerEvent::OutputAudioTranscriptDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            item_id: id.clone(),
            output_index: index,
            content_index: 0,
            transcript: transcript.clone(),
        });
        out.push(ServerEvent::ContentPartDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            item_id: id.clone(),
            output_index: index,
            content_index: 0,
            part: Some(ResponsePart::Audio {
                transcript: Some(transcript.clone()),
            }),
        });
        let part = ContentPart::OutputAudio {
            transcript: Some(transcript.clone()),
        };
        let item = Item::Message {
            id: Some(id.clone()),
            role: "assistant".into(),
            content: vec![part],
            status: Some(status.into()),
        };
        out.push(ServerEvent::OutputItemDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            output_index: index,
            item: item.clone(),
        });
        if self.options.in_conversation {
            conv.set_transcript(&id, &transcript, Some(status));
            out.push(ServerEvent::ConversationItemDone {
                event_id: ids::event(),
                previous_item_id: None,
                item: item.clone(),
            });
        }
        self.output.push(item);
    }

    fn emit_call(
        &mut self,
        call: ScriptedCall,
        conv: &mut Conversation,
        out: &mut Vec<ServerEvent>,
    ) {
        let output_index = self.output.len() as u32;
        let item_id = ids::new("item");
        let call_id = ids::new("call");
        let added = Item::FunctionCall {
            id: Some(item_id.clone()),
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: String::new(),
            status: Some("in_progress".into()),
        };
        out.push(ServerEvent::OutputItemAdded {
            event_id: ids::event(),
            response_id: self.id.clone(),
            output_index,
            item: added.clone(),
        });
        if self.options.in_conversation {
            out.push(ServerEvent::ConversationItemAdded {
                event_id: ids::event(),
                previous_item_id: conv.last_id(),
                item: added,
            });
        }
        let chars: Vec<char> = call.arguments.chars().collect();
        for piece in chars.chunks(16) {
            out.push(ServerEvent::FunctionCallArgumentsDelta {
                event_id: ids::event(),
                response_id: self.id.clone(),
                item_id: item_id.clone(),
                output_index,
                call_id: call_id.clone(),
                delta: piece.iter().collect(),
            });
        }
        out.push(ServerEvent::FunctionCallArgumentsDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            item_id: item_id.clone(),
            output_index,
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let item = Item::FunctionCall {
            id: Some(item_id),
            call_id,
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            status: Some("completed".into()),
        };
        out.push(ServerEvent::OutputItemDone {
            event_id: ids::event(),
            response_id: self.id.clone(),
            output_index,
            item: item.clone(),
        });
        if self.options.in_conversation {
            let previous_item_id = conv.push(Entry {
                item: item.clone(),
                audio_ms: 0,
                assistant_audio: false,
            });
            out.push(ServerEvent::ConversationItemDone {
                event_id: ids::event(),
                previous_item_id,
                item: item.clone(),
            });
        }
        self.output_text_tokens += (call.name.len() + call.arguments.len()) as u64 / 4 + 4;
        self.output.push(item);
    }

    fn response(&self, status: &str, details: Option<StatusDetails>, done: bool) -> Response {
        let usage = done.then(|| {
            let input = self.input_text_tokens + self.input_audio_tokens;
            let output_audio = self.output_audio_ms / 50;
            let output = self.output_text_tokens + output_audio;
            let cached_text = self.options.cached_tokens.0.min(self.input_text_tokens);
            let cached_audio = self.options.cached_tokens.1.min(self.input_audio_tokens);
            Usage {
                total_tokens: input + output,
                input_tokens: input,
                output_tokens: output,
                input_token_details: Some(InputTokenDetails {
                    text_tokens: self.input_text_tokens,
                    audio_tokens: self.input_audio_tokens,
                    image_tokens: 0,
                    cached_tokens: cached_text + cached_audio,
                    cached_tokens_details: Some(CachedTokenDetails {
                        text_tokens: cached_text,
                        audio_tokens: cached_audio,
                        image_tokens: 0,
                    }),
                }),
                output_token_details: Some(OutputTokenDetails {
                    text_tokens: self.output_text_tokens,
                    audio_tokens: output_audio,
                }),
            }
        });
        Response {
            id: self.id.clone(),
            object: Some("realtime.response".into()),
            status: status.into(),
            status_details: details,
            output: if done {
                self.output.clone()
            } else {
                Vec::new()
            },
            usage,
            conversation_id: self.options.conversation_id.clone(),
            metadata: self.options.metadata.clone(),
        }
    }

    /// Input tokens this response read, text and audio (the next response finds them cached).
    pub(crate) fn input_tokens(&self) -> (u64, u64) {
        (self.input_text_tokens, self.input_audio_tokens)
    }

    /// Whether the response has produced audio (after which the session's voice is locked).
    pub(crate) fn spoke(&self) -> bool {
        self.output_audio_ms > 0
    }
}
