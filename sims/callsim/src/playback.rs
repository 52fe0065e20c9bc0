//! Twilio's playback buffer for the audio the gateway sends: what the caller hears, and when.
//!
//! Outbound `media` is queued and played in order at 8 bytes per millisecond in real time; a
//! `mark` is due when everything queued before it has played (at once if nothing is queued);
//! `clear` drops whatever has not played yet and hands back the pending marks. All times are
//! offsets from the stream start, passed in by the caller, so the model is plain arithmetic and
//! can be tested without a clock.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_twilio::BYTES_PER_MS;

/// Gaps up to this long between played stretches are bridged in the reported segments (and in
/// the barge-in "playing for" measure): a frame's worth of jitter is not a new utterance.
pub const SEGMENT_GAP: Duration = Duration::from_millis(20);

/// The duration of `bytes` of mu-law audio.
pub fn audio_duration(bytes: usize) -> Duration {
    // 8 bytes per ms: one byte is 125 us.
    Duration::from_micros(bytes as u64 * 1000 / BYTES_PER_MS as u64)
}

/// One stretch of audio that played, in stream time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    pub start: Duration,
    pub end: Duration,
}

/// The play queue of one stream.
#[derive(Debug, Default)]
pub struct Playback {
    /// When everything queued so far will have played (or, after a clear, when playing stopped).
    busy_until: Duration,
    /// Start of the current run of audio (gaps up to [`SEGMENT_GAP`] bridged); `None` after a
    /// clear.
    run_start: Option<Duration>,
    /// Pending marks: (due time, name), in due order.
    marks: VecDeque<(Duration, String)>,
    /// Played (or scheduled to play) stretches.
    segments: Vec<Stretch>,
    /// All audio ever queued.
    queued: Duration,
    /// Audio dropped by `clear` before it played.
    dropped: Duration,
    /// Bytes received.
    received_bytes: u64,
}

impl Playback {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `bytes` of audio that arrived at `now`.
    pub fn push_audio(&mut self, now: Duration, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let len = audio_duration(bytes);
        self.received_bytes += bytes as u64;
        self.queued += len;
        if self.busy_until > now {
            // Still playing: the new audio follows on.
            self.busy_until += len;
            if let Some(last) = self.segments.last_mut() {
                last.end = self.busy_until;
            }
            return;
        }
        // Idle: playback starts now. A short underrun continues the current run, unless a
        // clear ended it.
        let gap = now - self.busy_until;
        let joins = gap <= SEGMENT_GAP && self.run_start.is_some();
        self.busy_until = now + len;
        match self.segments.last_mut() {
            Some(last) if joins => last.end = self.busy_until,
            _ => {
                self.segments.push(Stretch {
                    start: now,
                    end: self.busy_until,
                });
                self.run_start = Some(now);
            }
        }
    }

    /// Queues a mark that arrived at `now`; it is due when the audio queued before it has played.
    pub fn push_mark(&mut self, now: Duration, name: String) {
        let due = self.busy_until.max(now);
        self.marks.push_back((due, name));
    }

    /// When the next mark falls due.
    pub fn next_mark_due(&self) -> Option<Duration> {
        self.marks.front().map(|(due, _)| *due)
    }

