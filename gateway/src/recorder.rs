//! Recording a call: the caller's audio on channel 0, what the caller heard of the agent on
//! channel 1, on the stream's clock.
//!
//! Why here: the gateway holds the media socket, so it sees the caller's audio, every frame it
//! writes to Twilio, every `clear` and every mark echo, and it stays the same while the call's
//! model session reconnects or its worker is replaced (a takeover changes the worker, never the
//! gateway). A recording made in the worker would have to be handed from owner to owner.
//!
//! Twilio plays the audio it gets through a playout buffer, so what the caller heard is not
//! what the gateway sent when it sent it. The [`Tape`] models that buffer: agent audio plays
//! after what is still queued; a `clear` removes what had not played yet; and every mark echo
//! says where playback really was, so the audio queued before it is moved to match (by the least
//! lateness of the burst's own echoes, or of the recent ones before it has any: a client may
//! send an echo late, never early, and may start playing a burst late). Both
//! channels are on the stream's clock: caller frames go where their media timestamps say; the
//! tape's zero is the arrival of `start` (one network trip after Twilio's zero; when `start`
//! was read late, the caller's frames, which can arrive late but never before they were
//! captured, show by how much, and the gateway's clock is moved back by it), and an echo
//! arrives two trips after its audio was sent, so shifting the agent's audio by the whole
//! lateness an echo shows puts it where Twilio played it. What the caller
//! never heard (cleared by a barge-in or a new owner's takeover, or still queued when the
//! stream ended) is not in it; any gap is silence.
//!
//! Nothing here delays the media path: the stream actor hands each event to a bounded queue
//! ([`Recording::tap`], never waiting; a full queue drops the event, counted in
//! [`m::RECORDING_DROPPED`]); a recorder task per stream keeps the part of the tape that can
//! still change (G.711 mu-law in memory) and writes what has settled, every
//! [`crate::spill::SPILL_SAMPLES`], as WAV frames to a temporary file ([`crate::spill`]), so a
//! call's memory stays bounded however long it lasts (at most [`MAX_RECORDING`] are recorded).
//! When the stream ends it writes the rest and the header, uploads the file to the recording
//! store (in parts when large) and publishes the call's `recording` event. An agent with `record = false` gets no recorder at all.
//!
//! The call's `ended` event carries the recording of its last stream: the recorder tells the
//! call's owner how the recording went with a `StreamRecorded` frame on the call's `.in`
//! subject (the owner holds `ended` for it a short while, see the call-worker's
//! `call::recording`), and the gateway's own record closing of a lost call waits for it
//! through [`Recording::done`]. A recording that could not be stored is reported as such
//! (`StreamRecorded.error`) and leaves `ended` without one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::event::recording_seq;
use switchboard_proto::{
    CallEvent, CallRecording, InboundFrame, Message as _, StreamRecorded, call_event,
    inbound_frame, now_ms,
};
use switchboard_service::events::EventPublisher;
use switchboard_service::recordings::{CHANNELS, RecordingStore, SAMPLE_RATE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::metrics as m;
use crate::shared::Shared;
use crate::spill::{Lost, SPILL_SAMPLES, Spill, Track};

/// Events queued to a recorder: about four seconds of both directions' frames, so a recorder
/// that falls behind for a moment (a busy CPU) loses nothing.
pub const TAP_CAPACITY: usize = 512;

/// The longest recording kept; audio after it is left out (and logged). Bounds one
/// recording's file to 230 MB.
pub const MAX_RECORDING: Duration = Duration::from_secs(2 * 60 * 60);

/// How long after its stream ended the call's end record waits for the recording to be stored
/// (the call-worker's wait for the `StreamRecorded` frame is the same): long enough to encode
/// and write an hour of call to S3-compatible storage nearby; a slower store leaves `ended`
/// without the recording, whose `recording` event still follows.
pub const RECORDING_WAIT: Duration = Duration::from_secs(5);

/// Longest time writing one recording to the store may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Samples per millisecond (8 kHz; one mu-law byte per sample).
const SAMPLES_PER_MS: u64 = SAMPLE_RATE as u64 / 1000;

/// Caller frames arrive with network jitter; one arriving up to this late still follows the
/// previous one directly. A later one starts where it arrived, after silence.
const JITTER_SAMPLES: usize = 60 * SAMPLES_PER_MS as usize;

/// A caller frame's media timestamp is believed unless it puts the frame before the previous
/// one or further than this after its arrival (a client sending nonsense).
const AHEAD_SAMPLES: usize = 1000 * SAMPLES_PER_MS as usize;

const MAX_SAMPLES: usize = MAX_RECORDING.as_secs() as usize * SAMPLE_RATE as usize;

/// One thing the stream actor saw, when it saw it.
#[derive(Debug, Clone)]
pub enum Tap {
    /// Caller audio (mu-law) read from the socket, with its media timestamp (milliseconds of
    /// stream time).
    Caller {
        at: Instant,
        timestamp_ms: u32,
        audio: Bytes,
    },
    /// Agent audio (mu-law) written to the socket.
    Agent { at: Instant, audio: Bytes },
    /// A mark written after the agent audio so far.
    Mark { at: Instant, name: String },
    /// Twilio echoed a mark: the audio before it has played.
    Echo { at: Instant, name: String },
    /// A `clear` written: what had not played is gone.
    Clear { at: Instant },
    /// The stream ended.
    End { at: Instant },
}

impl Tap {
    /// When the stream actor saw it.
    fn at(&self) -> Instant {
        match self {
            Self::Caller { at, .. }
            | Self::Agent { at, .. }
            | Self::Mark { at, .. }
            | Self::Echo { at, .. }
            | Self::Clear { at }
            | Self::End { at } => *at,
        }
    }
}

/// The stream actor's end of a recording: hands events to the recorder without waiting.
pub struct Recording {
    tx: mpsc::Sender<Tap>,
    dropped: metrics::Counter,
    done: watch::Receiver<Option<StreamRecorded>>,
}

impl Recording {
    /// Starts the recorder of stream `stream` (`stream_sid`) of `call_sid`, which started at
    /// `started`.
    pub fn start(
        shared: &Arc<Shared>,
        call_sid: &str,
        (stream, stream_sid): (u32, &str),
        started: Instant,
    ) -> Self {
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        let (done_tx, done) = watch::channel(None);
        let recorder = Recorder {
            call_sid: call_sid.to_owned(),
            stream,
            stream_sid: stream_sid.to_owned(),
            store: shared.recordings.clone(),
            events: shared.events.clone(),
            nats: shared.nats.clone(),
            in_subject: shared.subjects.call_in(call_sid),
            done: done_tx,
        };
        shared.tracker.spawn(
            recorder
                .run(rx, Tape::new(started))
                .instrument(tracing::Span::current()),
        );
        Self {
            tx,
            dropped: metrics::counter!(m::RECORDING_DROPPED),
            done,
        }
    }

    /// Hands `tap` to the recorder; drops it (counted) if the recorder is that far behind.
    pub fn tap(&self, tap: Tap) {
        if self.tx.try_send(tap).is_err() {
            self.dropped.increment(1);
        }
    }

    /// How the recording went, once the stream ended and it is stored (or failed).
    pub fn done(&self) -> RecordingDone {
        RecordingDone(self.done.clone())
    }
}

/// Waits for a stream's recording (see [`Recording::done`]).
#[derive(Debug, Clone)]
pub struct RecordingDone(watch::Receiver<Option<StreamRecorded>>);

impl RecordingDone {
    /// The stored recording, once the recorder finished; `None` if it failed or is not
    /// finished within `bound`.
    pub async fn within(mut self, bound: Duration) -> Option<CallRecording> {
        match tokio::time::timeout(bound, self.0.wait_for(Option::is_some)).await {
            Ok(Ok(done)) => done.as_ref().and_then(|d| d.recording.clone()),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!(
                    ?bound,
                    "the recording was not stored in time for the call's end"
                );
                None
            }
        }
    }
}

