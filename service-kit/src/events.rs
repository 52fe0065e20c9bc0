//! The `VOICE_EVENTS` JetStream stream and a bounded, pipelined publisher of call events.
//!
//! A call actor must never wait on the event store (the media path never waits), yet an accepted
//! event must never be lost silently. [`EventPublisher`] is a cloneable handle to a task that owns
//! the JetStream context:
//! - [`EventPublisher::publish`] only enqueues, into a bounded queue. It never waits, so it is what
//!   the media path uses. Should the queue be full (the broker has been away for a long time), the
//!   event is written to the log in full (see [`spill`]) and counted: recoverable, never silent.
//! - [`EventPublisher::publish_wait`] waits for room: back-pressure for producers off the media
//!   path (webhook handlers). [`EventPublisher::is_congested`] lets intake (offers) say no before
//!   the queue fills up.
//! - The task keeps up to [`PublisherConfig::max_in_flight`] publishes awaiting their acks at
//!   once (pipelined, not one round trip each) and re-sends a failed one with the shared jittered
//!   [`Backoff`], under the same `Nats-Msg-Id: <call_sid>:<seq>`, so a retry after a lost ack is
//!   stored once.
//! - [`EventPublisher::close`] ends it under a deadline: what is still unacknowledged then is
//!   spilled to the log and counted, and the call returns whatever the broker is doing.
//!
//! - Ownership: a worker claims a call with [`claim`] (a conditional publish of its `owner`
//!   event, waited for). The claim's stream sequence is the owner's [`Fence`]: every other event
//!   of that owner goes through [`EventPublisher::publish_fenced`], carrying
//!   `Nats-Expected-Last-Subject-Sequence-Subject` (the call's owner subject) and
//!   `Nats-Expected-Last-Subject-Sequence` (the claim's sequence). Once another worker has
//!   claimed the call, JetStream refuses them (error 10071); the task drops the refused event
//!   (counted, never retried or spilled: it is not the call's record any more) and cancels the
//!   fence's [`Fence::lost`] token, which tells the call's owner it lost the call.
//!
//! Each event carries the trace context of the span it was published from (W3C `traceparent`
//! in its NATS headers), so the persister's spans join the trace of the call that produced it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use base64::Engine as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, EVENTS_STREAM, Message as _, call_event::Body};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::backoff::Backoff;

/// How long JetStream remembers message ids for deduplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The publisher's metric names.
pub mod metric {
    /// Counter, by `kind`: events handed to the publisher.
    pub const QUEUED: &str = "call_events_queued_total";
    /// Counter, by `kind`: events acknowledged by JetStream.
    pub const PUBLISHED: &str = "call_events_published_total";
    /// Counter: publish attempts that failed and were retried.
    pub const RETRIES: &str = "call_events_publish_retries_total";
    /// Counter, by `reason` ([`super::Spill`]): events written to the log instead of the stream.
    pub const UNPUBLISHED: &str = "call_events_unpublished_total";
    /// Gauge: events accepted and not yet acknowledged (queued, in flight or waiting to retry).
    pub const BACKLOG: &str = "call_events_backlog";
    /// Counter, by `kind`: events JetStream refused because another owner claimed the call.
    pub const FENCED: &str = "call_events_fenced_total";
}

/// The header naming the subject whose last sequence `Nats-Expected-Last-Subject-Sequence`
/// checks (nats-server >= 2.11); without it the publish subject is checked.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// The ownership fence of one owner of one call: the stream sequence of its `owner` event. Its
/// events are stored only while that event is still the call's last `owner` event.
#[derive(Debug, Clone)]
pub struct Fence {
    owner_subject: Arc<str>,
    sequence: u64,
    lost: CancellationToken,
}

impl Fence {
    /// The fence of the owner whose `owner` event was stored on `owner_subject` at stream
    /// sequence `sequence`.
    pub fn new(owner_subject: impl Into<Arc<str>>, sequence: u64) -> Self {
        Self {
            owner_subject: owner_subject.into(),
            sequence,
            lost: CancellationToken::new(),
        }
    }

