//! The JetStream consumer: pulls call events from `VOICE_EVENTS` through the durable consumer
//! `persister` (shared by every replica) and applies them to Postgres in batches: whatever is
//! pending within a few milliseconds, up to [`MAX_BATCH`] events, in one transaction.
//!
//! Pulling and writing overlap: the pull loop gathers the next batch while a writer task commits
//! the previous one, and hands it over as soon as the writer is free, so neither Postgres nor
//! the pull waits on the other under load, and batches grow with the load.
//!
//! A message is acknowledged only after its batch's transaction committed, so a crash between
//! the two means a redelivery, which the ledger turns into a no-op. When the database fails the
//! batch is negatively acknowledged with a delay, readiness drops, and the writer waits (with
//! backoff) until the database answers again before taking the next batch. A payload that is
//! not a valid `CallEvent` can never succeed: it is terminated (no redelivery) and counted. Pull
//! errors such as missed heartbeats are normal during network blips and server restarts, so they
//! are logged and the loop goes on; if the message stream ends, it is recreated.
//!
//! Lag is observable without touching the write path: [`poll_lag`] reads the durable consumer's
//! pending counts every few seconds, and each committed event records its age.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use sqlx::PgPool;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _};
use switchboard_service::backoff::Backoff;
use switchboard_service::events::{DurableConsumer, durable_consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::batch;
use crate::pricing::Prices;
use crate::readiness::Readiness;
use crate::spans;
use crate::writer::{self, Applied};

/// The durable consumer's name, shared by every persister replica.
pub const DURABLE_NAME: &str = switchboard_proto::PERSISTER_CONSUMER;
/// How long the server waits for an ack before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unacknowledged messages in flight across all replicas.
/// Room for the batch being written, the one being gathered and the pull's prefetch. (Set when
/// the durable consumer is created; an existing consumer keeps its value.)
pub const MAX_ACK_PENDING: i64 = 4 * MAX_BATCH as i64;
/// Most events written in one transaction.
pub const MAX_BATCH: usize = 1000;
/// How long a batch waits for more events after its first one.
const BATCH_WAIT: Duration = Duration::from_millis(5);
/// Redelivery delay of a message whose write failed.
const NAK_DELAY: Duration = Duration::from_secs(2);
/// Pull errors in a row after which the message stream is recreated.
const MAX_CONSECUTIVE_ERRORS: u32 = 10;
/// How often [`poll_lag`] reads the consumer's pending counts.
pub const LAG_POLL_EVERY: Duration = Duration::from_secs(5);

/// Runs until `stop` is cancelled. The batch the writer has when `stop` fires is finished and
/// acknowledged; messages pulled but not handed over are left to redelivery.
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    pool: PgPool,
    readiness: Readiness,
    prices: Prices,
    stop: CancellationToken,
) {
    let (tx, inbox) = mpsc::channel(1);
    let writer = Writer {
        tx,
        idle: Arc::new(Semaphore::new(1)),
    };
    let task = tokio::spawn(write_batches(
        inbox,
        pool,
        readiness.clone(),
        prices,
        stop.clone(),
    ));
    pull_batches(&js, &subjects, &readiness, &stop, &writer).await;
    drop(writer);
    if let Err(error) = task.await {
        tracing::error!(%error, "the batch writer failed");
    }
    tracing::info!("event consumer stopped");
}

/// The pull loop's side of the writer task. A batch is handed over with the writer's only
/// `idle` permit, which the writer releases when the batch is done: so the pull loop keeps
/// filling the next batch for as long as the writer is busy, and batches are as large as the
/// database's pace allows.
struct Writer {
    tx: mpsc::Sender<(Vec<jetstream::Message>, OwnedSemaphorePermit)>,
    idle: Arc<Semaphore>,
}

/// The writer task: applies the batches in order until the pull loop hangs up.
async fn write_batches(
    mut inbox: mpsc::Receiver<(Vec<jetstream::Message>, OwnedSemaphorePermit)>,
    pool: PgPool,
    readiness: Readiness,
    prices: Prices,
    stop: CancellationToken,
) {
    while let Some((batch, idle)) = inbox.recv().await {
        handle_batch(&pool, &readiness, &prices, &stop, batch).await;
        drop(idle);
    }
}

