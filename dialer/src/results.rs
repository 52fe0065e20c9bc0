//! How the dialer learns each call's result: the gateway turns Twilio's status callbacks and
//! answering-machine verdicts into call events (`status`, `amd`), and the dialer reads them
//! from `VOICE_EVENTS` through its own durable consumer (`dialer`, shared by every replica,
//! filtered to those two kinds). An event is acknowledged only after its effect is committed, so
//! a crash means a redelivery, which finds the attempt already ended.
//!
//! A `status` of a CallSid the dialer does not know is either another call's (inbound, or
//! `POST /calls`) or one of its own whose create request's answer is not stored yet; while some
//! attempt awaits its answer such an event is redelivered a few times before it is let go.
//! Likewise an answered call's `completed` can come before its `amd` verdict (a voicemail box
//! that hung up first): it is redelivered a few times, so the verdict decides the result.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use sqlx::PgPool;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _, call_event};
use switchboard_service::Health;
use switchboard_service::backoff::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::pacer::Clock;
use crate::store::{self, AttemptKey, Finished};

/// The durable consumer's name, shared by every dialer replica.
pub const DURABLE_NAME: &str = switchboard_proto::DIALER_CONSUMER;
/// The event kinds the consumer reads.
pub const KINDS: [&str; 2] = ["status", "amd"];
/// How long the server waits for an ack before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unacknowledged messages in flight across all replicas.
const MAX_ACK_PENDING: i64 = 1000;
/// Redelivery delay of an event not yet matched or not yet stored.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Deliveries of an unknown CallSid's status before it counts as another call's.
const UNKNOWN_DELIVERIES: i64 = 10;
/// Deliveries of an answered call's final status that wait for its answering-machine verdict
/// (Twilio posts it even when the call ended first); then the call counts as answered.
const VERDICT_DELIVERIES: i64 = 6;

/// Runs until `stop`. `ended` is notified when an attempt ends (a concurrency slot is free).
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    pool: PgPool,
    clock: Clock,
    ended: Arc<Notify>,
    health: Health,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        let opened = tokio::select! {
            opened = open(&js, &subjects) => opened,
            () = stop.cancelled() => break,
        };
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(error) => {
                health.set_ready(false);
                tracing::warn!(%error, "opening the result consumer failed; retrying");
                backoff.wait_or(&stop).await;
                continue;
            }
        };
        backoff.reset();
        health.set_ready(true);
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => handle(&pool, clock, &ended, message).await,
                Some(Err(error)) => {
                    tracing::warn!(%error, "result stream error");
                    if matches!(
                        error.kind(),
                        pull::MessagesErrorKind::ConsumerDeleted
                            | pull::MessagesErrorKind::PushBasedConsumer
                    ) {
                        break;
                    }
                }
                None => break,
            }
        }
        health.set_ready(false);
    }
}

async fn open(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<pull::Stream, async_nats::Error> {
    let stream = switchboard_service::events::ensure_stream(js, subjects).await?;
    let consumer = stream
        .get_or_create_consumer(
            DURABLE_NAME,
            pull::Config {
                durable_name: Some(DURABLE_NAME.to_owned()),
                description: Some("Switchboard dialer: call results of campaign calls".to_owned()),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                filter_subjects: KINDS.iter().map(|k| subjects.event("*", k)).collect(),
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer.messages().await?)
}

/// What handling one event asks of the message.
enum Ack {
    Done,
    Later,
}

async fn handle(pool: &PgPool, clock: Clock, ended: &Notify, message: jetstream::Message) {
    let deliveries = message.info().map(|i| i.delivered).unwrap_or(1);
    let ack = match CallEvent::decode(message.payload.as_ref()) {
        Ok(event) => match apply(pool, clock, &event, deliveries).await {
            Ok((ack, finished)) => {
                if finished {
                    ended.notify_waiters();
                }
                ack
            }
            Err(error) => {
                metrics::counter!(m::DB_ERRORS).increment(1);
                tracing::warn!(%error, call_sid = %event.call_sid, "storing a call result failed");
                Ack::Later
            }
        },
        Err(_) => {
            tracing::warn!(subject = %message.subject, "skipping a message that is not a CallEvent");
            Ack::Done
        }
    };
    let acked = match ack {
        Ack::Done => message.ack().await,
        Ack::Later => message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await,
    };
    if let Err(error) = acked {
        tracing::debug!(%error, "acknowledging a call result failed; it will be redelivered");
    }
}

/// Applies one event; whether an attempt ended.
async fn apply(
    pool: &PgPool,
    clock: Clock,
    event: &CallEvent,
    deliveries: i64,
) -> Result<(Ack, bool), sqlx::Error> {
    match &event.body {
        Some(call_event::Body::Amd(amd)) => {
            let record = || store::record_answered_by(pool, &event.call_sid, &amd.answered_by);
            if record().await? || deliveries >= UNKNOWN_DELIVERIES {
                return Ok((Ack::Done, false));
            }
            // Not stored yet, or stored between the two queries: look again after checking.
            if store::awaiting_call_sids(pool).await? {
                return Ok((Ack::Later, false));
            }
            record().await?;
            Ok((Ack::Done, false))
        }
        Some(call_event::Body::Status(status)) => {
            let finish = || {
                store::finish_attempt(
                    pool,
                    AttemptKey::CallSid(&event.call_sid),
                    &status.status,
                    None,
                    deliveries < VERDICT_DELIVERIES,
                    clock.now(),
                )
            };
            let mut finished = finish().await?;
            if finished == Finished::Unknown
                && crate::outcome::CallResult::from_twilio(&status.status, None).is_some()
            {
                if deliveries < UNKNOWN_DELIVERIES && store::awaiting_call_sids(pool).await? {
                    return Ok((Ack::Later, false));
                }
                // The CallSid may have been stored between the two queries.
                finished = finish().await?;
            }
            match finished {
                Finished::Now(result) => {
                    metrics::counter!(m::ATTEMPTS_FINISHED, "result" => result.as_str())
                        .increment(1);
                    Ok((Ack::Done, true))
                }
                Finished::Already => Ok((Ack::Done, false)),
                Finished::AwaitingVerdict => Ok((Ack::Later, false)),
                Finished::Unknown => Ok((Ack::Done, false)),
            }
        }
        _ => Ok((Ack::Done, false)),
    }
}