/// One stream's recorder task.
struct Recorder {
    call_sid: String,
    stream: u32,
    stream_sid: String,
    store: RecordingStore,
    events: EventPublisher,
    nats: async_nats::Client,
    /// `voice.call.<sid>.in`: the owner learns there how the recording went.
    in_subject: String,
    done: watch::Sender<Option<StreamRecorded>>,
}

/// Records one stream: applies the events of `rx` to `tape` until the stream's `End` (or
/// the queue closes: the tape ends at what it holds), writing what settles to a temporary
/// file, then stores the WAV at `location`. Returns the recording's duration and size, or why
/// there is none.
pub async fn record(
    rx: &mut mpsc::Receiver<Tap>,
    mut tape: Tape,
    store: &RecordingStore,
    location: &str,
) -> Result<(u64, u64), String> {
    let mut spill = Spill::create()
        .await
        .map_err(|error| format!("creating the recording's temporary file failed: {error}"));
    while let Some(tap) = rx.recv().await {
        let end = matches!(tap, Tap::End { .. });
        tape.apply(tap);
        if end {
            break;
        }
        if tape.settled_samples() >= SPILL_SAMPLES
            && let Ok(file) = &mut spill
        {
            let (caller, agent) = tape.take_settled();
            if let Err(error) = file.append(&caller, &agent).await {
                spill = Err(format!(
                    "writing the recording's temporary file failed: {error}"
                ));
            }
        }
    }
    let mut spill = spill?;
    let duration_ms = tape.duration_ms();
    let (caller, agent) = tape.finish();
    let written = async {
        spill.append(&caller, &agent).await?;
        spill.finish().await
    };
    let (mut file, bytes) = written
        .await
        .map_err(|error| format!("writing the recording's temporary file failed: {error}"))?;
    let put = store.put_file(location, &mut file, bytes);
    match tokio::time::timeout(UPLOAD_TIMEOUT, put).await {
        Ok(Ok(())) => Ok((duration_ms, bytes)),
        Ok(Err(error)) => Err(format!(
            "storing the recording at {location} failed: {error}"
        )),
        Err(_) => Err(format!(
            "storing the recording at {location} timed out after {UPLOAD_TIMEOUT:?}"
        )),
    }
}