/// Opens the message stream (again after failures) and hands gathered batches to the writer
/// until `stop`.
async fn pull_batches(
    js: &jetstream::Context,
    subjects: &Subjects,
    readiness: &Readiness,
    stop: &CancellationToken,
    writer: &Writer,
) {
    let mut backoff = backoff();
    while !stop.is_cancelled() {
        // Opening waits on JetStream (request timeouts while NATS is away); shutdown wins.
        let opened = tokio::select! {
            opened = open(js, subjects) => opened,
            () = stop.cancelled() => break,
        };
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(error) => {
                readiness.set_consumer(false);
                metrics::counter!(crate::metrics::CONSUMER_ERRORS, "kind" => "open").increment(1);
                tracing::warn!(%error, "opening the event consumer failed; retrying");
                backoff.wait_or(stop).await;
                continue;
            }
        };
        backoff.reset();
        readiness.set_consumer(true);
        tracing::info!(durable = DURABLE_NAME, "consuming call events");

        let mut errors = 0;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = messages.next() => next,
            };
            let interruption = match next {
                Some(Ok(message)) => {
                    errors = 0;
                    match gather(message, &mut messages, writer, stop).await {
                        Gathered::Handed(interruption) => interruption,
                        Gathered::Stopped => break,
                    }
                }
                Some(Err(error)) => Some(Interruption::Error(error)),
                None => Some(Interruption::End),
            };
            match interruption {
                None => {}
                Some(Interruption::Error(error)) => {
                    let kind = error.kind();
                    metrics::counter!(crate::metrics::CONSUMER_ERRORS, "kind" => kind.to_string())
                        .increment(1);
                    errors += 1;
                    let fatal = matches!(
                        kind,
                        MessagesErrorKind::ConsumerDeleted
                            | MessagesErrorKind::RequestLimitExceeded
                            | MessagesErrorKind::PushBasedConsumer
                    );
                    if fatal || errors >= MAX_CONSECUTIVE_ERRORS {
                        tracing::warn!(%error, errors, "event stream failed; recreating it");
                        break;
                    }
                    tracing::warn!(%error, "transient event stream error");
                }
                Some(Interruption::End) => {
                    tracing::warn!("event stream ended; recreating it");
                    break;
                }
            }
        }
        readiness.set_consumer(false);
        if !stop.is_cancelled() {
            backoff.wait_or(stop).await;
        }
    }
}

/// What stopped the gathering of a batch early, other than the batch being full or the wait
/// being over.
enum Interruption {
    Error(pull::MessagesError),
    End,
}

/// How gathering a batch ended.
enum Gathered {
    /// The batch went to the writer; the pull may have been interrupted meanwhile.
    Handed(Option<Interruption>),
    /// `stop` fired before the writer took the batch: its messages are left to redelivery.
    Stopped,
}

/// Starting from `first`, takes what else arrives within [`BATCH_WAIT`], then keeps taking
/// messages while the writer is still busy, up to [`MAX_BATCH`] messages, and hands the batch to
/// the writer: when idle an event waits at most a few ms, and under load a batch holds whatever
/// arrived while the previous one was being written.
async fn gather(
    first: jetstream::Message,
    messages: &mut pull::Stream,
    writer: &Writer,
    stop: &CancellationToken,
) -> Gathered {
    let mut batch = vec![first];
    let mut interruption = None;
    let deadline = Instant::now() + BATCH_WAIT;
    while batch.len() < MAX_BATCH {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(message))) => batch.push(message),
            Ok(Some(Err(error))) => {
                interruption = Some(Interruption::Error(error));
                break;
            }
            Ok(None) => {
                interruption = Some(Interruption::End);
                break;
            }
            Err(_) => break,
        }
    }
    let idle = writer.idle.clone().acquire_owned();
    tokio::pin!(idle);
    let permit = loop {
        let more = interruption.is_none() && batch.len() < MAX_BATCH;
        tokio::select! {
            biased;
            () = stop.cancelled() => return Gathered::Stopped,
            permit = &mut idle => match permit {
                Ok(permit) => break permit,
                // Never closed; if it were, there would be no writer to hand to.
                Err(_) => return Gathered::Stopped,
            },
            next = messages.next(), if more => match next {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => interruption = Some(Interruption::Error(error)),
                None => interruption = Some(Interruption::End),
            },
        }
    };
    match writer.tx.send((batch, permit)).await {
        Ok(()) => Gathered::Handed(interruption),
        Err(_) => Gathered::Stopped,
    }
}

