//! The replay ring: the last few seconds of a call's inbound audio, kept by the stream actor so
//! that what the caller said while the call had no live owner reaches the next one.
//!
//! Every inbound audio frame goes in (its payload is a reference-counted `Bytes`, so keeping it
//! costs no copy); frames older than [`REPLAY_WINDOW`] by arrival time, and the oldest frames
//! beyond [`REPLAY_MAX_BYTES`], fall out. After a takeover commits, the ring is sent to the new
//! owner in order as `InboundAudio { replayed: true }` with the original Twilio timestamps; the
//! owner skips what its transcript already holds. The bytes held by all rings are counted in
//! `gateway_replay_ring_bytes`.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_proto::InboundAudio;
use tokio::time::Instant;

use crate::metrics as m;

/// How much recent caller audio the ring keeps: longer than detection (`WORKER_SILENCE_MS`)
/// plus a quick takeover, so a question asked while the owner died is still whole.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(8);

/// The most payload bytes one ring holds, whatever the frames' timing: twice the window's worth
/// of 8 kHz mu-law, so a caller sending faster than real time cannot grow it further.
pub const REPLAY_MAX_BYTES: usize = 2 * 8_000 * 8;

/// Recent inbound audio of one stream, stamped with its arrival.
#[derive(Debug, Default)]
pub struct ReplayRing {
    frames: VecDeque<(Instant, InboundAudio)>,
    bytes: usize,
}

impl ReplayRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `audio`, which arrived at `now`, and lets go of what is too old or too much.
    pub fn push(&mut self, now: Instant, audio: InboundAudio) {
        let before = self.bytes;
        self.bytes += audio.payload.len();
        self.frames.push_back((now, audio));
        let oldest = now.checked_sub(REPLAY_WINDOW);
        while let Some((at, front)) = self.frames.front() {
            let expired = oldest.is_some_and(|oldest| *at < oldest);
            if !expired && self.bytes <= REPLAY_MAX_BYTES {
                break;
            }
            self.bytes -= front.payload.len();
            self.frames.pop_front();
        }
        // Once the ring is full a frame comes in as one goes out: the gauge is touched only when
        // the ring's size changes, not for every frame of the media path.
        if self.bytes != before {
            metrics::gauge!(m::REPLAY_RING_BYTES).increment(self.bytes as f64 - before as f64);
        }
    }

    /// The frames kept, oldest first, marked `replayed` (the ring keeps them: a later takeover
    /// replays them again, and the owner skips what it already has).
    pub fn replay(&self) -> impl Iterator<Item = InboundAudio> + '_ {
        self.frames.iter().map(|(_, audio)| InboundAudio {
            replayed: true,
            ..audio.clone()
        })
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for ReplayRing {
    fn drop(&mut self) {
        metrics::gauge!(m::REPLAY_RING_BYTES).decrement(self.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(timestamp_ms: u32) -> InboundAudio {
        InboundAudio {
            payload: Bytes::from(vec![0xff; 160]),
            timestamp_ms,
            chunk: timestamp_ms / 20 + 1,
            replayed: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_last_window_by_arrival_in_order() {
        let mut ring = ReplayRing::new();
        // 10 s of real-time audio: only the last 8 s stay.
        for i in 0..500u32 {
            ring.push(Instant::now(), frame(i * 20));
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        assert_eq!(ring.len(), 401, "8 s of 20 ms frames, both ends included");
        assert_eq!(ring.bytes(), 401 * 160);
        let replayed: Vec<_> = ring.replay().collect();
        assert!(replayed.iter().all(|a| a.replayed));
        assert_eq!(replayed.first().map(|a| a.timestamp_ms), Some(99 * 20));
        assert_eq!(replayed.last().map(|a| a.timestamp_ms), Some(499 * 20));
        assert!(
            replayed
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_faster_than_real_time_is_bounded_by_bytes() {
        let mut ring = ReplayRing::new();
        for i in 0..10_000u32 {
            ring.push(Instant::now(), frame(i * 20));
        }
        assert!(ring.bytes() <= REPLAY_MAX_BYTES);
        assert_eq!(ring.len(), REPLAY_MAX_BYTES / 160);
        assert_eq!(
            ring.replay().last().map(|a| a.timestamp_ms),
            Some(9_999 * 20),
            "the newest audio is the one kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_audio_falls_out_after_a_pause() {
        let mut ring = ReplayRing::new();
        ring.push(Instant::now(), frame(0));
        tokio::time::advance(REPLAY_WINDOW + Duration::from_millis(1)).await;
        ring.push(Instant::now(), frame(8_020));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.replay().next().map(|a| a.timestamp_ms), Some(8_020));
    }
}
