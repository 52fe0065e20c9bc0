//! The recording a call's `ended` event carries.
//!
//! The gateway records each stream whose agent records (`StreamStart.recorded`) and, once the
//! stream ended and its WAV is stored (or storing it failed), sends a `StreamRecorded` frame on
//! the call's `.in` subject. A call usually ends the moment its stream does (the caller hung
//! up) or just before (the agent hung up, the call reached its maximum duration), so the WAV is
//! written after the call's end is decided: the actor holds the `ended` event until the last
//! recorded stream's `StreamRecorded` came, at most [`RECORDING_WAIT`], then publishes it with
//! the recording, or without it (logged and counted in
//! [`crate::metrics::ENDED_WITHOUT_RECORDING`]). The media path never waits for it: the call
//! is over by then.
//!
//! No wait when there is nothing to wait for: a stream that is not recorded, a call whose
//! stream never started or whose gateway is gone (`stream_lost`), and a worker past its drain
//! deadline (`worker_shutdown`), which must exit now.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use switchboard_proto::event::EndReason;
use switchboard_proto::{CallRecording, StreamRecorded, StreamStart};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait of `ended` for the recording, from the call's end: the gateway encodes and
/// stores an hour of call within it on storage nearby (it waits as long when it closes a lost
/// call's record itself). A slower store leaves `ended` without the recording; its `recording`
/// event still follows.
pub const RECORDING_WAIT: Duration = Duration::from_secs(5);

/// What the actor knows of the call's recordings.
#[derive(Debug, Default)]
pub struct Recordings {
    /// The last stream started, if it is recorded: the one whose recording `ended` carries.
    awaited: Option<String>,
    /// How the last stream recording reported went.
    done: Option<StreamRecorded>,
}

/// How waiting for the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The gateway reported the recording (stored or failed).
    Reported,
    /// Nothing came within [`RECORDING_WAIT`].
    Late,
    /// The worker's drain deadline passed meanwhile.
    Cancelled,
    /// The call's `.in` subscription ended.
    Closed,
}

impl Recordings {
    /// A stream started (or was resumed for this owner).
    pub fn on_start(&mut self, start: &StreamStart) {
        self.awaited = start.recorded.then(|| start.stream_sid.clone());
    }

    /// The gateway reported a stream's recording. A late report of an earlier stream never
    /// replaces the one awaited.
    pub fn on_recorded(&mut self, recorded: StreamRecorded) {
        if self.is_reported() && self.awaited.as_ref() != Some(&recorded.stream_sid) {
            return;
        }
        self.done = Some(recorded);
    }

    /// Whether the recording awaited was reported (or none is awaited).
    fn is_reported(&self) -> bool {
        match (&self.awaited, &self.done) {
            (None, _) => true,
            (Some(sid), Some(done)) => done.stream_sid == *sid,
            (Some(_), None) => false,
        }
    }

    /// Whether an `ended` of `reason` should wait for the recording.
    pub fn pending(&self, reason: Option<EndReason>) -> bool {
        let waits = !matches!(
            reason,
            Some(EndReason::WorkerShutdown | EndReason::StreamLost)
        );
        waits && !self.is_reported()
    }

    /// The recording `ended` carries: the last stream's, if it was stored.
    pub fn recording(&self) -> Option<CallRecording> {
        if !self.is_reported() {
            return None;
        }
        self.done.as_ref()?.recording.clone()
    }

    /// Why the recording is missing, for the log and metric, if it is: `failed` with the
    /// gateway's error, or `late`.
    pub fn missing(&self) -> Option<(&'static str, &str)> {
        self.awaited.as_ref()?;
        match &self.done {
            Some(done) if self.is_reported() && done.recording.is_none() => {
                Some(("failed", done.error.as_str()))
            }
            _ if self.is_reported() => None,
            _ => Some(("late", "")),
        }
    }

    /// Takes `frames` (the call's `StreamRecorded` frames) until the awaited recording was
    /// reported, `deadline` passes, or `cancel` fires.
    pub async fn wait(
        &mut self,
        frames: impl Stream<Item = StreamRecorded>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Waited {
        let mut frames = std::pin::pin!(frames);
        while !self.is_reported() {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(recorded) => self.on_recorded(recorded),
                    None => return Waited::Closed,
                },
                () = tokio::time::sleep_until(deadline) => return Waited::Late,
                () = cancel.cancelled() => return Waited::Cancelled,
            }
        }
        Waited::Reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// The frames of `rx` as a stream.
    fn frames(
        mut rx: mpsc::UnboundedReceiver<StreamRecorded>,
    ) -> impl Stream<Item = StreamRecorded> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn start(sid: &str, recorded: bool) -> StreamStart {
        StreamStart {
            stream_sid: sid.into(),
            recorded,
            ..Default::default()
        }
    }