impl Recorder {
    async fn run(self, mut rx: mpsc::Receiver<Tap>, tape: Tape) {
        let location = RecordingStore::location(&self.call_sid, self.stream);
        let stored = record(&mut rx, tape, &self.store, &location)
            .await
            .map(|(duration_ms, bytes)| self.stored(location, duration_ms, bytes));
        let recorded = match stored {
            Ok(recording) => {
                self.events.publish(CallEvent {
                    call_sid: self.call_sid.clone(),
                    seq: recording_seq(self.stream),
                    at_ms: now_ms(),
                    body: Some(call_event::Body::Recording(recording.clone())),
                });
                StreamRecorded {
                    attach: self.stream,
                    recording: Some(recording),
                    error: String::new(),
                    stream_sid: self.stream_sid.clone(),
                }
            }
            Err(error) => {
                metrics::counter!(m::RECORDINGS, "outcome" => m::RECORDING_FAILED).increment(1);
                tracing::error!(%error, "the call's recording was not stored");
                StreamRecorded {
                    attach: self.stream,
                    recording: None,
                    error,
                    stream_sid: self.stream_sid.clone(),
                }
            }
        };
        // Tells the owner (who holds `ended` for it) and the gateway's own record closing.
        let frame = InboundFrame {
            seq: 0,
            frame: Some(inbound_frame::Frame::Recorded(recorded.clone())),
        };
        if let Err(error) = self
            .nats
            .publish(self.in_subject, frame.encode_to_vec().into())
            .await
        {
            tracing::warn!(%error, "telling the owner about the recording failed");
        }
        self.done.send_replace(Some(recorded));
    }

    /// Counts and logs a stored recording.
    fn stored(&self, location: String, duration_ms: u64, bytes: u64) -> CallRecording {
        metrics::counter!(m::RECORDINGS, "outcome" => m::RECORDING_STORED).increment(1);
        metrics::counter!(m::RECORDING_BYTES).increment(bytes);
        tracing::info!(%location, duration_ms, bytes, "call recording stored");
        CallRecording {
            location,
            duration_ms,
            channels: u32::from(CHANNELS),
            bytes,
            stream: self.stream,
        }
    }
}

/// Agent audio sent, at the place it would play if Twilio played it the moment it was sent.
#[derive(Debug)]
struct Segment {
    start: usize,
    audio: Bytes,
}

/// Agent audio that plays back to back: sent while earlier audio was still queued at Twilio.
#[derive(Debug, Default)]
struct Burst {
    segments: Vec<Segment>,
    /// Where its audio ends, unshifted.
    end: usize,
}

