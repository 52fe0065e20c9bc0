//! What the caller has actually heard of the assistant's audio.
//!
//! Over a WebSocket the model cannot know how much of its audio was played, and Twilio buffers
//! seconds of it. The only truth is Twilio's mark echoes: after each chunk of audio we send a
//! mark, and Twilio echoes it once everything before it has played. [`Playback`] remembers, per
//! mark, which item it ends and how many bytes of that item were sent up to it, so an echo turns
//! into "heard bytes" and a barge-in into an exact `conversation.item.truncate`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// mu-law at 8 kHz: 8 bytes per millisecond.
pub const BYTES_PER_MS: u64 = 8;

/// A mark sent but not yet echoed. One is made per 100 ms of assistant audio, so it is kept
/// small: its name is its number, and the ids are shared (`Arc`) with the marks before it.
#[derive(Debug, Clone)]
struct PendingMark {
    number: u64,
    item_id: Arc<str>,
    response_id: Arc<str>,
    /// Bytes of the item sent up to and including the chunk this mark follows.
    end_bytes: u64,
}

/// Audio of one assistant item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemAudio {
    /// The response that produced the item.
    pub response_id: String,
    /// Bytes sent to the gateway.
    pub sent_bytes: u64,
    /// Bytes Twilio confirmed as played (via mark echoes).
    pub heard_bytes: u64,
}

impl ItemAudio {
    /// Milliseconds sent.
    pub fn sent_ms(&self) -> u32 {
        bytes_to_ms(self.sent_bytes)
    }

    /// Milliseconds heard.
    pub fn heard_ms(&self) -> u32 {
        bytes_to_ms(self.heard_bytes)
    }
}

fn bytes_to_ms(bytes: u64) -> u32 {
    u32::try_from(bytes / BYTES_PER_MS).unwrap_or(u32::MAX)
}

/// What a barge-in cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// `(item_id, audio_end_ms)` for `conversation.item.truncate` of the item playing; `None`
    /// when nothing of it was heard (the server refuses a truncate to 0 ms; the item is in
    /// `unheard` instead).
    pub truncate: Option<(String, u32)>,
    /// Items with audio sent of which the caller heard nothing: the one playing if 0 ms of it was
    /// heard, and every one queued behind it. They go with `conversation.item.delete`.
    pub unheard: Vec<String>,
    /// Every item that still had audio queued, with the milliseconds heard of it.
    pub items: Vec<(String, u32)>,
}

/// Mark bookkeeping of one call.
#[derive(Debug, Default)]
pub struct Playback {
    next_mark: u64,
    pending: VecDeque<PendingMark>,
    items: HashMap<String, ItemAudio>,
    /// The ids of the last audio sent (item, response), shared by its marks.
    last_ids: Option<(Arc<str>, Arc<str>)>,
}

/// The number of a mark name we made (`1`, `2`, ...: decimal, no sign, no leading zero).
fn mark_number(name: &str) -> Option<u64> {
    let canonical = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name.len() == 1 || !name.starts_with('0'));
    canonical.then(|| name.parse().ok()).flatten()
}

impl Playback {
    /// Empty bookkeeping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `len` bytes of `item_id` went out and returns the name of the mark to send
    /// right after them (unique within the call).
    pub fn sent(&mut self, item_id: &str, response_id: &str, len: usize) -> String {
        self.next_mark += 1;
        if !self.items.contains_key(item_id) {
            self.items.insert(
                item_id.to_owned(),
                ItemAudio {
                    response_id: response_id.to_owned(),
                    ..Default::default()
                },
            );
        }
        let end_bytes = match self.items.get_mut(item_id) {
            Some(item) => {
                item.sent_bytes += len as u64;
                item.sent_bytes
            }
            None => len as u64,
        };
        let (item, response) = match &self.last_ids {
            Some((i, r)) if **i == *item_id && **r == *response_id => (i.clone(), r.clone()),
            _ => {
                let ids: (Arc<str>, Arc<str>) = (item_id.into(), response_id.into());
                self.last_ids = Some(ids.clone());
                ids
            }
        };
        self.pending.push_back(PendingMark {
            number: self.next_mark,
            item_id: item,
            response_id: response,
            end_bytes,
        });
        self.next_mark.to_string()
    }

    /// Handles a mark echo. Twilio plays in order, so the echo also settles every earlier mark.
    /// Returns false for a mark we do not wait for (e.g. echoed after a `clear`), which is
    /// ignored.
    pub fn echoed(&mut self, name: &str) -> bool {
        let Some(number) = mark_number(name) else {
            return false;
        };
        let Some(pos) = self.pending.iter().position(|m| m.number == number) else {
            return false;
        };
        for mark in self.pending.drain(..=pos) {
            if let Some(item) = self.items.get_mut(&*mark.item_id) {
                item.heard_bytes = item.heard_bytes.max(mark.end_bytes);
            }
        }
        true
    }

    /// Whether any assistant audio is queued or playing at Twilio.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether audio of `item_id` is queued or playing.
    pub fn item_pending(&self, item_id: &str) -> bool {
        self.pending.iter().any(|m| *m.item_id == *item_id)
    }

    /// Whether audio of `response_id` is queued or playing.
    pub fn response_pending(&self, response_id: &str) -> bool {
        self.pending.iter().any(|m| *m.response_id == *response_id)
    }

