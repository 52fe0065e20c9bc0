//! The conversation of one session: its items in order, how much assistant audio each item
//! has, and the latest function output (the source of `{{field}}` substitution).

use switchboard_realtime::{ContentPart, Item};

/// One conversation item and what the simulator knows about its audio.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The item, always with its `id` set.
    pub item: Item,
    /// Milliseconds of audio: sent so far for an assistant message, committed for a user one.
    pub audio_ms: u32,
    /// The item is assistant speech produced by the simulator (the only thing truncatable).
    pub assistant_audio: bool,
}

/// The items of a session, in conversation order.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    entries: Vec<Entry>,
    /// The parsed `output` of the most recent `function_call_output` item (`Null` when the
    /// output was not JSON, so every field substitutes as empty).
    pub last_output: Option<serde_json::Value>,
}

impl Conversation {
    /// The id of the last item, i.e. the `previous_item_id` of an item appended now.
    pub(crate) fn last_id(&self) -> Option<String> {
        self.entries
            .last()
            .and_then(|e| e.item.id())
            .map(str::to_string)
    }

    /// Inserts `entry` after `previous_item_id` (`root`: first; `None` or unknown: last) and
    /// returns the id of the item before it.
    pub(crate) fn insert(
        &mut self,
        entry: Entry,
        previous_item_id: Option<&str>,
    ) -> Option<String> {
        let index = match previous_item_id {
            Some("root") => 0,
            Some(prev) => self.position(prev).map_or(self.entries.len(), |i| i + 1),
            None => self.entries.len(),
        };
        let previous = index
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .and_then(|e| e.item.id())
            .map(str::to_string);
        self.entries.insert(index, entry);
        previous
    }

    /// Appends `entry`; returns the id of the item before it.
    pub(crate) fn push(&mut self, entry: Entry) -> Option<String> {
        self.insert(entry, None)
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.item.id() == Some(id))
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.item.id() == Some(id))
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.item.id() == Some(id))
    }

    /// Removes an item; `false` if there is none with that id.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.position(id) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether a `function_call` with `call_id` is in the conversation.
    pub(crate) fn has_call(&self, call_id: &str) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(&e.item, Item::FunctionCall { call_id: c, .. } if c == call_id))
    }

    /// Replaces the transcript of an assistant audio message (after truncation or when the
    /// speech finishes), and its status if given.
    pub(crate) fn set_transcript(&mut self, id: &str, transcript: &str, status: Option<&str>) {
        if let Some(Entry {
            item:
                Item::Message {
                    content,
                    status: item_status,
                    ..
                },
            ..
        }) = self.get_mut(id)
        {
            *content = vec![ContentPart::OutputAudio {
                transcript: Some(transcript.to_string()),
            }];
            if let Some(s) = status {
                *item_status = Some(s.to_string());
            }
        }
    }

    /// Sets the transcript of a user audio message (when transcription completes).
    pub(crate) fn set_user_transcript(&mut self, id: &str, transcript: &str) {
        if let Some(Entry {
            item: Item::Message { content, .. },
            ..
        }) = self.get_mut(id)
        {
            for part in content.iter_mut() {
                if let ContentPart::InputAudio { transcript: t, .. } = part {
                    *t = Some(transcript.to_string());
                }
            }
        }
    }

    /// A plausible size of the conversation as model input: text tokens (about 4 per 3
    /// words, 1 per 4 characters of JSON) and audio tokens (10 per second of caller audio, 20
    /// per second of assistant audio).
    pub(crate) fn input_tokens(&self, instructions: &str) -> (u64, u64) {
        let (mut text, mut audio) = (word_tokens(instructions), 0u64);
        for e in &self.entries {
            let (t, a) = e.tokens();
            text += t;
            audio += a;
        }
        (text, audio)
    }

    /// Server-side truncation: when the conversation after the instructions holds more than
    /// `limit` tokens, the oldest items are dropped until at most `retention * limit` remain.
    /// Returns whether anything was dropped (which also empties the prompt cache).
    pub(crate) fn truncate(&mut self, limit: u64, retention: f64) -> bool {
        let total: u64 = self
            .entries
            .iter()
            .map(|e| e.tokens().0 + e.tokens().1)
            .sum();
        if total <= limit {
            return false;
        }
        let keep = (limit as f64 * retention.clamp(0.0, 1.0)) as u64;
        let mut left = total;
        let mut drop = 0;
        while left > keep && drop < self.entries.len() {
            let (t, a) = self.entries[drop].tokens();
            left -= t + a;
            drop += 1;
        }
        self.entries.drain(..drop);
        drop > 0
    }
}

impl Entry {
    /// (text, audio) tokens of this item as model input.
    fn tokens(&self) -> (u64, u64) {
        match &self.item {
            Item::Message { role, .. } => {
                let text = word_tokens(&self.item.text()) + 4;
                let audio = if role == "user" {
                    u64::from(self.audio_ms) / 100
                } else if self.assistant_audio {
                    u64::from(self.audio_ms) / 50
                } else {
                    0
                };
                (text, audio)
            }
            Item::FunctionCall {
                name, arguments, ..
            } => ((name.len() + arguments.len()) as u64 / 4 + 4, 0),
            Item::FunctionCallOutput { output, .. } => (output.len() as u64 / 4 + 4, 0),
            Item::Other => (0, 0),
        }
    }
}

/// About 4 tokens per 3 words.
pub(crate) fn word_tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as u64 * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        let mut item = Item::user_text("hi");
        if let Item::Message { id: i, .. } = &mut item {
            *i = Some(id.into());
        }
        Entry {
            item,
            audio_ms: 0,
            assistant_audio: false,
        }
    }

    #[test]
    fn truncation_keeps_the_newest_items_within_the_retention() {
        let mut c = Conversation::default();
        for i in 0..10 {
            let mut e = entry(&format!("u{i}"));
            e.audio_ms = 10_000; // 100 audio tokens + 7 text tokens each
            c.push(e);
        }
        assert!(!c.truncate(2_000, 0.5), "under the limit: nothing dropped");
        assert!(c.truncate(800, 0.5));
        let (text, audio) = c.input_tokens("");
        assert!(text + audio <= 400, "{text} + {audio}");
        // The newest items are the ones kept.
        assert_eq!(c.last_id().as_deref(), Some("u9"));
        assert!(!c.contains("u0"));
    }

    #[test]
    fn inserts_where_asked() {
        let mut c = Conversation::default();
        assert_eq!(c.push(entry("a")), None);
        assert_eq!(c.push(entry("b")), Some("a".into()));
        assert_eq!(c.insert(entry("r"), Some("root")), None);
        assert_eq!(c.insert(entry("x"), Some("a")), Some("a".into()));
        let ids: Vec<_> = c.entries.iter().filter_map(|e| e.item.id()).collect();
        assert_eq!(ids, ["r", "a", "x", "b"]);
        assert_eq!(c.last_id().as_deref(), Some("b"));
        assert!(c.remove("x") && !c.remove("x"));
        assert!(!c.contains("x") && c.contains("r"));
    }
}