/// Echoes whose lateness is remembered: an echo is late by the network round trip plus however
/// long the client took to send it, so the least of the recent ones is the truest round trip.
const ECHO_WINDOW: usize = 32;

/// Both channels of one stream, with a model of Twilio's playout buffer (see the module
/// documentation). Positions are samples since the stream started.
#[derive(Debug)]
pub struct Tape {
    started: Instant,
    /// The caller's channel (mu-law).
    caller: Track,
    /// Where the caller's next frame goes when it arrives on time.
    caller_next: usize,
    /// The agent's channel as played (mu-law).
    agent: Track,
    /// Where the earliest event not applied yet can be: events come in order.
    latest: usize,
    /// Samples lost because they were placed in a part already written out.
    late_samples: usize,
    /// The agent audio playing or queued now.
    burst: Burst,
    /// Counts bursts, so an echo is applied to its own.
    burst_id: u64,
    /// Where the previous burst's audio ended (unshifted, as far as it played): a new burst
    /// never plays over it, however late that one really played.
    after: usize,
    /// Marks placed and not echoed: name, burst, place in it (unshifted).
    marks: VecDeque<(String, u64, usize)>,
    /// The lateness of the last [`ECHO_WINDOW`] echoes.
    echoes: VecDeque<usize>,
    /// The least lateness of the current burst's own echoes: the client may have started
    /// playing it later than the network alone explains (its playout was busy), and all of
    /// the burst is that late.
    burst_lateness: Option<usize>,
    /// Where the stream ended.
    end: usize,
    /// Audio left out for [`MAX_RECORDING`].
    clipped: bool,
    /// How much later than one network trip after the stream's zero `start` was read (the
    /// gateway was busy): the least lateness of the caller's frames shows it, since a frame
    /// can arrive late but never before it was captured. Positions of the gateway's clock are
    /// moved by it onto the stream's.
    zero_fix: usize,
}