/// Writes a batch in one transaction and acknowledges every message after the commit; on a
/// database failure naks them all and waits for the database. If the database refuses the data
/// of some event in the batch, the batch is retried event by event so that only the offending
/// event is skipped.
async fn handle_batch(
    pool: &PgPool,
    readiness: &Readiness,
    prices: &Prices,
    stop: &CancellationToken,
    messages: Vec<jetstream::Message>,
) {
    let mut pending = Vec::with_capacity(messages.len());
    let mut decoded = Vec::with_capacity(messages.len());
    for message in messages {
        let stream_seq = message.info().ok().map(|info| info.stream_sequence);
        match decode(&message.payload) {
            Ok(event) => {
                pending.push(batch::Pending { event, stream_seq });
                decoded.push(message);
            }
            Err(reason) => terminate_undecodable(&message, stream_seq, &reason).await,
        }
    }
    if pending.is_empty() {
        return;
    }

    // The messages keep their headers: each call's `persist` span continues its trace.
    let spans = spans::for_batch(
        pending
            .iter()
            .zip(&decoded)
            .map(|(p, m)| (p.event.call_sid.as_str(), m.headers.as_ref())),
    );
    write_batch(pool, readiness, prices, stop, pending, decoded)
        .instrument(spans.batch.clone())
        .await;
    // The `persist` spans end here, after the commit and the acks.
    drop(spans);
}

/// [`handle_batch`] once decoded: one transaction, then the acks (or the fallbacks).
async fn write_batch(
    pool: &PgPool,
    readiness: &Readiness,
    prices: &Prices,
    stop: &CancellationToken,
    pending: Vec<batch::Pending>,
    decoded: Vec<jetstream::Message>,
) {
    let started = Instant::now();
    match batch::apply(pool, &pending, prices).await {
        Ok(applied) => {
            let committed_ms = switchboard_proto::now_ms();
            if !readiness.database_ok() {
                readiness.set_database(true);
            }
            metrics::histogram!(crate::metrics::BATCH_WRITE)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!(crate::metrics::BATCH_SIZE).record(pending.len() as f64);
            // One counter update per (kind, result), not per event.
            let mut counts: HashMap<(&'static str, &'static str), u64> = HashMap::new();
            let age = metrics::histogram!(crate::metrics::EVENT_AGE);
            for (p, applied) in pending.iter().zip(&applied) {
                let result = match applied {
                    Applied::Written => {
                        if p.event.at_ms > 0 {
                            age.record(
                                committed_ms.saturating_sub(p.event.at_ms).max(0) as f64 / 1000.0,
                            );
                        }
                        "written"
                    }
                    Applied::Duplicate => "duplicate",
                };
                *counts.entry((p.event.kind(), result)).or_insert(0) += 1;
            }
            for ((kind, result), n) in counts {
                metrics::counter!(crate::metrics::EVENTS, "kind" => kind, "result" => result)
                    .increment(n);
            }
            tracing::debug!(events = pending.len(), "batch applied");
            // After the commit: losing an ack only costs a redelivery, which is a no-op.
            for (message, p) in decoded.iter().zip(&pending) {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, call_sid = %p.event.call_sid, seq = p.event.seq,
                        "acknowledging an applied event failed; it will be redelivered");
                }
            }
        }
        Err(error) if is_poison(&error) => {
            tracing::warn!(%error, events = pending.len(),
                "the database refused some event of a batch; applying them one by one");
            for message in decoded {
                handle(pool, readiness, prices, stop, message).await;
            }
        }
        Err(error) => {
            metrics::counter!(crate::metrics::DB_ERRORS).increment(1);
            readiness.set_database(false);
            tracing::warn!(%error, events = pending.len(),
                "writing a batch failed; it will be redelivered");
            for message in &decoded {
                if let Err(error) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
                    tracing::warn!(%error, "nak failed; the event is redelivered after ack_wait");
                }
            }
            wait_for_database(pool, readiness, stop).await;
        }
    }
}

/// Reports the durable consumer's backlog every [`LAG_POLL_EVERY`] until `stop`:
/// `persister_pending_events` (in the stream, not yet delivered to any replica) and
/// `persister_ack_pending_events` (delivered, not yet acknowledged). A separate JetStream request
/// on its own schedule, never on the write path; failures only skip a reading.
pub async fn poll_lag(js: jetstream::Context, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let info = async {
            let s = match &stream {
                Some(s) => s,
                None => stream.insert(js.get_stream(switchboard_proto::EVENTS_STREAM).await?),
            };
            Ok::<_, async_nats::Error>(s.consumer_info(DURABLE_NAME).await?)
        };
        let info = tokio::select! {
            info = info => info,
            () = stop.cancelled() => return,
        };
        match info {
            Ok(info) => {
                metrics::gauge!(crate::metrics::PENDING_EVENTS).set(info.num_pending as f64);
                metrics::gauge!(crate::metrics::ACK_PENDING_EVENTS)
                    .set(info.num_ack_pending as f64);
            }
            Err(error) => {
                // The stream may be recreated; look it up again next time.
                stream = None;
                tracing::debug!(%error, "reading the consumer's pending counts failed");
            }
        }
    }
}