    /// The stream sequence of the owner's `owner` event.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Cancelled when JetStream refused one of the owner's events: another owner claimed the
    /// call, and this one must stop serving it at once.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    fn headers(&self, headers: &mut async_nats::HeaderMap) {
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            self.owner_subject.as_ref(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.sequence.to_string().as_str(),
        );
    }
}

/// Why a claim of a call did not give the claimer the call.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another claim of the call was stored first (JetStream error 10071, or the same event id
    /// stored by someone else).
    #[error("another owner claimed the call first")]
    Lost,
    /// The claim could not be published or its answer read.
    #[error("publishing the ownership claim: {0}")]
    Publish(#[source] async_nats::Error),
}

/// Claims a call: publishes `owner` (an event with a `CallOwner` body) on the call's owner
/// subject, stored only if the last `owner` event of the call is the one at stream sequence
/// `previous` (0: the call has none). Waits for JetStream's answer; on success the returned
/// [`Fence`] guards the claimer's other events.
pub async fn claim(
    js: &jetstream::Context,
    subjects: &Subjects,
    owner: &CallEvent,
    previous: u64,
) -> Result<Fence, ClaimError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let Some(Body::Owner(claimed)) = owner.body.as_ref() else {
        return Err(ClaimError::Publish("a claim needs an owner event".into()));
    };
    let subject = subjects.event(&owner.call_sid, owner.kind());
    let mut headers = async_nats::HeaderMap::new();
    crate::trace::inject_context(&tracing::Span::current().context(), &mut headers);
    let publish = jetstream::message::PublishMessage::build()
        .payload(owner.encode_to_vec().into())
        .headers(headers)
        .message_id(owner.msg_id().as_str())
        .expected_last_subject_sequence(previous);
    let ack = js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| ClaimError::Publish(e.into()))?
        .await;
    match ack {
        Ok(ack) if !ack.duplicate => Ok(Fence::new(subject, ack.sequence)),
        // Refused, or the same event id stored before: either a rival's claim won, or this is a
        // retry of our own stored claim whose answer was lost. The last stored claim says which.
        Ok(_) => ours_or_lost(js, &subject, claimed).await,
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            ours_or_lost(js, &subject, claimed).await
        }
        Err(e) => Err(ClaimError::Publish(e.into())),
    }
}

/// The fence of `claimed` if it is the call's last stored claim, else [`ClaimError::Lost`].
async fn ours_or_lost(
    js: &jetstream::Context,
    owner_subject: &str,
    claimed: &switchboard_proto::CallOwner,
) -> Result<Fence, ClaimError> {
    let Some((sequence, last)) = last_owner(js, owner_subject)
        .await
        .map_err(ClaimError::Publish)?
    else {
        return Err(ClaimError::Lost);
    };
    if last.worker_id == claimed.worker_id && last.epoch == claimed.epoch {
        Ok(Fence::new(owner_subject.to_owned(), sequence))
    } else {
        Err(ClaimError::Lost)
    }
}

/// The call's last stored claim (its stream sequence and body) on `owner_subject`
/// (`voice.events.<call_sid>.owner`), if it has any. A direct get of the subject's last message:
/// the one read of the call log gateways are granted (on `owner` subjects only). A read may lag
/// the leader on a cluster; ownership itself is decided by the conditional claim, never by this.
pub async fn last_owner(
    js: &jetstream::Context,
    owner_subject: &str,
) -> Result<Option<(u64, switchboard_proto::CallOwner)>, async_nats::Error> {
    Ok(last_owner_message(js, owner_subject)
        .await?
        .map(|last| (last.sequence, last.owner)))
}

/// A call's last stored claim, with the headers it was published with.
#[derive(Debug, Clone)]
pub struct LastOwner {
    /// Its stream sequence (what the next claim names as expected).
    pub sequence: u64,
    pub owner: switchboard_proto::CallOwner,
    /// The claim's headers: among them the trace context of the call it was made in, which
    /// is how a gateway that never saw the call's webhook keeps a new stream in the call's trace.
    pub headers: async_nats::HeaderMap,
}