impl Tape {
    /// An empty tape of a stream that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            caller: Track::default(),
            caller_next: 0,
            agent: Track::default(),
            latest: 0,
            late_samples: 0,
            burst: Burst::default(),
            burst_id: 0,
            after: 0,
            marks: VecDeque::new(),
            echoes: VecDeque::with_capacity(ECHO_WINDOW),
            burst_lateness: None,
            end: 0,
            clipped: false,
            zero_fix: 0,
        }
    }

    fn position(&self, at: Instant) -> usize {
        let us = at.saturating_duration_since(self.started).as_micros() as u64;
        (us * SAMPLES_PER_MS / 1000) as usize
    }

    /// How late Twilio plays what the gateway sends, on the stream's clock: the least lateness
    /// of the current burst's echoes, or before it has any, of the recent echoes.
    fn shift(&self) -> usize {
        let recent = || self.echoes.iter().copied().min().unwrap_or(0);
        self.burst_lateness.unwrap_or_else(recent) + self.zero_fix
    }

    /// Whether audio sent at `now` joins the current burst (Twilio still has some of it to
    /// play: it arrives there as late as the burst plays) rather than starting a new one after
    /// silence.
    fn joins_burst(&self, now: usize) -> bool {
        !self.burst.segments.is_empty() && now < self.burst.end
    }

    /// Applies one event.
    pub fn apply(&mut self, tap: Tap) {
        self.latest = self.latest.max(self.position(tap.at()));
        match tap {
            Tap::Caller {
                at,
                timestamp_ms,
                audio,
            } => {
                // Twilio stamps each frame with its place on the stream's clock: that is where
                // it goes, whatever delayed its arrival. Without a believable stamp, a frame
                // follows the previous one unless it arrived after a real gap (it was read
                // once all of it was captured, so it started its length earlier).
                let arrived = self.position(at).saturating_sub(audio.len());
                let stamped = timestamp_ms as usize * SAMPLES_PER_MS as usize;
                let start = if stamped >= self.caller_next && stamped <= arrived + AHEAD_SAMPLES {
                    // Captured by `stamped + len`: arriving sooner means the zero is late.
                    let captured = stamped + audio.len();
                    self.zero_fix = self
                        .zero_fix
                        .max(captured.saturating_sub(self.position(at)));
                    stamped
                } else if arrived > self.caller_next + JITTER_SAMPLES {
                    arrived
                } else {
                    self.caller_next
                };
                self.caller_next = start + audio.len();
                let lost = self.caller.write(start, &audio, MAX_SAMPLES);
                self.note(lost);
            }
            Tap::Agent { at, audio } => {
                let now = self.position(at);
                let start = if self.joins_burst(now) {
                    self.burst.end
                } else {
                    self.commit(usize::MAX);
                    now.max(self.after)
                };
                self.burst.end = start + audio.len();
                self.burst.segments.push(Segment { start, audio });
            }
            Tap::Mark { at, name } => {
                let now = self.position(at);
                // A mark on an idle buffer comes back at once: it measures nothing of a burst.
                if self.joins_burst(now) {
                    self.marks.push_back((name, self.burst_id, self.burst.end));
                }
            }
            Tap::Echo { at, name } => {
                // Unknown: a mark a `clear` removed (Twilio echoes those at once) or not ours.
                let Some(index) = self.marks.iter().position(|(n, ..)| *n == name) else {
                    return;
                };
                let (_, burst, expected) =
                    self.marks.drain(..=index).next_back().expect("in range");
                if burst == self.burst_id {
                    if self.echoes.len() == ECHO_WINDOW {
                        self.echoes.pop_front();
                    }
                    let lateness = self.position(at).saturating_sub(expected);
                    self.echoes.push_back(lateness);
                    self.burst_lateness =
                        Some(self.burst_lateness.map_or(lateness, |l| l.min(lateness)));
                }
            }
            // Playback stops when the clear reaches Twilio: as late as the audio plays.
            Tap::Clear { at } => {
                let cut = self.position(at) + self.shift();
                self.commit(cut);
            }
            Tap::End { at } => {
                let end = self.position(at) + self.zero_fix;
                self.commit(end);
                self.end = self.end.max(end);
            }
        }
    }

    /// The current burst stopped playing at `cut` (on the stream's clock): what played goes
    /// into the agent's channel; the rest was never heard.
    fn commit(&mut self, cut: usize) {
        let shift = self.shift();
        for mut segment in std::mem::take(&mut self.burst.segments) {
            let start = segment.start + shift;
            if start >= cut {
                break;
            }
            segment.audio.truncate(cut - start);
            let lost = self.agent.write(start, &segment.audio, MAX_SAMPLES);
            self.note(lost);
        }
        self.after = self
            .after
            .max(self.burst.end.min(cut.saturating_sub(shift)));
        self.burst = Burst::default();
        self.burst_lateness = None;
        self.burst_id += 1;
        self.marks.clear();
    }

    /// Milliseconds of recording so far.
    pub fn duration_ms(&self) -> u64 {
        (self.length() as u64) / SAMPLES_PER_MS
    }

    fn length(&self) -> usize {
        let playing = if self.burst.segments.is_empty() {
            0
        } else {
            self.burst.end + self.shift()
        };
        self.end
            .max(self.caller.end())
            .max(self.agent.end())
            .max(playing)
            .min(MAX_SAMPLES)
    }

    /// Both channels as 16-bit PCM, of equal length (queued audio counts as played), from
    /// where [`Tape::take_settled`] left off.
    pub fn finish(mut self) -> (Vec<i16>, Vec<i16>) {
        let length = self.length();
        self.commit(usize::MAX);
        if self.clipped {
            tracing::warn!(limit = ?MAX_RECORDING, "the call was longer than a recording holds; the rest is not recorded");
        }
        if self.late_samples > 0 {
            tracing::warn!(
                samples = self.late_samples,
                "audio placed in a part of the recording already written was left out"
            );
        }
        (self.caller.take(length), self.agent.take(length))
    }

    fn note(&mut self, lost: Lost) {
        self.clipped |= lost.clipped;
        self.late_samples += lost.settled;
    }

    /// Where nothing can change any more: no caller frame goes before the next one's place,
    /// and no agent audio before the first still queued (or, with none queued, before where
    /// the previous ended or the latest event happened).
    fn settled(&self) -> usize {
        let agent = match self.burst.segments.first() {
            Some(first) => first.start,
            None => self.after.max(self.latest),
        };
        self.caller_next.min(agent).min(MAX_SAMPLES)
    }

    /// Samples settled and not taken yet.
    pub fn settled_samples(&self) -> usize {
        self.settled().saturating_sub(self.caller.base())
    }

    /// Takes both channels up to where they are settled, as 16-bit PCM of equal length: they
    /// go to the [`Spill`] file while the call goes on.
    pub fn take_settled(&mut self) -> (Vec<i16>, Vec<i16>) {
        let upto = self.settled();
        (self.caller.take(upto), self.agent.take(upto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_twilio::mulaw;

    const MS: usize = SAMPLES_PER_MS as usize;

    /// Loud mu-law (a constant near full scale).
    fn voice(ms: usize) -> Bytes {
        Bytes::from(vec![mulaw::encode(12_000); ms * MS])
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Milliseconds of `channel` that are not silence, as (start, end) runs.
    fn runs(channel: &[i16]) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, s) in channel.iter().enumerate() {
            match (start, s.unsigned_abs() > 1000) {
                (None, true) => start = Some(i),
                (Some(b), false) => {
                    runs.push((b / MS, i / MS));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(b) = start {
            runs.push((b / MS, channel.len() / MS));
        }
        runs
    }

    #[test]
    fn caller_frames_go_where_their_timestamps_say_whenever_they_arrive() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        // Frames of 0..80 ms, the third delayed 150 ms on the way; then 480..520 ms.
        for (stamp, read) in [
            (0, 20),
            (20, 40),
            (40, 210),
            (60, 211),
            (480, 500),
            (500, 520),
        ] {
            tape.apply(Tap::Caller {
                at: at(t0, read),
                timestamp_ms: stamp,
                audio: voice(20),
            });
        }
        tape.apply(Tap::End { at: at(t0, 600) });
        let (caller, _) = tape.finish();
        assert_eq!(runs(&caller), [(0, 80), (480, 520)]);
    }

    #[test]
    fn caller_frames_without_believable_timestamps_follow_each_other_through_jitter() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        // A client stamping every frame 0 (after the first) or far in the future: 20 ms frames
        // read at 20, 45 (late), 58 (early), 80 ms, then none until 500 ms.
        for (i, ms) in [20, 45, 58, 80, 500, 520].into_iter().enumerate() {
            tape.apply(Tap::Caller {
                at: at(t0, ms),
                timestamp_ms: if i == 3 { 3_600_000 } else { 0 },
                audio: voice(20),
            });
        }
        tape.apply(Tap::End { at: at(t0, 600) });
        assert_eq!(tape.duration_ms(), 600);
        let (caller, agent) = tape.finish();
        assert_eq!(caller.len(), 600 * MS);
        assert_eq!(runs(&caller), [(0, 80), (480, 520)]);
        assert!(runs(&agent).is_empty());
    }

    #[test]
    fn agent_audio_queues_behind_what_plays_and_a_clear_removes_the_unplayed_rest() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        // One second of answer sent in two bursts at 100 ms; the caller barges in at 400 ms.
        tape.apply(Tap::Agent {
            at: at(t0, 100),
            audio: voice(500),
        });
        tape.apply(Tap::Agent {
            at: at(t0, 101),
            audio: voice(500),
        });
        tape.apply(Tap::Mark {
            at: at(t0, 101),
            name: "m1".into(),
        });
        tape.apply(Tap::Clear { at: at(t0, 400) });
        // Twilio echoes the cleared mark at once; it says nothing about playback.
        tape.apply(Tap::Echo {
            at: at(t0, 401),
            name: "m1".into(),
        });
        tape.apply(Tap::End { at: at(t0, 2000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(100, 400)]);
    }

    #[test]
    fn a_late_echo_moves_the_audio_to_where_it_played() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        tape.apply(Tap::Agent {
            at: at(t0, 0),
            audio: voice(200),
        });
        tape.apply(Tap::Mark {
            at: at(t0, 0),
            name: "a".into(),
        });
        tape.apply(Tap::Agent {
            at: at(t0, 150),
            audio: voice(200),
        });
        tape.apply(Tap::Mark {
            at: at(t0, 150),
            name: "b".into(),
        });
        // Played 60 ms later than sent (a round trip): the first echo says so.
        tape.apply(Tap::Echo {
            at: at(t0, 260),
            name: "a".into(),
        });
        // A clear at 300 ms reaches Twilio a trip later: 360 ms of the caller's clock.
        tape.apply(Tap::Clear { at: at(t0, 300) });
        tape.apply(Tap::End { at: at(t0, 1000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(60, 360)]);
    }

    #[test]
    fn the_least_late_echo_of_a_burst_places_all_of_it_without_gaps() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        for (sent, mark) in [(0, "a"), (10, "b")] {
            tape.apply(Tap::Agent {
                at: at(t0, sent),
                audio: voice(200),
            });
            tape.apply(Tap::Mark {
                at: at(t0, sent),
                name: mark.into(),
            });
        }
        // The client sent the first echo 30 ms after it was due; the second on time.
        tape.apply(Tap::Echo {
            at: at(t0, 260),
            name: "a".into(),
        });
        tape.apply(Tap::Echo {
            at: at(t0, 430),
            name: "b".into(),
        });
        tape.apply(Tap::End { at: at(t0, 1000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(30, 430)]);
    }

    #[test]
    fn audio_sent_after_the_queue_ran_dry_plays_after_a_gap() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        tape.apply(Tap::Agent {
            at: at(t0, 0),
            audio: voice(200),
        });
        tape.apply(Tap::Mark {
            at: at(t0, 0),
            name: "a".into(),
        });
        tape.apply(Tap::Echo {
            at: at(t0, 230),
            name: "a".into(),
        });
        // The next delta comes 59 ms after the first one ran out: Twilio had nothing to play.
        tape.apply(Tap::Agent {
            at: at(t0, 259),
            audio: voice(200),
        });
        tape.apply(Tap::End { at: at(t0, 1000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(30, 230), (289, 489)]);
    }

    #[test]
    fn an_answer_after_silence_starts_when_sent_and_plays_as_late_as_the_last() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        tape.apply(Tap::Agent {
            at: at(t0, 0),
            audio: voice(100),
        });
        tape.apply(Tap::Mark {
            at: at(t0, 0),
            name: "a".into(),
        });
        tape.apply(Tap::Echo {
            at: at(t0, 130),
            name: "a".into(),
        });
        tape.apply(Tap::Agent {
            at: at(t0, 1000),
            audio: voice(100),
        });
        tape.apply(Tap::End { at: at(t0, 2000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(30, 130), (1030, 1130)]);
    }

    #[test]
    fn audio_still_queued_when_the_stream_ends_was_not_heard() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        tape.apply(Tap::Agent {
            at: at(t0, 0),
            audio: voice(3000),
        });
        tape.apply(Tap::End { at: at(t0, 1000) });
        assert_eq!(tape.duration_ms(), 1000);
        let (caller, agent) = tape.finish();
        assert_eq!(runs(&agent), [(0, 1000)]);
        assert_eq!(caller.len(), agent.len());
    }

    /// A minute of call: caller frames every 20 ms (the odd one late), agent answers of 3 s
    /// sent in 100 ms deltas ahead of playback with marks echoed 80 ms late, one cut short by
    /// a barge-in.
    fn minute_of_call(t0: Instant) -> Vec<Tap> {
        let mut taps = Vec::new();
        let mut mark = 0;
        for frame in 0..3000u64 {
            let now = frame * 20;
            let late = if frame % 97 == 0 { 150 } else { 0 };
            taps.push(Tap::Caller {
                at: at(t0, now + 20 + late),
                timestamp_ms: now as u32,
                audio: voice(20),
            });
            // An answer every 6 s, sent in 100 ms deltas over its first second.
            let second = now % 6000;
            if (1000..2000).contains(&second) && second % 100 == 0 && now > 0 {
                let sent = (second - 1000) / 100;
                for d in 0..3 {
                    taps.push(Tap::Agent {
                        at: at(t0, now + d),
                        audio: voice(100),
                    });
                    mark += 1;
                    taps.push(Tap::Mark {
                        at: at(t0, now + d),
                        name: format!("m{mark}"),
                    });
                    // Played after what was sent before it, echoed 80 ms late.
                    let played = now - second + 1000 + (sent * 3 + d + 1) * 100;
                    taps.push(Tap::Echo {
                        at: at(t0, played + 80),
                        name: format!("m{mark}"),
                    });
                }
            }
            if now % 30_000 == 3000 {
                taps.push(Tap::Clear { at: at(t0, now) });
            }
        }
        taps.sort_by_key(Tap::at);
        taps.push(Tap::End { at: at(t0, 60_000) });
        taps
    }

    #[test]
    fn a_tape_written_out_as_it_settles_is_the_tape_kept_whole() {
        let t0 = Instant::now();
        let mut whole = Tape::new(t0);
        let mut spilled = Tape::new(t0);
        let (mut caller, mut agent) = (Vec::new(), Vec::new());
        let mut held = 0;
        for tap in minute_of_call(t0) {
            whole.apply(tap.clone());
            spilled.apply(tap);
            if spilled.settled_samples() >= SPILL_SAMPLES {
                let (c, a) = spilled.take_settled();
                caller.extend(c);
                agent.extend(a);
            }
            held = held.max(spilled.caller.end() - spilled.caller.base());
        }
        assert!(caller.len() > 40 * 8000, "most of the call was written out");
        // A spill's worth, the answer still queued (3 s) and a late caller frame at most.
        assert!(held <= SPILL_SAMPLES + 5 * 8000, "held {held} samples");
        assert_eq!(spilled.late_samples, 0);
        assert_eq!(whole.duration_ms(), spilled.duration_ms());
        let (c, a) = spilled.finish();
        caller.extend(c);
        agent.extend(a);
        let (whole_caller, whole_agent) = whole.finish();
        assert_eq!(caller.len(), whole_caller.len());
        assert!(caller == whole_caller, "caller channels differ");
        assert!(agent == whole_agent, "agent channels differ");
        assert!(!runs(&agent).is_empty());
    }

    #[test]
    fn a_burst_the_client_started_late_is_placed_by_its_own_echoes() {
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        // A first answer whose echoes come 10 ms late; a second, after silence, that the
        // client started playing 23 ms later than that: all its echoes are 33 ms late.
        for (sent, lateness, n) in [(0u64, 10u64, 0), (1000, 33, 5)] {
            for k in 0..5u64 {
                tape.apply(Tap::Agent {
                    at: at(t0, sent + k),
                    audio: voice(100),
                });
                let name = format!("m{}", n + k);
                tape.apply(Tap::Mark {
                    at: at(t0, sent + k),
                    name: name.clone(),
                });
                tape.apply(Tap::Echo {
                    at: at(t0, sent + (k + 1) * 100 + lateness),
                    name,
                });
            }
        }
        tape.apply(Tap::End { at: at(t0, 2000) });
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(10, 510), (1033, 1533)]);
    }

    #[test]
    fn a_start_read_late_is_corrected_by_the_callers_frames() {
        // The gateway read `start` 35 ms after it arrived (it was busy): its zero, `t0`, is 40
        // ms after the stream's (one 5 ms trip, then 35 ms). Caller frames captured at
        // ts + 20 arrive a trip later, at t0 + ts - 15. Agent audio sent at 500 ms plays a
        // trip later, at 545 ms of the stream's clock; its mark echo comes back at 710.
        let t0 = Instant::now();
        let mut tape = Tape::new(t0);
        let mut taps = vec![
            Tap::Agent {
                at: at(t0, 500),
                audio: voice(200),
            },
            Tap::Mark {
                at: at(t0, 500),
                name: "m1".into(),
            },
            Tap::Echo {
                at: at(t0, 710),
                name: "m1".into(),
            },
        ];
        for ts in (100..2000).step_by(20) {
            taps.push(Tap::Caller {
                at: at(t0, ts - 15),
                timestamp_ms: ts as u32,
                audio: Bytes::from(vec![mulaw::SILENCE; 20 * MS]),
            });
        }
        taps.sort_by_key(Tap::at);
        taps.push(Tap::End { at: at(t0, 2000) });
        for tap in taps {
            tape.apply(tap);
        }
        assert_eq!(tape.duration_ms(), 2035);
        let (_, agent) = tape.finish();
        assert_eq!(runs(&agent), [(545, 745)]);
    }

    #[test]
    fn a_recording_stops_at_its_limit() {
        let mut channel = Track::default();
        assert!(!channel.write(0, &[1, 2], MAX_SAMPLES).clipped);
        assert!(channel.write(MAX_SAMPLES - 1, &[1, 2], MAX_SAMPLES).clipped);
        assert_eq!(channel.end(), MAX_SAMPLES);
        assert!(channel.write(MAX_SAMPLES + 5, &[1], MAX_SAMPLES).clipped);
        assert_eq!(channel.end(), MAX_SAMPLES);
    }
}