    /// The audio figures of an item (`None` if none of its audio was sent).
    pub fn item(&self, item_id: &str) -> Option<&ItemAudio> {
        self.items.get(item_id)
    }

    /// Milliseconds of `item_id` the caller heard.
    pub fn heard_ms(&self, item_id: &str) -> u32 {
        self.items.get(item_id).map_or(0, ItemAudio::heard_ms)
    }

    /// The caller started speaking: if assistant audio is still queued or playing, returns what
    /// to truncate and drops the pending marks (the gateway is told to `clear`). `None` when
    /// nothing is pending, so no spurious truncate is ever sent.
    pub fn interrupt(&mut self) -> Option<Interruption> {
        let playing = self.pending.front()?.item_id.to_string();
        let mut items: Vec<(String, u32)> = Vec::new();
        for mark in self.pending.drain(..) {
            if !items.iter().any(|(id, _)| **id == *mark.item_id) {
                let heard = self
                    .items
                    .get(&*mark.item_id)
                    .map_or(0, ItemAudio::heard_ms);
                items.push((mark.item_id.to_string(), heard));
            }
        }
        let truncate = self.items.get(&playing).and_then(|a| {
            let end = a.heard_ms().min(a.sent_ms());
            (end > 0).then(|| (playing.clone(), end))
        });
        let unheard = items
            .iter()
            .filter(|(id, _)| truncate.as_ref().is_none_or(|(t, _)| t != id))
            .map(|(id, _)| id.clone())
            .collect();
        Some(Interruption {
            truncate,
            unheard,
            items,
        })
    }

    /// Drops the figures of an item whose fate has been recorded.
    pub fn forget(&mut self, item_id: &str) {
        if !self.item_pending(item_id) {
            self.items.remove(item_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_accumulate_heard_bytes() {
        let mut p = Playback::new();
        let m1 = p.sent("i1", "r1", 800);
        let m2 = p.sent("i1", "r1", 800);
        let m3 = p.sent("i1", "r1", 400);
        assert_ne!(m1, m2);
        assert!(p.has_pending() && p.item_pending("i1") && p.response_pending("r1"));
        assert!(p.echoed(&m1));
        assert_eq!(p.heard_ms("i1"), 100);
        // An echo settles every mark before it.
        assert!(p.echoed(&m3));
        assert_eq!(p.heard_ms("i1"), 250);
        assert!(!p.has_pending());
        assert!(!p.echoed(&m2), "already settled");
        assert_eq!(p.item("i1").unwrap().sent_ms(), 250);
    }

    #[test]
    fn unknown_marks_are_ignored() {
        let mut p = Playback::new();
        p.sent("i1", "r1", 800);
        assert!(!p.echoed("nope"));
        // Only the exact names we made count.
        for name in ["", "01", "+1", "1 ", "2"] {
            assert!(!p.echoed(name), "{name:?}");
        }
        assert!(p.has_pending());
    }

    #[test]
    fn interrupt_truncates_to_heard() {
        let mut p = Playback::new();
        let m1 = p.sent("i1", "r1", 800);
        p.sent("i1", "r1", 800);
        p.sent("i1", "r1", 800);
        p.echoed(&m1);
        let cut = p.interrupt().unwrap();
        assert_eq!(cut.truncate, Some(("i1".to_owned(), 100)));
        assert!(cut.unheard.is_empty());
        assert_eq!(cut.items, vec![("i1".to_owned(), 100)]);
        assert!(!p.has_pending());
        // Late echoes after the clear are ignored.
        assert!(!p.echoed("2"));
        assert_eq!(p.heard_ms("i1"), 100);
    }

    #[test]
    fn nothing_pending_means_no_interruption() {
        let mut p = Playback::new();
        assert_eq!(p.interrupt(), None);
        let m = p.sent("i1", "r1", 800);
        p.echoed(&m);
        assert_eq!(p.interrupt(), None);
    }

    #[test]
    fn nothing_heard_means_delete_instead_of_truncate() {
        let mut p = Playback::new();
        p.sent("i1", "r1", 800);
        p.sent("i2", "r2", 800);
        let cut = p.interrupt().unwrap();
        assert_eq!(cut.truncate, None);
        assert_eq!(cut.unheard, vec!["i1".to_owned(), "i2".to_owned()]);
        assert_eq!(cut.items, vec![("i1".to_owned(), 0), ("i2".to_owned(), 0)]);
    }

    #[test]
    fn interrupt_truncates_the_item_playing_and_reports_later_ones() {
        let mut p = Playback::new();
        let a = p.sent("i1", "r1", 1600);
        p.sent("i1", "r1", 800);
        p.sent("i2", "r2", 800);
        p.echoed(&a);
        let cut = p.interrupt().unwrap();
        assert_eq!(cut.truncate, Some(("i1".to_owned(), 200)));
        assert_eq!(cut.unheard, vec!["i2".to_owned()], "queued behind: deleted");
        assert_eq!(
            cut.items,
            vec![("i1".to_owned(), 200), ("i2".to_owned(), 0)]
        );
    }

    #[test]
    fn forget_keeps_items_with_pending_audio() {
        let mut p = Playback::new();
        let m = p.sent("i1", "r1", 800);
        p.forget("i1");
        assert!(p.item("i1").is_some());
        p.echoed(&m);
        p.forget("i1");
        assert!(p.item("i1").is_none());
    }
}
