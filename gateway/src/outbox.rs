//! The write side of a media socket: a writer task and the bounded queue in front of it.
//!
//! The stream actor must never wait for Twilio's socket (it also forwards caller audio to NATS),
//! and the socket must never wait for NATS. So the actor hands messages to a writer task through
//! a bounded channel and never awaits a send:
//!
//! - audio that does not fit because the socket is stalled is dropped and counted; it is stale
//!   by the time the socket would take it, and queueing it without bound would only delay every
//!   later word;
//! - marks, `clear` and the close frame are never dropped: when the channel is full they wait in
//!   a small overflow queue, in order, and the actor moves them into the channel as space frees
//!   ([`Outbox::flush_one`]). While that queue is non-empty new audio is dropped too, so nothing
//!   overtakes a control message.
//!
//! A socket that does not accept a single write for [`WRITE_STALL_LIMIT`] is dead; the writer
//! gives up and the actor ends the call.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt as _;
use futures::stream::SplitSink;
use switchboard_twilio::media::ServerMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::frames::outbound_kind;
use crate::metrics as m;

/// Messages in flight to the writer (each at most one second of audio).
pub const QUEUE_CAPACITY: usize = 128;

/// How long one write may take before the socket is considered dead.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(10);

/// One thing to write to Twilio.
#[derive(Debug)]
pub enum Outgoing {
    /// A rendered `media` message ([`crate::frames::MediaWriter`]) and when its audio arrived
    /// from NATS (for [`m::FRAME_PROCESSING`]).
    Audio { text: Utf8Bytes, received: Instant },
    /// Any other Media Streams message.
    Twilio(ServerMessage),
    /// The close frame; the writer stops after it.
    Close(CloseFrame),
}

impl Outgoing {
    fn is_audio(&self) -> bool {
        matches!(
            self,
            Self::Audio { .. } | Self::Twilio(ServerMessage::Media { .. })
        )
    }
}

/// What became of a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// In the writer's queue.
    Queued,
    /// Waiting in the overflow queue (controls only).
    Deferred,
    /// Audio dropped because the socket is behind.
    Dropped,
    /// The writer is gone (the socket failed or was closed).
    Closed,
}

/// The actor's end of the writer queue.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    overflow: VecDeque<Outgoing>,
}

impl Outbox {
    pub fn new(tx: mpsc::Sender<Outgoing>) -> Self {
        Self {
            tx,
            overflow: VecDeque::new(),
        }
    }

    /// Queues `item` without waiting (see the module docs for the policy).
    pub fn push(&mut self, item: Outgoing) -> Pushed {
        let audio = item.is_audio();
        if !self.overflow.is_empty() {
            if audio {
                metrics::counter!(m::AUDIO_DROPPED).increment(1);
                return Pushed::Dropped;
            }
            if self.tx.is_closed() {
                return Pushed::Closed;
            }
            self.overflow.push_back(item);
            return Pushed::Deferred;
        }
        match self.tx.try_send(item) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) if audio => {
                metrics::counter!(m::AUDIO_DROPPED).increment(1);
                Pushed::Dropped
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                self.overflow.push_back(item);
                Pushed::Deferred
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Whether control messages are waiting for space.
    pub fn has_overflow(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// Waits for space and moves the oldest waiting control message into the queue. Cancel-safe:
    /// nothing leaves the overflow queue until a slot is reserved. Fails when the writer is gone.
    pub async fn flush_one(&mut self) -> Result<(), WriterGone> {
        let permit = self.tx.reserve().await.map_err(|_| WriterGone)?;
        if let Some(item) = self.overflow.pop_front() {
            permit.send(item);
        }
        Ok(())
    }
}

/// The writer task has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the socket writer has ended")]
pub struct WriterGone;

/// Most messages written in one go before flushing (a backlog is at most [`QUEUE_CAPACITY`]).
const MAX_BATCH: usize = 16;

/// Writes queued messages to the socket until a close frame is written, the socket fails, or
/// the actor drops its sender. Cancels `done` on the way out so the actor notices.
///
/// Whatever is queued when the writer wakes (up to [`MAX_BATCH`]) is written with one flush,
/// so a backlog costs one system call rather than one per message.
pub async fn run_writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let mut counters = Counters::new();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut audio = Vec::new();
        let mut controls = Vec::new();
        let mut closed = false;
        let written = tokio::time::timeout(WRITE_STALL_LIMIT, async {
            for item in batch.drain(..) {
                let message = match item {
                    Outgoing::Audio { text, received } => {
                        audio.push(received);
                        Message::Text(text)
                    }
                    Outgoing::Twilio(msg) => {
                        controls.push(outbound_kind(&msg));
                        Message::Text(msg.to_json().into())
                    }
                    Outgoing::Close(frame) => {
                        closed = true;
                        Message::Close(Some(frame))
                    }
                };
                sink.feed(message).await?;
                if closed {
                    break;
                }
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "media socket write failed");
                return;
            }
            Err(_) => {
                tracing::warn!("media socket stalled; giving up on it");
                return;
            }
        }
        for kind in controls {
            metrics::counter!(m::FRAMES_OUT, "event" => kind).increment(1);
        }
        if !audio.is_empty() {
            counters.media.increment(audio.len() as u64);
            for received in audio {
                counters.processing.done(received);
            }
        }
        if closed {
            return;
        }
    }
}