    /// Removes and returns the marks due by `now`, with their due times.
    pub fn take_due_marks(&mut self, now: Duration) -> Vec<(String, Duration)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.marks.front() {
            if *at > now {
                break;
            }
            if let Some((at, name)) = self.marks.pop_front() {
                due.push((name, at));
            }
        }
        due
    }

    /// `clear` at `now`: drops the audio not yet played and returns the marks still pending
    /// (the caller decides whether they are echoed or dropped). Take due marks first.
    pub fn clear(&mut self, now: Duration) -> Vec<String> {
        if self.busy_until > now {
            self.dropped += self.busy_until - now;
            self.busy_until = now;
            if let Some(last) = self.segments.last_mut() {
                last.end = last.end.min(now);
            }
            if self.segments.last().is_some_and(|s| s.end <= s.start) {
                self.segments.pop();
            }
        }
        self.run_start = None;
        self.marks.drain(..).map(|(_, name)| name).collect()
    }

    /// Whether audio is playing at `now`.
    pub fn is_playing(&self, now: Duration) -> bool {
        self.busy_until > now
    }

    /// The last moment audio played, as of `now` (0 if nothing ever played).
    pub fn played_until(&self, now: Duration) -> Duration {
        self.busy_until.min(now)
    }

    /// How long the current run of audio has been playing at `now` (0 when nothing plays).
    pub fn playing_for(&self, now: Duration) -> Duration {
        match self.run_start {
            Some(start) if self.is_playing(now) => now.saturating_sub(start),
            _ => Duration::ZERO,
        }
    }

    /// Audio that has actually played by `now`.
    pub fn heard(&self, now: Duration) -> Duration {
        let unplayed = self.busy_until.saturating_sub(now);
        self.queued
            .saturating_sub(self.dropped)
            .saturating_sub(unplayed)
    }

    /// All audio received, played or not.
    pub fn received(&self) -> Duration {
        audio_duration(self.received_bytes as usize)
    }

    /// The stretches that played by `now` (a call ending at `now` cuts off the rest).
    pub fn segments(&self, now: Duration) -> Vec<Stretch> {
        self.segments
            .iter()
            .filter(|s| s.start < now)
            .map(|s| Stretch {
                start: s.start,
                end: s.end.min(now),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn marks_fall_due_when_their_audio_has_played() {
        let mut p = Playback::new();
        p.push_audio(ms(100), 8000); // 1 s
        p.push_mark(ms(100), "a".into());
        assert_eq!(p.next_mark_due(), Some(ms(1100)));
        assert!(p.take_due_marks(ms(1099)).is_empty());
        p.push_audio(ms(500), 1600); // follows on: plays 1100..1300
        p.push_mark(ms(500), "b".into());
        assert_eq!(p.take_due_marks(ms(1100)), vec![("a".to_owned(), ms(1100))]);
        assert_eq!(p.next_mark_due(), Some(ms(1300)));
        assert!(p.is_playing(ms(1299)));
        assert!(!p.is_playing(ms(1300)));
        assert_eq!(p.heard(ms(600)), ms(500));
        assert_eq!(p.heard(ms(5000)), ms(1200));
        // A mark with nothing queued is due at once.
        p.take_due_marks(ms(1300));
        p.push_mark(ms(2000), "c".into());
        assert_eq!(p.take_due_marks(ms(2000)), vec![("c".to_owned(), ms(2000))]);
        assert_eq!(
            p.segments(ms(5000)),
            vec![Stretch {
                start: ms(100),
                end: ms(1300)
            }]
        );
    }

    #[test]
    fn clear_drops_unplayed_audio_and_returns_pending_marks() {
        let mut p = Playback::new();
        p.push_audio(ms(0), 16000); // 2 s
        p.push_mark(ms(0), "tail".into());
        assert_eq!(p.clear(ms(500)), vec!["tail".to_owned()]);
        assert!(!p.is_playing(ms(500)));
        assert_eq!(p.played_until(ms(900)), ms(500));
        assert_eq!(p.heard(ms(10_000)), ms(500));
        assert_eq!(p.received(), ms(2000));
        p.push_audio(ms(800), 1600);
        assert_eq!(p.heard(ms(10_000)), ms(700));
        assert_eq!(
            p.segments(ms(10_000)),
            vec![
                Stretch {
                    start: ms(0),
                    end: ms(500)
                },
                Stretch {
                    start: ms(800),
                    end: ms(1000)
                }
            ]
        );
        // A call that ends mid-stretch heard only up to its end.
        assert_eq!(p.heard(ms(900)), ms(600));
        assert_eq!(p.segments(ms(900))[1].end, ms(900));
    }

    #[test]
    fn runs_bridge_small_gaps_and_reset_on_clear() {
        let mut p = Playback::new();
        p.push_audio(ms(0), 800); // 0..100
        p.push_audio(ms(110), 800); // 110..210, a 10 ms underrun
        assert_eq!(p.playing_for(ms(200)), ms(200));
        assert_eq!(p.segments(ms(1000)).len(), 1);
        p.push_audio(ms(400), 800); // 400..500: a new run
        assert_eq!(p.playing_for(ms(450)), ms(50));
        assert_eq!(p.segments(ms(1000)).len(), 2);
        assert_eq!(p.playing_for(ms(600)), Duration::ZERO);
        p.push_audio(ms(600), 800);
        p.clear(ms(650));
        assert_eq!(p.playing_for(ms(650)), Duration::ZERO);
        // The bridged gap is not counted as heard.
        assert_eq!(p.heard(ms(1000)), ms(350));
    }
}
