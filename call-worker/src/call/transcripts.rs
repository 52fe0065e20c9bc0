//! The call's transcript: what the assistant said as the caller heard it, and when the caller
//! spoke.
//!
//! An assistant item is recorded once its fate is known: its response is done and its audio
//! either fully played or cut off by a barge-in (then it is recorded as interrupted, with how
//! much of it was heard). Events about an item that arrive after it was recorded or cut are
//! ignored, and its late audio is not played. What the caller heard comes from
//! [`Playback`]'s mark echoes.

use std::collections::{HashMap, HashSet};

use switchboard_proto::{Role, TranscriptEntry};

use crate::playback::Playback;

/// An assistant item waiting for its fate to be known.
#[derive(Debug, Default)]
struct Pending {
    item_id: String,
    response_id: String,
    offset_ms: u32,
    transcript: Option<String>,
    partial: String,
    response_done: bool,
    interrupted: bool,
    heard_ms: u32,
}

/// The transcript bookkeeping of one call.
#[derive(Debug, Default)]
pub struct Transcripts {
    pending: Vec<Pending>,
    /// Assistant items already recorded; late events about them are ignored.
    recorded: HashSet<String>,
    /// Assistant items cut off by a barge-in or a lost session: their late audio is dropped.
    interrupted: HashSet<String>,
    /// When each caller speech item started, in ms from the start of the call.
    user_offsets: HashMap<String, u32>,
}

impl Transcripts {
    /// Whether `item_id` was already recorded.
    pub fn recorded(&self, item_id: &str) -> bool {
        self.recorded.contains(item_id)
    }

    /// Whether audio of `item_id` must not be played any more (cut off or recorded).
    pub fn silenced(&self, item_id: &str) -> bool {
        self.interrupted.contains(item_id) || self.recorded.contains(item_id)
    }

    /// Whether `item_id` waits for its fate.
    pub fn pending(&self, item_id: &str) -> bool {
        self.pending.iter().any(|e| e.item_id == item_id)
    }

    /// Starts following `item_id` of `response_id` (first heard of `offset_ms` into the call),
    /// unless it already is.
    pub fn track(&mut self, item_id: &str, response_id: &str, offset_ms: u32) {
        if !self.pending(item_id) {
            self.pending.push(Pending {
                item_id: item_id.to_owned(),
                response_id: response_id.to_owned(),
                offset_ms,
                ..Default::default()
            });
        }
    }

    fn get(&mut self, item_id: &str) -> Option<&mut Pending> {
        self.pending.iter_mut().find(|e| e.item_id == item_id)
    }

    /// More of an item's transcript, as it streams.
    pub fn delta(&mut self, item_id: &str, response_id: &str, offset_ms: u32, delta: &str) {
        self.track(item_id, response_id, offset_ms);
        if let Some(e) = self.get(item_id) {
            e.partial.push_str(delta);
        }
    }

    /// An item's whole transcript. With `only_if_missing`, a transcript already known stays.
    pub fn transcript(
        &mut self,
        item_id: &str,
        response_id: &str,
        offset_ms: u32,
        text: String,
        only_if_missing: bool,
    ) {
        self.track(item_id, response_id, offset_ms);
        if let Some(e) = self.get(item_id)
            && !(only_if_missing && e.transcript.is_some())
        {
            e.transcript = Some(text);
        }
    }

    /// Items were cut off, each after `heard_ms` of it was heard.
    pub fn cut(&mut self, items: Vec<(String, u32)>) {
        for (item_id, heard_ms) in items {
            if let Some(e) = self.get(&item_id) {
                e.interrupted = true;
                e.heard_ms = heard_ms;
            }
            self.interrupted.insert(item_id);
        }
    }

    /// Response `response_id` is done; a `cancelled` one's items count as interrupted where
    /// `heard` says they stopped.
    pub fn response_done(
        &mut self,
        response_id: &str,
        cancelled: bool,
        heard: impl Fn(&str) -> u32,
    ) {
        for e in self
            .pending
            .iter_mut()
            .filter(|e| e.response_id == response_id)
        {
            e.response_done = true;
            if cancelled && !e.interrupted {
                e.interrupted = true;
                e.heard_ms = heard(&e.item_id);
            }
        }
    }

    /// The session was lost: no response of it goes on, and the caller's speech in flight has
    /// no transcript coming.
    pub fn session_lost(&mut self) {
        for e in &mut self.pending {
            e.response_done = true;
        }
        self.user_offsets.clear();
    }