async fn terminate_undecodable(
    message: &jetstream::Message,
    stream_seq: Option<u64>,
    reason: &str,
) {
    metrics::counter!(crate::metrics::EVENTS_UNDECODABLE).increment(1);
    tracing::warn!(subject = %message.subject, ?stream_seq, %reason,
        "skipping an event that is not a valid CallEvent");
    if let Err(error) = message.ack_with(AckKind::Term).await {
        tracing::warn!(%error, "terminating an undecodable message failed");
    }
}

/// Makes sure the stream and the durable consumer exist and starts pulling.
async fn open(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<pull::Stream, async_nats::Error> {
    let consumer = durable_consumer(
        js,
        subjects,
        &DurableConsumer {
            name: DURABLE_NAME,
            description: "Switchboard persister: call events into Postgres",
            deliver_policy: DeliverPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
        },
    )
    .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(MAX_BATCH)
        .messages()
        .await?)
}

/// Decodes, writes and acknowledges one message (the fallback when a batch holds an event the
/// database refuses).
async fn handle(
    pool: &PgPool,
    readiness: &Readiness,
    prices: &Prices,
    stop: &CancellationToken,
    message: jetstream::Message,
) {
    let stream_seq = message.info().ok().map(|info| info.stream_sequence);
    let event = match decode(&message.payload) {
        Ok(event) => event,
        Err(reason) => {
            terminate_undecodable(&message, stream_seq, &reason).await;
            return;
        }
    };

    let started = Instant::now();
    match writer::apply(pool, &event, stream_seq, prices).await {
        Ok(applied) => {
            if !readiness.database_ok() {
                readiness.set_database(true);
            }
            let result = match applied {
                Applied::Written => "written",
                Applied::Duplicate => "duplicate",
            };
            metrics::counter!(crate::metrics::EVENTS, "kind" => event.kind(), "result" => result)
                .increment(1);
            metrics::histogram!(crate::metrics::WRITE).record(started.elapsed().as_secs_f64());
            tracing::debug!(call_sid = %event.call_sid, seq = event.seq, kind = event.kind(),
                result, "event applied");
            // After the commit: losing this ack only costs a redelivery, which is a no-op.
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, call_sid = %event.call_sid, seq = event.seq,
                    "acknowledging an applied event failed; it will be redelivered");
            }
        }
        Err(error) if is_poison(&error) => {
            // The database refused this event's data (not the connection): retrying cannot help.
            metrics::counter!(crate::metrics::EVENTS_REJECTED).increment(1);
            tracing::error!(%error, call_sid = %event.call_sid, seq = event.seq,
                kind = event.kind(), "the database rejected an event; skipping it");
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(%error, "terminating a rejected message failed");
            }
        }
        Err(error) => {
            metrics::counter!(crate::metrics::DB_ERRORS).increment(1);
            readiness.set_database(false);
            tracing::warn!(%error, call_sid = %event.call_sid, seq = event.seq,
                "writing an event failed; it will be redelivered");
            if let Err(error) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
                tracing::warn!(%error, "nak failed; the event is redelivered after ack_wait");
            }
            wait_for_database(pool, readiness, stop).await;
        }
    }
}

/// A decodable, well-formed event or why not.
fn decode(payload: &[u8]) -> Result<CallEvent, String> {
    let event = CallEvent::decode(payload).map_err(|e| e.to_string())?;
    writer::check(&event).map_err(|e| e.to_string())?;
    Ok(event)
}

/// Data errors (SQLSTATE class 22) and integrity violations (23) depend on the event, not on
/// the database's health.
fn is_poison(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// Polls the database with backoff until it answers (or shutdown).
async fn wait_for_database(pool: &PgPool, readiness: &Readiness, stop: &CancellationToken) {
    let mut backoff = backoff();
    loop {
        backoff.wait_or(stop).await;
        if stop.is_cancelled() {
            return;
        }
        if crate::db::ping(pool).await.is_ok() {
            readiness.set_database(true);
            tracing::info!("database reachable again");
            return;
        }
    }
}

/// The persister's retry backoff (the shared jittered one): from 100 ms up to 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_malformed_events_are_not_decodable() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        // Decodes as protobuf, but has no call sid.
        assert!(decode(&[]).is_err());
        let ok = CallEvent {
            call_sid: "CA1".into(),
            seq: 3,
            ..Default::default()
        };
        assert_eq!(decode(&ok.encode_to_vec()), Ok(ok));
    }
}
