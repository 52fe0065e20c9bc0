//! Call recordings at rest: where they are stored, how they are named, their format, and
//! deleting them when they are old.
//!
//! The gateway writes a call's recording ([`RecordingStore::put`]); the persister serves it
//! ([`RecordingStore::get`]) and enforces the retention period ([`RecordingStore::sweep`]). Both
//! open the same store from `RECORDINGS_URL`:
//!
//! - a directory (a path, or `file:///abs/dir`): the embedded default, `./recordings`;
//! - `s3://bucket/prefix`: S3 or any S3-compatible server, with the standard `AWS_*`
//!   variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and for a
//!   server other than AWS `AWS_ENDPOINT_URL`, plus `AWS_ALLOW_HTTP=true` for plain HTTP).
//!
//! A recording is named `<call_sid>/<stream>.wav` inside the store (`stream` is the call's
//! media stream, 1 unless the call was re-attached after its gateway died); that name, the
//! *location*, is what the `recording` event and the persister's record carry, so the bucket
//! or directory can move without rewriting records.
//!
//! Format ([`wav`]): RIFF WAVE, 16-bit little-endian PCM, 8 kHz, two channels on one clock:
//! channel 0 ([`CALLER_CHANNEL`]) the caller, channel 1 ([`AGENT_CHANNEL`]) the agent as the
//! caller heard it. 32 000 bytes per second of call.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};

/// The environment variable naming the recording store.
pub const RECORDINGS_URL_ENV: &str = "RECORDINGS_URL";

/// The store when `RECORDINGS_URL` is not set: a directory in the working directory.
pub const DEFAULT_RECORDINGS_URL: &str = "recordings";

/// The channel of the caller's audio.
pub const CALLER_CHANNEL: usize = 0;
/// The channel of the agent's audio, as the caller heard it.
pub const AGENT_CHANNEL: usize = 1;
/// Channels of every recording.
pub const CHANNELS: u16 = 2;
/// Samples per second of every recording (Twilio's telephone audio).
pub const SAMPLE_RATE: u32 = 8000;

/// The store's settings, as a binary's flags (`RECORDINGS_URL`).
#[derive(Debug, Clone, clap::Args)]
pub struct RecordingsArgs {
    /// Where call recordings are stored: a directory (path or `file:///dir`), or
    /// `s3://bucket/prefix` for S3-compatible storage (credentials and endpoint from the
    /// standard `AWS_*` variables).
    #[arg(long, env = RECORDINGS_URL_ENV, default_value = DEFAULT_RECORDINGS_URL)]
    pub recordings_url: String,
}

/// Why the recording store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RECORDINGS_URL={url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("RECORDINGS_URL={url:?}: creating the directory: {source}")]
    Directory {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("recording store: {0}")]
    Store(#[from] object_store::Error),
    #[error("recording location {0:?} is not a recording's name")]
    Location(String),
    #[error("reading the recording's file: {0}")]
    File(#[from] std::io::Error),
}

/// The size of the parts a large recording is uploaded in (S3's smallest part is 5 MiB).
pub const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

/// One object of the store, as [`RecordingStore::sweep`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The recording's location.
    pub location: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// The recording store (cheap to clone).
#[derive(Clone)]
pub struct RecordingStore {
    store: Arc<dyn ObjectStore>,
    /// Folder inside the store holding the recordings (the path of an `s3://` URL).
    prefix: Path,
    url: String,
}

impl std::fmt::Debug for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingStore")
            .field("url", &self.url)
            .finish()
    }
}