/// Like [`last_owner`], with the claim's headers.
pub async fn last_owner_message(
    js: &jetstream::Context,
    owner_subject: &str,
) -> Result<Option<LastOwner>, async_nats::Error> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let stream = js.get_stream_no_info(EVENTS_STREAM).await?;
    let message = match stream.direct_get_last_for_subject(owner_subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match CallEvent::decode(message.payload)?.body {
        Some(Body::Owner(owner)) => Ok(Some(LastOwner {
            sequence: message.sequence,
            owner,
            headers: message.headers,
        })),
        _ => Err(format!("a non-owner event is stored on {owner_subject}").into()),
    }
}

/// Creates the events stream, or brings an existing one in line with these settings and the
/// deployment's replicas ([`crate::storage`]), and returns it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<stream::Stream, crate::storage::SetupError> {
    crate::storage::ensure_stream(
        js,
        stream::Config {
            name: EVENTS_STREAM.to_owned(),
            subjects: vec![subjects.all_events()],
            duplicate_window: DUPLICATE_WINDOW,
            // Consumers (the persister, CRMs) may be down for a while; keep a week.
            max_age: Duration::from_secs(7 * 24 * 3600),
            storage: stream::StorageType::File,
            // Gateways read a call's last `owner` event by a direct get (granted on `owner`
            // subjects only) to bind a re-attached stream to the call's current owner epoch.
            allow_direct: true,
            ..Default::default()
        },
    )
    .await
}

/// A durable pull consumer on `VOICE_EVENTS` shared by every replica of one service (the
/// persister, the notifier): its name, what it is for, where a new one starts, and how long and
/// how much may await acks.
#[derive(Debug, Clone)]
pub struct DurableConsumer {
    pub name: &'static str,
    pub description: &'static str,
    pub deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
}

/// Makes sure the events stream and `consumer` exist (an existing consumer keeps its settings)
/// and returns the consumer, ready to pull.
pub async fn durable_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    consumer: &DurableConsumer,
) -> Result<async_nats::jetstream::consumer::PullConsumer, async_nats::Error> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let stream = ensure_stream(js, subjects).await?;
    Ok(stream
        .get_or_create_consumer(
            consumer.name,
            pull::Config {
                durable_name: Some(consumer.name.to_owned()),
                description: Some(consumer.description.to_owned()),
                deliver_policy: consumer.deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: consumer.ack_wait,
                max_ack_pending: consumer.max_ack_pending,
                filter_subject: subjects.all_events(),
                ..Default::default()
            },
        )
        .await?)
}

/// How big the publisher may grow.
#[derive(Debug, Clone, Copy)]
pub struct PublisherConfig {
    /// Events that may wait for the task. About 30 minutes of events of 100 calls; beyond it the
    /// broker has been gone for long and [`EventPublisher::publish`] spills to the log.
    pub capacity: usize,
    /// Publishes awaiting their acks at once.
    pub max_in_flight: usize,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            max_in_flight: 256,
        }
    }
}

/// Why an event went to the log instead of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spill {
    /// The queue was full: the broker has been away for longer than the queue covers.
    QueueFull,
    /// The publisher had been closed (the process is stopping).
    Closed,
    /// The close deadline passed before JetStream acknowledged it.
    Deadline,
}

impl Spill {
    /// The `reason` label of [`metric::UNPUBLISHED`].
    pub fn as_str(self) -> &'static str {
        match self {
            Spill::QueueFull => "queue_full",
            Spill::Closed => "closed",
            Spill::Deadline => "deadline",
        }
    }
}

/// What [`EventPublisher::close`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Events acknowledged by JetStream over the publisher's life.
    pub published: u64,
    /// Events spilled to the log over the publisher's life (any [`Spill`] reason).
    pub spilled: u64,
}

struct Queued {
    event: CallEvent,
    cx: opentelemetry::Context,
    /// The owner's fence, for a worker's events.
    fence: Option<Fence>,
}

/// Why an attempt to publish failed.
enum AttemptError {
    /// JetStream refused the event for its fence: its owner lost the call. Not retried.
    Fenced,
    /// Anything else (retried).
    Other(String),
}

enum Command {
    /// Boxed: an event is far larger than a flush.
    Publish(Box<Queued>),
    /// Reply once every event queued before it is acknowledged (or spilled).
    Flush(oneshot::Sender<()>),
}

struct Close {
    deadline: Instant,
    reply: oneshot::Sender<CloseReport>,
}