    /// The items of response `response_id` waiting for their fate.
    pub fn items_of<'a>(&'a self, response_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pending
            .iter()
            .filter(move |e| e.response_id == response_id)
            .map(|e| e.item_id.as_str())
    }

    /// The entries of every assistant item whose fate is known now: its response is done, and
    /// it was cut off or has fully played (`held` says whether audio of it still waits to be
    /// sent).
    pub fn settle(
        &mut self,
        playback: &mut Playback,
        held: impl Fn(&str) -> bool,
    ) -> Vec<TranscriptEntry> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let e = &self.pending[i];
            let settled = e.response_done
                && (e.interrupted || (!playback.item_pending(&e.item_id) && !held(&e.item_id)));
            if settled {
                let e = self.pending.remove(i);
                out.push(self.record(e, playback));
            } else {
                i += 1;
            }
        }
        out
    }

    /// The call ends: the entries of every item that said or played anything.
    pub fn finish(&mut self, playback: &mut Playback) -> Vec<TranscriptEntry> {
        let mut out = Vec::new();
        for e in std::mem::take(&mut self.pending) {
            if e.transcript.is_some()
                || !e.partial.is_empty()
                || playback.item(&e.item_id).is_some()
            {
                out.push(self.record(e, playback));
            }
        }
        out
    }

    fn record(&mut self, e: Pending, playback: &mut Playback) -> TranscriptEntry {
        let heard_ms = if e.interrupted {
            e.heard_ms
        } else {
            playback.heard_ms(&e.item_id)
        };
        playback.forget(&e.item_id);
        self.recorded.insert(e.item_id.clone());
        TranscriptEntry {
            redacted: Vec::new(),
            role: Role::Assistant as i32,
            text: e.transcript.unwrap_or(e.partial),
            item_id: e.item_id,
            interrupted: e.interrupted,
            heard_ms,
            offset_ms: e.offset_ms,
            audio_end_ms: 0,
        }
    }

    /// The caller started speaking (item `item_id`) `offset_ms` into the call.
    pub fn speech_started(&mut self, item_id: String, offset_ms: u32) {
        self.user_offsets.insert(item_id, offset_ms);
    }

    /// The caller's speech `item_id` was transcribed (or could not be): when it started.
    pub fn speech_done(&mut self, item_id: &str) -> Option<u32> {
        self.user_offsets.remove(item_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_recorded_once_its_response_is_done_and_it_was_cut_off() {
        let mut playback = Playback::new();
        let mut t = Transcripts::default();
        t.delta("i1", "r1", 100, "Hello ");
        t.delta("i1", "r1", 200, "there.");
        assert!(
            t.settle(&mut playback, |_| false).is_empty(),
            "response runs"
        );
        t.cut(vec![("i1".into(), 300)]);
        assert!(t.silenced("i1"));
        t.response_done("r1", false, |_| 0);
        let entries = t.settle(&mut playback, |_| false);
        assert_eq!(
            entries,
            vec![TranscriptEntry {
                redacted: Vec::new(),
                role: Role::Assistant as i32,
                text: "Hello there.".into(),
                item_id: "i1".into(),
                interrupted: true,
                heard_ms: 300,
                offset_ms: 100,
                audio_end_ms: 0,
            }]
        );
        assert!(t.recorded("i1"));
        assert!(
            t.settle(&mut playback, |_| false).is_empty(),
            "recorded once"
        );
    }

    #[test]
    fn a_full_transcript_wins_over_the_deltas_and_held_audio_delays_the_record() {
        let mut playback = Playback::new();
        let mut t = Transcripts::default();
        t.delta("i1", "r1", 0, "Hel");
        t.transcript("i1", "r1", 0, "Hello.".into(), false);
        t.transcript("i1", "r1", 0, "ignored".into(), true);
        t.response_done("r1", false, |_| 0);
        assert!(
            t.settle(&mut playback, |item| item == "i1").is_empty(),
            "its audio still waits to be sent"
        );
        let entries = t.settle(&mut playback, |_| false);
        assert_eq!(entries[0].text, "Hello.");
        assert!(!entries[0].interrupted);
    }

    #[test]
    fn a_cancelled_response_counts_as_interrupted_and_an_ending_call_records_what_was_said() {
        let mut playback = Playback::new();
        let mut t = Transcripts::default();
        t.delta("i1", "r1", 0, "Let me");
        t.response_done("r1", true, |_| 40);
        let entries = t.settle(&mut playback, |_| false);
        assert!(entries[0].interrupted);
        assert_eq!(entries[0].heard_ms, 40);

        t.track("i2", "r2", 10);
        t.delta("i3", "r2", 10, "Bye");
        let entries = t.finish(&mut playback);
        assert_eq!(entries.len(), 1, "an item that said nothing is left out");
        assert_eq!(entries[0].item_id, "i3");
    }

    #[test]
    fn caller_speech_offsets_are_kept_until_transcribed_or_the_session_is_lost() {
        let mut t = Transcripts::default();
        t.speech_started("u1".into(), 500);
        t.speech_started("u2".into(), 900);
        assert_eq!(t.speech_done("u1"), Some(500));
        assert_eq!(t.speech_done("u1"), None);
        t.session_lost();
        assert_eq!(t.speech_done("u2"), None);
    }
}