    fn stored(sid: &str, attach: u32) -> StreamRecorded {
        StreamRecorded {
            attach,
            stream_sid: sid.into(),
            recording: Some(CallRecording {
                location: format!("CA1/{attach}.wav"),
                duration_ms: 4_200,
                channels: 2,
                bytes: 134_444,
                stream: attach,
            }),
            error: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ended_waits_for_the_recording_that_comes_after_the_stream() {
        let mut recordings = Recordings::default();
        recordings.on_start(&start("MZ1", true));
        assert!(recordings.pending(Some(EndReason::CallerHungUp)));
        assert_eq!(recordings.recording(), None);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(stored("MZ1", 1));
            // Kept open: the wait ends on the report, not on the channel.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let began = Instant::now();
        let waited = recordings
            .wait(
                frames(rx),
                began + RECORDING_WAIT,
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(waited, Waited::Reported);
        assert_eq!(began.elapsed(), Duration::from_millis(300));
        assert_eq!(
            recordings.recording().map(|r| r.location),
            Some("CA1/1.wav".into())
        );
        assert!(!recordings.pending(Some(EndReason::CallerHungUp)));
        assert_eq!(recordings.missing(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recording_not_stored_in_time_leaves_ended_without_it() {
        let mut recordings = Recordings::default();
        recordings.on_start(&start("MZ1", true));
        let (tx, rx) = mpsc::unbounded_channel::<StreamRecorded>();
        let began = Instant::now();
        let waited = recordings
            .wait(
                frames(rx),
                began + RECORDING_WAIT,
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(waited, Waited::Late);
        assert_eq!(began.elapsed(), RECORDING_WAIT);
        assert_eq!(recordings.recording(), None);
        assert_eq!(recordings.missing(), Some(("late", "")));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_deadline_cuts_the_wait_short() {
        let mut recordings = Recordings::default();
        recordings.on_start(&start("MZ1", true));
        let (_tx, rx) = mpsc::unbounded_channel::<StreamRecorded>();
        let cancel = CancellationToken::new();
        let fire = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fire.cancel();
        });
        let began = Instant::now();
        let waited = recordings
            .wait(frames(rx), began + RECORDING_WAIT, &cancel)
            .await;
        assert_eq!(waited, Waited::Cancelled);
        assert_eq!(began.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn a_failed_recording_is_reported_as_missing_with_its_reason() {
        let mut recordings = Recordings::default();
        recordings.on_start(&start("MZ1", true));
        recordings.on_recorded(StreamRecorded {
            attach: 1,
            stream_sid: "MZ1".into(),
            recording: None,
            error: "storing the recording at CA1/1.wav failed: 503".into(),
        });
        assert!(!recordings.pending(Some(EndReason::EndCall)));
        assert_eq!(recordings.recording(), None);
        assert_eq!(
            recordings.missing(),
            Some(("failed", "storing the recording at CA1/1.wav failed: 503"))
        );
    }

    #[test]
    fn ended_carries_the_last_streams_recording_only() {
        let mut recordings = Recordings::default();
        recordings.on_start(&start("MZ1", true));
        // The first stream's recording came while a transfer rang; the caller is back on a
        // new stream, whose recording is the one awaited.
        recordings.on_recorded(stored("MZ1", 1));
        recordings.on_start(&start("MZ2", true));
        assert!(recordings.pending(Some(EndReason::CallerHungUp)));
        assert_eq!(recordings.recording(), None);
        recordings.on_recorded(stored("MZ2", 2));
        // A late duplicate of the first never replaces it.
        recordings.on_recorded(stored("MZ1", 1));
        assert_eq!(
            recordings.recording().map(|r| r.location),
            Some("CA1/2.wav".into())
        );
    }

    #[test]
    fn nothing_is_awaited_without_a_recorded_stream_or_past_the_drain() {
        let mut recordings = Recordings::default();
        assert!(
            !recordings.pending(Some(EndReason::EndCall)),
            "no stream yet"
        );
        recordings.on_start(&start("MZ1", false));
        assert!(
            !recordings.pending(Some(EndReason::EndCall)),
            "not recorded"
        );
        assert_eq!(recordings.missing(), None);
        recordings.on_start(&start("MZ1", true));
        assert!(recordings.pending(Some(EndReason::MaxDuration)));
        assert!(!recordings.pending(Some(EndReason::WorkerShutdown)));
        assert!(!recordings.pending(Some(EndReason::StreamLost)));
    }
}