/// Counters shared by the handles and the task.
#[derive(Default)]
struct Shared {
    /// Accepted and not yet acknowledged or spilled.
    backlog: AtomicUsize,
    spilled: AtomicUsize,
}

impl Shared {
    fn settled(&self) {
        let left = self
            .backlog
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!(metric::BACKLOG).set(left as f64);
    }
}

/// A cloneable handle that publishes call events in the background.
#[derive(Clone)]
pub struct EventPublisher {
    tx: mpsc::Sender<Command>,
    close: mpsc::Sender<Close>,
    shared: Arc<Shared>,
    congested_at: usize,
}

impl EventPublisher {
    /// Spawns the publishing task with the default sizes.
    pub fn spawn(js: jetstream::Context, subjects: Subjects) -> Self {
        Self::spawn_with(js, subjects, PublisherConfig::default())
    }

    /// Spawns the publishing task. It ends on [`EventPublisher::close`], or when every handle is
    /// dropped and everything queued is acknowledged.
    pub fn spawn_with(js: jetstream::Context, subjects: Subjects, config: PublisherConfig) -> Self {
        let capacity = config.capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (close, close_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared::default());
        let task = Task {
            js,
            subjects,
            max_in_flight: config.max_in_flight.max(1),
            shared: shared.clone(),
            rx,
            rx_open: true,
            close_rx,
            close_open: true,
            outstanding: BTreeMap::new(),
            retry: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            next_index: 0,
            flushes: Vec::new(),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            resume_at: None,
            published: 0,
        };
        // The task ends by itself (close, or every handle dropped); `close` waits for it.
        tokio::spawn(task.run());
        Self {
            tx,
            close,
            shared,
            congested_at: capacity / 2,
        }
    }

    /// Queues `event` for publishing; never waits. The current span's trace context goes with it.
    /// If the queue is full or the publisher closed, the event is spilled to the log in full.
    pub fn publish(&self, event: CallEvent) {
        self.enqueue(event, None);
    }

    /// Like [`EventPublisher::publish`], for an owner's event: stored only while `fence` holds.
    /// If JetStream refuses it because another owner claimed the call, the event is dropped
    /// (counted in [`metric::FENCED`]) and [`Fence::lost`] is cancelled.
    pub fn publish_fenced(&self, event: CallEvent, fence: &Fence) {
        self.enqueue(event, Some(fence.clone()));
    }

    fn enqueue(&self, event: CallEvent, fence: Option<Fence>) {
        metrics::counter!(metric::QUEUED, "kind" => event.kind()).increment(1);
        let queued = Box::new(Queued {
            event,
            cx: tracing::Span::current().context(),
            fence,
        });
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        let (command, reason) = match self.tx.try_send(Command::Publish(queued)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(command)) => (command, Spill::QueueFull),
            Err(mpsc::error::TrySendError::Closed(command)) => (command, Spill::Closed),
        };
        if let Command::Publish(queued) = command {
            self.spill_now(&queued.event, reason);
        }
    }

    /// Queues `event`, waiting for room in the queue: back-pressure for producers that are not
    /// on the media path. Spills (and returns) only if the publisher is closed.
    pub async fn publish_wait(&self, event: CallEvent) {
        metrics::counter!(metric::QUEUED, "kind" => event.kind()).increment(1);
        let queued = Box::new(Queued {
            event,
            cx: tracing::Span::current().context(),
            fence: None,
        });
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(Command::Publish(q))) =
            self.tx.send(Command::Publish(queued)).await
        {
            self.spill_now(&q.event, Spill::Closed);
        }
    }

    fn spill_now(&self, event: &CallEvent, reason: Spill) {
        spill(event, reason);
        self.shared.spilled.fetch_add(1, Ordering::Relaxed);
        self.shared.settled();
    }

    /// Events accepted and not yet acknowledged or spilled.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// True when the backlog is over half the queue: the broker is slow or away, and intake (new
    /// calls) should pause so that running calls keep their events.
    pub fn is_congested(&self) -> bool {
        self.backlog() >= self.congested_at
    }

    /// Waits until every event queued before this call is acknowledged by JetStream or spilled.
    /// Unbounded while the broker is away: callers on a deadline use [`EventPublisher::close`].
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the publisher: events queued until now get until `timeout` to be acknowledged;
    /// the rest are spilled to the log and counted. Returns within `timeout` (plus scheduling),
    /// whatever the broker does. Later `publish` calls spill at once.
    pub async fn close(&self, timeout: Duration) -> CloseReport {
        let (reply, done) = oneshot::channel();
        let request = Close {
            deadline: Instant::now() + timeout,
            reply,
        };
        if self.close.try_send(request).is_err() {
            // Closed already (or closing): nothing left that this call could change.
            return CloseReport {
                published: 0,
                spilled: self.shared.spilled.load(Ordering::Relaxed) as u64,
            };
        }
        // The task answers at its deadline at the latest; the margin only covers scheduling.
        match tokio::time::timeout(timeout + Duration::from_secs(1), done).await {
            Ok(Ok(report)) => report,
            _ => CloseReport {
                published: 0,
                spilled: self.shared.spilled.load(Ordering::Relaxed) as u64,
            },
        }
    }
}