/// The writer's metric handles, looked up once per stream rather than per frame.
struct Counters {
    media: metrics::Counter,
    processing: m::FrameTimer,
}

impl Counters {
    fn new() -> Self {
        Self {
            media: metrics::counter!(m::FRAMES_OUT, "event" => "media"),
            processing: m::FrameTimer::new("out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio() -> Outgoing {
        Outgoing::Audio {
            text: crate::frames::MediaWriter::new("MZ1").render(&[0xff; 160]),
            received: Instant::now(),
        }
    }

    fn mark(name: &str) -> Outgoing {
        Outgoing::Twilio(ServerMessage::mark("MZ1", name))
    }

    fn name_of(item: Outgoing) -> String {
        match item {
            Outgoing::Twilio(ServerMessage::Mark { mark, .. }) => mark.name,
            Outgoing::Twilio(ServerMessage::Media { .. }) | Outgoing::Audio { .. } => {
                "audio".into()
            }
            Outgoing::Twilio(ServerMessage::Clear { .. }) => "clear".into(),
            Outgoing::Close(_) => "close".into(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_audio_but_keeps_controls_in_order() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut outbox = Outbox::new(tx);
        assert_eq!(outbox.push(audio()), Pushed::Queued);
        assert_eq!(outbox.push(mark("a")), Pushed::Queued);
        // Full: audio is dropped, controls wait.
        assert_eq!(outbox.push(audio()), Pushed::Dropped);
        assert_eq!(
            outbox.push(Outgoing::Twilio(ServerMessage::media("MZ1", &[0xff; 160]))),
            Pushed::Dropped
        );
        assert_eq!(outbox.push(mark("b")), Pushed::Deferred);
        assert_eq!(
            outbox.push(Outgoing::Twilio(ServerMessage::clear("MZ1"))),
            Pushed::Deferred
        );
        // Nothing overtakes a waiting control, even when there is room again.
        let mut order = vec![name_of(rx.recv().await.unwrap())];
        assert_eq!(outbox.push(audio()), Pushed::Dropped);
        assert!(outbox.has_overflow());
        outbox.flush_one().await.unwrap();
        order.push(name_of(rx.recv().await.unwrap()));
        outbox.flush_one().await.unwrap();
        assert!(!outbox.has_overflow());
        order.push(name_of(rx.recv().await.unwrap()));
        assert_eq!(outbox.push(audio()), Pushed::Queued);
        order.extend(std::iter::from_fn(|| rx.try_recv().ok()).map(name_of));
        assert_eq!(order, ["audio", "a", "b", "clear", "audio"]);
    }

    #[tokio::test]
    async fn a_gone_writer_is_reported() {
        let (tx, rx) = mpsc::channel(1);
        let mut outbox = Outbox::new(tx);
        drop(rx);
        assert_eq!(outbox.push(mark("a")), Pushed::Closed);
        assert_eq!(outbox.push(audio()), Pushed::Closed);
    }

    #[tokio::test]
    async fn flush_one_fails_when_the_writer_is_gone() {
        let (tx, rx) = mpsc::channel(1);
        let mut outbox = Outbox::new(tx);
        assert_eq!(outbox.push(mark("a")), Pushed::Queued);
        assert_eq!(outbox.push(mark("b")), Pushed::Deferred);
        drop(rx);
        assert_eq!(outbox.flush_one().await, Err(WriterGone));
    }
}
