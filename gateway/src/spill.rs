//! A recording on its way to the store, held on disk rather than in memory.
//!
//! A stream's [`crate::recorder::Tape`] keeps only the part of the call that can still change
//! (the agent audio Twilio has queued, the last caller frames): whatever is settled goes, as the
//! WAV's 16-bit PCM frames, to a [`Spill`], an unnamed temporary file (deleted by the system
//! when it is closed, whatever happens to the process). When the stream ends the header is
//! written in front and the file is uploaded in parts, so the memory a recording takes is
//! bounded however long the call (about [`SPILL_SAMPLES`] of both channels, plus an agent
//! answer still queued), instead of growing by 16 kB per second of call.

use std::io::SeekFrom;

use switchboard_service::recordings::wav;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

/// Settled samples kept before they are written out: 10 s of call (80 kB of mu-law for both
/// channels), so the file gets a write every 10 s of call, not every frame.
pub const SPILL_SAMPLES: usize = 10 * 8000;

/// One channel of a tape: its samples from `base` on (the ones before went to the spill file).
#[derive(Debug, Default)]
pub struct Track {
    base: usize,
    samples: Vec<u8>,
}

/// What [`Track::write`] could not keep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Samples past the recording's limit.
    pub clipped: bool,
    /// Samples of a part already written out (none in practice: only settled parts are).
    pub settled: usize,
}

impl Track {
    /// The position of the first sample held (those before were taken).
    pub fn base(&self) -> usize {
        self.base
    }

    /// The position after the last sample written.
    pub fn end(&self) -> usize {
        self.base + self.samples.len()
    }

    /// Writes `audio` (mu-law) at `start` (silence before it), up to `limit`.
    pub fn write(&mut self, start: usize, audio: &[u8], limit: usize) -> Lost {
        let mut lost = Lost::default();
        let end = (start + audio.len()).min(limit);
        if end < start + audio.len() {
            lost.clipped = true;
        }
        let from = start.max(self.base);
        if from > start {
            lost.settled = (from - start).min(audio.len());
        }
        if end <= from {
            return lost;
        }
        let (i, j) = (from - self.base, end - self.base);
        if self.samples.len() < j {
            self.samples.resize(j, switchboard_twilio::mulaw::SILENCE);
        }
        self.samples[i..j].copy_from_slice(&audio[from - start..end - start]);
        lost
    }

    /// The samples from `base` to `upto` as PCM (silence where nothing was written), moving
    /// `base` to `upto`.
    pub fn take(&mut self, upto: usize) -> Vec<i16> {
        let n = upto.saturating_sub(self.base);
        let kept = n.min(self.samples.len());
        let mut out: Vec<i16> = self
            .samples
            .drain(..kept)
            .map(switchboard_twilio::mulaw::decode)
            .collect();
        out.resize(n, 0);
        self.base = self.base.max(upto);
        out
    }
}

/// The recording's WAV being written to an unnamed temporary file.
#[derive(Debug)]
pub struct Spill {
    file: tokio::fs::File,
    frames: usize,
    /// Reused for each write.
    buf: Vec<u8>,
}

impl Spill {
    /// A new file, with room for the header.
    pub async fn create() -> std::io::Result<Self> {
        let file = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(file);
        file.write_all(&[0; wav::HEADER_BYTES]).await?;
        Ok(Self {
            file,
            frames: 0,
            buf: Vec::new(),
        })
    }

    /// Appends frames of both channels (the shorter padded with silence).
    pub async fn append(&mut self, caller: &[i16], agent: &[i16]) -> std::io::Result<()> {
        self.buf.clear();
        wav::interleave(caller, agent, &mut self.buf);
        self.file.write_all(&self.buf).await?;
        self.frames += caller.len().max(agent.len());
        Ok(())
    }

    /// Writes the header; returns the file, positioned anywhere, and the WAV's size in bytes.
    pub async fn finish(mut self) -> std::io::Result<(tokio::fs::File, u64)> {
        self.file.seek(SeekFrom::Start(0)).await?;
        self.file.write_all(&wav::header(self.frames)).await?;
        self.file.flush().await?;
        let bytes = (wav::HEADER_BYTES + self.frames * wav::BYTES_PER_SECOND / 8000) as u64;
        Ok((self.file, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn a_track_keeps_only_what_it_was_not_asked_to_give_up() {
        let mut track = Track::default();
        let loud = switchboard_twilio::mulaw::encode(8000);
        assert_eq!(track.write(2, &[loud; 3], 100), Lost::default());
        let first = track.take(4);
        assert_eq!(first.len(), 4);
        assert_eq!(first[..2], [0, 0]);
        assert!(first[2].abs() > 7000 && first[3].abs() > 7000);
        // Written before the base: that part is lost, and said so.
        let lost = track.write(3, &[loud; 3], 100);
        assert_eq!(lost.settled, 1);
        assert_eq!(track.end(), 6);
        let rest = track.take(8);
        assert_eq!(rest.len(), 4);
        assert!(rest[0].abs() > 7000 && rest[1].abs() > 7000);
        assert_eq!(rest[2..], [0, 0]);
        assert!(track.write(99, &[loud; 3], 100).clipped);
    }

    #[tokio::test]
    async fn a_spilled_recording_is_the_wav_encode_makes() {
        let caller: Vec<i16> = (0..20_000).map(|i| (i % 300) as i16).collect();
        let agent: Vec<i16> = (0..20_000).map(|i| -((i % 200) as i16)).collect();
        let mut spill = Spill::create().await.unwrap();
        spill
            .append(&caller[..12_345], &agent[..12_345])
            .await
            .unwrap();
        spill
            .append(&caller[12_345..], &agent[12_345..])
            .await
            .unwrap();
        let (mut file, bytes) = spill.finish().await.unwrap();
        file.seek(SeekFrom::Start(0)).await.unwrap();
        let mut written = Vec::new();
        file.read_to_end(&mut written).await.unwrap();
        assert_eq!(written.len() as u64, bytes);
        assert_eq!(written, wav::encode(&caller, &agent));
    }
}