/// Writes an event that could not be published to the log, whole: the line holds everything
/// needed to publish it again by hand (`subject`, `msg_id`, and `event` as base64 protobuf), e.g.
/// `echo <event> | base64 -d | nats pub <subject> -H Nats-Msg-Id:<msg_id>`. The persister
/// deduplicates on `(call_sid, seq)`, so re-publishing one that did arrive changes nothing.
pub fn spill(event: &CallEvent, reason: Spill) {
    let payload = base64::engine::general_purpose::STANDARD.encode(event.encode_to_vec());
    tracing::error!(
        call_sid = %event.call_sid,
        seq = event.seq,
        kind = event.kind(),
        reason = reason.as_str(),
        msg_id = %event.msg_id(),
        event = %payload,
        "call event not published; this line holds it in full (base64 protobuf) for recovery"
    );
    metrics::counter!(metric::UNPUBLISHED, "reason" => reason.as_str()).increment(1);
}

type Attempt = BoxFuture<'static, (u64, Result<(), AttemptError>)>;

/// The publishing task's state.
struct Task {
    js: jetstream::Context,
    subjects: Subjects,
    max_in_flight: usize,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    /// False once the queue is closed and empty (every handle gone, or closed by `close`).
    rx_open: bool,
    close_rx: mpsc::Receiver<Close>,
    /// False once every handle is gone.
    close_open: bool,
    /// Events taken from the queue and not yet acknowledged, by the order they were taken in.
    outstanding: BTreeMap<u64, Queued>,
    /// Events whose attempt failed, re-sent first once the backoff allows.
    retry: VecDeque<u64>,
    in_flight: FuturesUnordered<Attempt>,
    next_index: u64,
    /// Flush replies, each waiting for every index below its own.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    backoff: Backoff,
    /// While set, nothing is sent: the broker refused the last attempt.
    resume_at: Option<Instant>,
    published: u64,
}