impl RecordingStore {
    /// Opens the store `url` names (see the module documentation); an S3 store takes its
    /// credentials and endpoint from the environment.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, std::iter::empty::<(&str, &str)>())
    }

    /// Like [`RecordingStore::open`], with S3 settings (`aws_endpoint`, `aws_access_key_id`,
    /// ...) given here on top of the environment's.
    pub fn open_with<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Url {
            url: url.to_owned(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                let key = key
                    .parse()
                    .map_err(|e: object_store::Error| bad(e.to_string()))?;
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: Path::from(prefix.trim_matches('/')),
                url: url.to_owned(),
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => return Err(bad("a file URL needs an absolute path".into())),
            None if url.contains("://") => {
                return Err(bad(
                    "expected a directory, file:///dir or s3://bucket".into()
                ));
            }
            None => url,
        };
        if dir.is_empty() {
            return Err(bad("empty directory".into()));
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            url: url.to_owned(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            url: url.to_owned(),
        })
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The location of the recording of stream `stream` of `call_sid`.
    pub fn location(call_sid: &str, stream: u32) -> String {
        format!("{call_sid}/{stream}.wav")
    }

    /// The store path of `location`, refused unless it is a recording's name (so a location
    /// read from a record can never reach outside the recordings).
    fn path(&self, location: &str) -> Result<Path, StoreError> {
        let refuse = || StoreError::Location(location.to_owned());
        let (call_sid, file) = location.split_once('/').ok_or_else(refuse)?;
        let stream = file.strip_suffix(".wav").ok_or_else(refuse)?;
        let call_ok = !call_sid.is_empty()
            && call_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let stream_ok = !stream.is_empty() && stream.bytes().all(|b| b.is_ascii_digit());
        if !(call_ok && stream_ok) {
            return Err(refuse());
        }
        Ok(self.prefix.clone().join(call_sid).join(file))
    }

    /// Writes the recording at `location`, replacing one already there.
    pub async fn put(&self, location: &str, wav: Bytes) -> Result<(), StoreError> {
        let path = self.path(location)?;
        self.store.put(&path, PutPayload::from_bytes(wav)).await?;
        Ok(())
    }

    /// Writes the recording at `location` from `file` (a whole WAV of `len` bytes), replacing
    /// one already there. A recording larger than [`UPLOAD_PART_BYTES`] goes up in parts of
    /// that size, so no more of it is in memory at once.
    pub async fn put_file(
        &self,
        location: &str,
        file: &mut tokio::fs::File,
        len: u64,
    ) -> Result<(), StoreError> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let path = self.path(location)?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        if len <= UPLOAD_PART_BYTES as u64 {
            let mut wav = Vec::with_capacity(len as usize);
            file.read_to_end(&mut wav).await?;
            self.store.put(&path, PutPayload::from(wav)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(error) => {
                    parts.abort().await?;
                    return Err(error.into());
                }
            };
            if n == 0 {
                break;
            }
            parts.wait_for_capacity(2).await?;
            parts.write(&buf[..n]);
        }
        parts.finish().await?;
        Ok(())
    }

    /// The recording at `location`, or None if there is none.
    pub async fn get(&self, location: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(location)?;
        match self.store.get(&path).await {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes every recording written before `cutoff_ms` (milliseconds since the Unix epoch)
    /// and returns what it deleted. The retention period's clock is the store's own
    /// modification time, so a recording is kept its full period whichever process wrote it.
    pub async fn sweep(&self, cutoff_ms: i64) -> Result<Vec<Swept>, StoreError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let old: Vec<Swept> = self
            .store
            .list(prefix)
            .try_filter_map(|meta| {
                let modified_ms = meta.last_modified.timestamp_millis();
                let location = meta
                    .location
                    .prefix_match(&self.prefix)
                    .map(|parts| parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .join("/");
                let keep = modified_ms >= cutoff_ms || self.path(&location).is_err();
                futures::future::ready(Ok((!keep).then_some(Swept {
                    location,
                    modified_ms,
                })))
            })
            .try_collect()
            .await?;
        for swept in &old {
            match self.store.delete(&self.path(&swept.location)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(old)
    }
}

/// The WAV container of a recording: 16-bit PCM, [`SAMPLE_RATE`], [`CHANNELS`] interleaved.
pub mod wav {
    use super::{CHANNELS, SAMPLE_RATE};

    /// Bytes of the RIFF/WAVE header [`encode`] writes.
    pub const HEADER_BYTES: usize = 44;
    /// Bytes per second of recording.
    pub const BYTES_PER_SECOND: usize = SAMPLE_RATE as usize * CHANNELS as usize * 2;

    /// A two-channel WAV of `caller` and `agent` (the shorter is padded with silence).
    pub fn encode(caller: &[i16], agent: &[i16]) -> Vec<u8> {
        let frames = caller.len().max(agent.len());
        let mut out = Vec::with_capacity(HEADER_BYTES + frames * usize::from(CHANNELS) * 2);
        out.extend_from_slice(&header(frames));
        interleave(caller, agent, &mut out);
        out
    }

    /// The samples of `caller` and `agent` as the WAV's data (frames of both channels; the
    /// shorter is padded with silence), appended to `out`.
    pub fn interleave(caller: &[i16], agent: &[i16], out: &mut Vec<u8>) {
        for i in 0..caller.len().max(agent.len()) {
            for channel in [caller, agent] {
                let sample = channel.get(i).copied().unwrap_or(0);
                out.extend_from_slice(&sample.to_le_bytes());
            }
        }
    }

    /// The header of a WAV of `frames` frames: written last by a recording written in parts.
    pub fn header(frames: usize) -> [u8; HEADER_BYTES] {
        let data_bytes = frames * usize::from(CHANNELS) * 2;
        let mut out = Vec::with_capacity(HEADER_BYTES);
        let block_align = CHANNELS * 2;
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&((36 + data_bytes) as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&CHANNELS.to_le_bytes());
        out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
        out.extend_from_slice(&(SAMPLE_RATE * u32::from(block_align)).to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data_bytes as u32).to_le_bytes());
        out.try_into().expect("the header is 44 bytes")
    }

    /// Why bytes are not a recording.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("not a recording WAV: {0}")]
    pub struct NotARecording(&'static str);

    /// The channels of a WAV [`encode`] wrote (caller, agent).
    pub fn decode(bytes: &[u8]) -> Result<(Vec<i16>, Vec<i16>), NotARecording> {
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or(NotARecording("too short"))?;
        if &header[0..4] != b"RIFF" || &header[8..16] != b"WAVEfmt " || &header[36..40] != b"data" {
            return Err(NotARecording("not RIFF WAVE"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if u16_at(20) != 1
            || u16_at(22) != CHANNELS
            || u32_at(24) != SAMPLE_RATE
            || u16_at(34) != 16
        {
            return Err(NotARecording("not 8 kHz 16-bit PCM stereo"));
        }
        let data = &bytes[HEADER_BYTES..];
        if data.len() != u32_at(40) as usize || !data.len().is_multiple_of(4) {
            return Err(NotARecording("data length"));
        }
        let (caller, agent) = data
            .chunks_exact(4)
            .map(|f| {
                (
                    i16::from_le_bytes([f[0], f[1]]),
                    i16::from_le_bytes([f[2], f[3]]),
                )
            })
            .unzip();
        Ok((caller, agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips_and_pads_the_shorter_channel() {
        let bytes = wav::encode(&[1, -2, 3], &[100]);
        assert_eq!(bytes.len(), wav::HEADER_BYTES + 3 * 4);
        let (caller, agent) = wav::decode(&bytes).expect("valid");
        assert_eq!(caller, vec![1, -2, 3]);
        assert_eq!(agent, vec![100, 0, 0]);
        assert!(wav::decode(&bytes[..40]).is_err());
    }

    #[tokio::test]
    async fn a_recording_file_is_stored_whole_small_or_in_parts() {
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::open(dir.path().to_str().unwrap()).unwrap();
        for (sid, len) in [("CA1", 1000), ("CA2", 2 * UPLOAD_PART_BYTES + 12_345)] {
            let wav: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut file = tokio::fs::File::from_std(tempfile::tempfile().unwrap());
            file.write_all(&wav).await.unwrap();
            let location = RecordingStore::location(sid, 1);
            store
                .put_file(&location, &mut file, len as u64)
                .await
                .unwrap();
            let stored = store.get(&location).await.unwrap().expect("stored");
            assert!(
                stored[..] == wav[..],
                "{sid}: {} bytes stored",
                stored.len()
            );
        }
    }

    #[test]
    fn locations_outside_the_recordings_are_refused() {
        let store = RecordingStore::open(tempfile::tempdir().unwrap().path().to_str().unwrap())
            .expect("opens");
        assert!(store.path("CA1/1.wav").is_ok());
        for bad in [
            "../x/1.wav",
            "CA1/../../etc.wav",
            "CA1/1.txt",
            "CA1",
            "/1.wav",
            "CA 1/1.wav",
        ] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for bad in ["http://x", "file://relative", "s3://", ""] {
            assert!(RecordingStore::open(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_directory_store_keeps_sweeps_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::open(&format!("file://{}", dir.path().display())).unwrap();
        let location = RecordingStore::location("CA1", 1);
        assert_eq!(store.get(&location).await.unwrap(), None);
        store
            .put(&location, Bytes::from_static(b"wav"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&location).await.unwrap().as_deref(),
            Some(&b"wav"[..])
        );
        // A cutoff before it was written keeps it; one after deletes it.
        let written = switchboard_proto::now_ms();
        assert!(store.sweep(written - 60_000).await.unwrap().is_empty());
        let swept = store.sweep(written + 60_000).await.unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].location, location);
        assert_eq!(store.get(&location).await.unwrap(), None);
    }
}
