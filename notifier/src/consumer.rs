//! The JetStream consumer: pulls call events from `VOICE_EVENTS` through the durable consumer
//! `notifier` (shared by every replica), keeps each event for its call's end-of-call report,
//! schedules one delivery per endpoint that wants its type, and acknowledges the message only
//! after that transaction committed. A crash in between means a redelivery, which finds the
//! rows already there (the `webhook-id` is derived from the endpoint and the event), so nothing
//! is lost or sent twice with different content.
//!
//! The consumer is created with `DeliverPolicy::New`: a notifier set up on a running system
//! starts with the events published from then on, not the stream's history.
//!
//! Sending happens elsewhere ([`crate::dispatch`]): scheduling never waits on an endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use persister::pricing::Prices;
use sqlx::PgPool;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _};
use switchboard_service::Health;
use switchboard_service::backoff::Backoff;
use switchboard_service::events::{DurableConsumer, durable_consumer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Clock;
use crate::endpoints::{self, CALL_ENDED, Endpoint};
use crate::{report, store};

/// The durable consumer's name, shared by every notifier replica.
pub const DURABLE_NAME: &str = switchboard_proto::NOTIFIER_CONSUMER;
/// How long the server waits for an ack before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unacknowledged messages in flight across all replicas.
pub const MAX_ACK_PENDING: i64 = 1000;
/// Redelivery delay of a message whose scheduling failed.
const NAK_DELAY: Duration = Duration::from_secs(2);
/// How long after `ended` the end-of-call report is first attempted: events of the call that
/// another replica is scheduling at the same moment are in by then.
pub const REPORT_SETTLE: Duration = Duration::from_secs(1);

/// What the consumer schedules for, and how.
#[derive(Clone)]
pub struct Targets {
    pub endpoints: Arc<Vec<Endpoint>>,
    /// Each endpoint's task is woken when a delivery is scheduled for it.
    pub wake: Arc<HashMap<String, Arc<Notify>>>,
    /// The cost in events' JSON (as the persister prices it).
    pub prices: Prices,
    pub clock: Clock,
}

/// Runs until `stop`; the event being scheduled is finished (or left to redelivery).
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    pool: PgPool,
    targets: Targets,
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
                tracing::warn!(%error, "opening the event consumer failed; retrying");
                tokio::select! {
                    () = backoff.wait() => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };
        backoff.reset();
        health.set_ready(true);
        tracing::info!(durable = DURABLE_NAME, "consuming call events");
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    handle(&pool, &targets, message).await;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "event stream error");
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
    tracing::info!("event consumer stopped");
}

async fn open(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<pull::Stream, async_nats::Error> {
    let consumer = durable_consumer(
        js,
        subjects,
        &DurableConsumer {
            name: DURABLE_NAME,
            description: "Switchboard notifier: call events to webhooks",
            deliver_policy: DeliverPolicy::New,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
        },
    )
    .await?;
    Ok(consumer.messages().await?)
}

/// Schedules one event's deliveries and acknowledges it.
async fn handle(pool: &PgPool, targets: &Targets, message: jetstream::Message) {
    let event = match CallEvent::decode(message.payload.as_ref()) {
        Ok(event) if event.body.is_some() => event,
        _ => {
            metrics::counter!(crate::metrics::EVENTS_UNDECODABLE).increment(1);
            tracing::warn!(subject = %message.subject, "skipping a message that is not a CallEvent");
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(%error, "terminating an undecodable message failed");
            }
            return;
        }
    };
    match schedule(pool, targets, &event).await {
        Ok(woken) => {
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "acknowledging a scheduled event failed; it will be redelivered");
            }
            for wake in woken {
                wake.notify_one();
            }
        }
        Err(error) => {
            tracing::warn!(%error, call_sid = %event.call_sid, "scheduling webhooks failed; the event will be redelivered");
            metrics::counter!(crate::metrics::DB_ERRORS).increment(1);
            if let Err(error) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
                tracing::warn!(%error, "nak failed; the event is redelivered after ack_wait");
            }
            tokio::time::sleep(NAK_DELAY).await;
        }
    }
}

/// In one transaction: keeps the event and schedules its deliveries. Returns the wakers of the
/// endpoints that got one.
async fn schedule(
    pool: &PgPool,
    targets: &Targets,
    event: &CallEvent,
) -> Result<Vec<Arc<Notify>>, sqlx::Error> {
    let Some(event_type) = endpoints::event_type(event.kind()) else {
        return Ok(Vec::new());
    };
    let data = persister::live::to_json(event, &targets.prices);
    let msg_id = event.msg_id();
    let now = targets.clock.now();
    let mut woken = Vec::new();
    let mut tx = pool.begin().await?;
    store::keep_event(
        &mut tx,
        &event.call_sid,
        event.seq,
        event.kind(),
        event.at_ms,
        &data,
    )
    .await?;
    for endpoint in targets.endpoints.iter().filter(|e| e.wants(event_type)) {
        let url = endpoint.url.as_str();
        let id = store::webhook_id(url, &msg_id);
        let (body, due) = if event_type == CALL_ENDED {
            (None, now + REPORT_SETTLE)
        } else {
            (
                Some(report::body(event_type, event.at_ms, data.clone())),
                now,
            )
        };
        store::schedule(
            &mut tx,
            &store::NewDelivery {
                id: &id,
                endpoint_url: url,
                event_type,
                call_sid: &event.call_sid,
                body: body.as_deref(),
                due,
            },
        )
        .await?;
        if let Some(wake) = targets.wake.get(url) {
            woken.push(wake.clone());
        }
    }
    tx.commit().await?;
    metrics::counter!(crate::metrics::EVENTS, "kind" => event.kind()).increment(1);
    Ok(woken)
}