impl Task {
    async fn run(mut self) {
        let mut close: Option<Close> = None;
        loop {
            self.dispatch_retries();
            self.answer_flushes();
            if !self.rx_open && self.outstanding.is_empty() {
                break;
            }
            let can_send = self.in_flight.len() < self.max_in_flight && self.resume_at.is_none();
            let deadline = close.as_ref().map(|c| c.deadline);
            tokio::select! {
                biased;
                () = sleep_until_opt(deadline), if deadline.is_some() => break,
                request = self.close_rx.recv(), if close.is_none() && self.close_open => {
                    match request {
                        Some(request) => {
                            // Take in what is queued so far; later publishes spill as `closed`.
                            self.rx.close();
                            close = Some(request);
                        }
                        None => self.close_open = false,
                    }
                }
                Some((index, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle(index, result);
                }
                () = sleep_until_opt(self.resume_at), if self.resume_at.is_some() => {
                    self.resume_at = None;
                }
                command = self.rx.recv(), if can_send && self.rx_open => match command {
                    Some(Command::Publish(queued)) => {
                        let index = self.next_index;
                        self.next_index += 1;
                        self.outstanding.insert(index, *queued);
                        self.send(index);
                    }
                    Some(Command::Flush(reply)) => self.flushes.push((self.next_index, reply)),
                    None => self.rx_open = false,
                },
            }
        }
        // Whatever is left missed the deadline: spill it, in the order it was accepted. An
        // attempt still in flight may yet be stored; the persister deduplicates on
        // (call_sid, seq), so re-publishing a spilled event that did arrive changes nothing.
        self.in_flight = FuturesUnordered::new();
        self.rx.close();
        for (_, queued) in std::mem::take(&mut self.outstanding) {
            self.spill(&queued.event, Spill::Deadline);
        }
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Publish(queued) => self.spill(&queued.event, Spill::Deadline),
                Command::Flush(reply) => self.flushes.push((0, reply)),
            }
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(());
        }
        let report = CloseReport {
            published: self.published,
            spilled: self.shared.spilled.load(Ordering::Relaxed) as u64,
        };
        if let Some(close) = close {
            let _ = close.reply.send(report);
        }
    }

    fn send(&mut self, index: u64) {
        let Some(queued) = self.outstanding.get(&index) else {
            return;
        };
        let js = self.js.clone();
        let subject = self
            .subjects
            .event(&queued.event.call_sid, queued.event.kind());
        let payload = bytes::Bytes::from(queued.event.encode_to_vec());
        let msg_id = queued.event.msg_id();
        let mut headers = async_nats::HeaderMap::new();
        crate::trace::inject_context(&queued.cx, &mut headers);
        if let Some(fence) = &queued.fence {
            fence.headers(&mut headers);
        }
        self.in_flight.push(Box::pin(async move {
            use async_nats::jetstream::context::PublishErrorKind;
            // Headers first: `message_id` adds to the map that `headers` would replace.
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload)
                .headers(headers)
                .message_id(msg_id.as_str());
            let result = match js.send_publish(subject, publish).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| match e.kind() {
                    PublishErrorKind::WrongLastSequence => AttemptError::Fenced,
                    _ => AttemptError::Other(e.to_string()),
                }),
                Err(e) => Err(AttemptError::Other(e.to_string())),
            };
            (index, result)
        }));
    }

    fn dispatch_retries(&mut self) {
        while self.resume_at.is_none() && self.in_flight.len() < self.max_in_flight {
            let Some(index) = self.retry.pop_front() else {
                break;
            };
            self.send(index);
        }
    }

    fn settle(&mut self, index: u64, result: Result<(), AttemptError>) {
        match result {
            Ok(()) => {
                if let Some(queued) = self.outstanding.remove(&index) {
                    metrics::counter!(metric::PUBLISHED, "kind" => queued.event.kind())
                        .increment(1);
                    self.published += 1;
                    self.shared.settled();
                }
                self.backoff.reset();
            }
            Err(AttemptError::Fenced) => {
                if let Some(queued) = self.outstanding.remove(&index) {
                    metrics::counter!(metric::FENCED, "kind" => queued.event.kind()).increment(1);
                    tracing::warn!(call_sid = %queued.event.call_sid, seq = queued.event.seq,
                        kind = queued.event.kind(),
                        "call event refused: another owner claimed the call");
                    if let Some(fence) = &queued.fence {
                        fence.lost.cancel();
                    }
                    self.shared.settled();
                }
            }
            Err(AttemptError::Other(error)) => {
                metrics::counter!(metric::RETRIES).increment(1);
                if let Some(queued) = self.outstanding.get(&index) {
                    tracing::warn!(call_sid = %queued.event.call_sid, seq = queued.event.seq,
                        %error, "publishing call event failed; retrying");
                }
                self.retry.push_back(index);
                if self.resume_at.is_none() {
                    self.resume_at = Some(Instant::now() + self.backoff.next_delay());
                }
            }
        }
    }

    fn spill(&mut self, event: &CallEvent, reason: Spill) {
        spill(event, reason);
        self.shared.spilled.fetch_add(1, Ordering::Relaxed);
        self.shared.settled();
    }

    /// Answers every flush whose events are all settled.
    fn answer_flushes(&mut self) {
        let lowest = self
            .outstanding
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_index);
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].0 <= lowest {
                let (_, reply) = self.flushes.swap_remove(i);
                let _ = reply.send(());
            } else {
                i += 1;
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
