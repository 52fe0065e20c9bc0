//! Offering a new call to the call-workers and recording calls nobody took.
//!
//! The offer goes out when the webhook arrives, before Twilio opens the media socket, so the
//! worker can open its model session while Twilio connects. It is sent in an `offer` span
//! (child of the call's `webhook` span) whose trace context rides in the request's NATS
//! headers, so the worker's `call` span joins the call's trace. A worker that is full or
//! draining declines, and the offer is made again so another worker of the queue group can
//! take it.

use std::time::Duration;

use async_nats::RequestErrorKind;
use async_nats::client::Request;
use switchboard_proto::event::{DeclineReason, GATEWAY_SEQ_BASE, OwnerReason};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEvent, CallOffer, CallRejected, Direction, Message as _, OfferReply, call_event,
};
use switchboard_service::backoff::Backoff;
use switchboard_service::trace;
use switchboard_twilio::webhook::CallForm;
use tokio::time::Instant;
use tracing::Instrument as _;

/// How an offer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferOutcome {
    /// A worker owns the call now.
    Accepted { worker_id: String, agent_id: String },
    /// Nobody took it; `reason` goes into the `rejected` event (`no_workers`, `timeout`,
    /// `at_capacity`, `no_agent`, ... as the worker said, or `error`).
    Rejected { reason: String },
}

/// Twilio's `Direction` field (`inbound`, `outbound-api`, `outbound-dial`) as the contract's enum.
pub fn direction(twilio: &str) -> Direction {
    match twilio {
        "inbound" => Direction::Inbound,
        d if d.starts_with("outbound") => Direction::Outbound,
        _ => Direction::Unspecified,
    }
}

/// The offer for a webhook's call.
pub fn call_offer(form: &CallForm, gateway_id: &str, offered_at_ms: i64) -> CallOffer {
    CallOffer {
        call_sid: form.call_sid.clone(),
        account_sid: form.account_sid.clone(),
        from: form.from.clone(),
        to: form.to.clone(),
        direction: direction(&form.direction) as i32,
        gateway_id: gateway_id.to_owned(),
        offered_at_ms,
        agent_id: String::new(),
        ..Default::default()
    }
}

/// How many times an offer is made when workers decline it for a passing reason (full, or
/// draining for a deploy). The queue group hands each attempt to a random member, so another
/// worker with room usually takes it: a caller hears the busy message only when the workers
/// really are full.
pub const OFFER_ATTEMPTS: u32 = 4;

/// Declines that another worker may not share. Nothing else is retried: after a timeout the
/// worker may still have taken the call, and offering it again could put it on two workers.
fn worth_another_worker(reason: &str) -> bool {
    DeclineReason::parse(reason).is_some_and(DeclineReason::passing)
}

/// Requests `offer` on the offer subject (one worker of the queue group answers), in an
/// `offer` span whose context goes in the requests' headers. Declines for a passing reason are
/// offered again, up to [`OFFER_ATTEMPTS`] times, all within `timeout`.
pub async fn offer(
    nats: &async_nats::Client,
    subjects: &Subjects,
    offer: &CallOffer,
    timeout: Duration,
) -> OfferOutcome {
    let span =
        tracing::info_span!("offer", call_sid = %offer.call_sid, attempts = tracing::field::Empty);
    async {
        let deadline = Instant::now() + timeout;
        let payload = bytes::Bytes::from(offer.encode_to_vec());
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let request = Request::new()
                .headers(trace::headers())
                .payload(payload.clone())
                .timeout(Some(remaining));
            let outcome = send(nats, subjects, offer, request).await;
            match &outcome {
                OfferOutcome::Rejected { reason }
                    if worth_another_worker(reason)
                        && attempt < OFFER_ATTEMPTS
                        && Instant::now() < deadline =>
                {
                    metrics::counter!(crate::metrics::OFFER_RETRIES, "reason" => reason.clone())
                        .increment(1);
                    tracing::debug!(attempt, %reason, "offer declined; offering it again");
                    attempt += 1;
                }
                OfferOutcome::Rejected { reason } => {
                    tracing::Span::current().record("attempts", attempt);
                    tracing::debug!(%reason, "offer not taken");
                    return outcome;
                }
                OfferOutcome::Accepted { .. } => {
                    tracing::Span::current().record("attempts", attempt);
                    return outcome;
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn send(
    nats: &async_nats::Client,
    subjects: &Subjects,
    offer: &CallOffer,
    request: Request,
) -> OfferOutcome {
    match request_reply(nats, subjects.offer(), offer, request).await {
        Ok(reply) => OfferOutcome::Accepted {
            worker_id: reply.worker_id,
            agent_id: reply.agent_id,
        },
        Err(reason) => OfferOutcome::Rejected { reason },
    }
}

/// One offer request: the accepting reply, or why the call was not taken (the worker's decline
/// reason, `no_workers`, `timeout` or `error`).
async fn request_reply(
    nats: &async_nats::Client,
    subject: String,
    offer: &CallOffer,
    request: Request,
) -> Result<OfferReply, String> {
    match nats.send_request(subject, request).await {
        Ok(reply) => match OfferReply::decode(reply.payload) {
            Ok(reply) if reply.accepted => Ok(reply),
            Ok(reply) if reply.reason.is_empty() => Err("declined".to_owned()),
            Ok(reply) => Err(reply.reason),
            Err(error) => {
                tracing::warn!(call_sid = %offer.call_sid, %error, "undecodable offer reply");
                Err("error".to_owned())
            }
        },
        Err(error) => {
            let reason = match error.kind() {
                RequestErrorKind::NoResponders => NO_WORKERS,
                RequestErrorKind::TimedOut => TIMEOUT,
                _ => {
                    tracing::warn!(call_sid = %offer.call_sid, %error, "offering the call failed");
                    "error"
                }
            };
            Err(reason.to_owned())
        }
    }
}

/// The reason of an offer no worker was subscribed to.
const NO_WORKERS: &str = "no_workers";
/// The reason of an offer nobody answered in time.
const TIMEOUT: &str = "timeout";

/// The offer of a call whose owner was lost or hands it over: only what the gateway holding
/// the stream knows (the worker rebuilds the rest from the call's events).
pub fn takeover_offer(
    start: &switchboard_proto::StreamStart,
    agent_id: &str,
    gateway_id: &str,
    takeover: &Takeover,
) -> CallOffer {
    CallOffer {
        call_sid: start.call_sid.clone(),
        account_sid: start.account_sid.clone(),
        gateway_id: gateway_id.to_owned(),
        offered_at_ms: switchboard_proto::now_ms(),
        agent_id: agent_id.to_owned(),
        epoch: takeover.epoch,
        takeover: takeover.reason.as_str().to_owned(),
        previous_worker_id: takeover.previous_worker_id.clone(),
        owner_silent_since_ms: takeover.silent_since_ms,
        ..Default::default()
    }
}

/// What a takeover offer is about.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// The epoch the next owner claims.
    pub epoch: u32,
    pub reason: OwnerReason,
    /// The owner being replaced (empty if it never said who it was).
    pub previous_worker_id: String,
    /// When the gateway last heard that owner, in milliseconds since the Unix epoch.
    pub silent_since_ms: i64,
}

/// How a takeover offer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverOutcome {
    /// `worker_id` took the call with `epoch`.
    Accepted { worker_id: String, epoch: u32 },
    /// Another offer of the same epoch won the claim: its owner's frames will commit it.
    ClaimLost,
    /// Nobody took it by the deadline, or a worker refused it for a reason another worker would
    /// share (`no_agent`, `bad_offer`, `error`).
    NotTaken { reason: String },
}

/// Whether a failed takeover attempt is worth repeating: a passing decline, nobody subscribed
/// (workers restarting), or a timeout. Repeating after a timeout is safe here, unlike for a new
/// call, because the owner claim is conditional: two workers cannot both win an epoch.
fn retry_takeover(reason: &str) -> bool {
    reason == NO_WORKERS || reason == TIMEOUT || worth_another_worker(reason)
}

/// Offers a call as a takeover until a worker accepts it or `deadline`, retrying with the
/// shared jittered backoff; each attempt waits at most `per_attempt` for its answer. Runs in a
/// `takeover_offer` span whose context rides in the request headers, so the new owner continues
/// the call's trace.
pub async fn offer_takeover(
    nats: &async_nats::Client,
    subjects: &Subjects,
    offer: &CallOffer,
    per_attempt: Duration,
    deadline: Instant,
) -> TakeoverOutcome {
    let span = tracing::info_span!("takeover_offer", call_sid = %offer.call_sid,
        epoch = offer.epoch, takeover = %offer.takeover, attempts = tracing::field::Empty);
    async {
        let payload = bytes::Bytes::from(offer.encode_to_vec());
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(800));
        let mut attempt = 0u32;
        let mut reason = TIMEOUT.to_owned();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            let request = Request::new()
                .headers(trace::headers())
                .payload(payload.clone())
                .timeout(Some(per_attempt.min(remaining)));
            // To every worker at once: the live one whose claim wins answers (see
            // `Subjects::takeover`).
            match request_reply(nats, subjects.takeover(), offer, request).await {
                Ok(reply) if reply.epoch == offer.epoch => {
                    return TakeoverOutcome::Accepted {
                        worker_id: reply.worker_id,
                        epoch: reply.epoch,
                    };
                }
                Ok(reply) => {
                    // A worker that does not echo the epoch does not hold a claim of it.
                    tracing::warn!(worker_id = %reply.worker_id, epoch = reply.epoch,
                        "takeover accepted for another epoch; ignored");
                    reason = "bad_reply".to_owned();
                }
                Err(declined) if declined == DeclineReason::ClaimLost.as_str() => {
                    return TakeoverOutcome::ClaimLost;
                }
                Err(declined) if retry_takeover(&declined) => reason = declined,
                Err(declined) => return TakeoverOutcome::NotTaken { reason: declined },
            }
            metrics::counter!(crate::metrics::OFFER_RETRIES, "reason" => reason.clone())
                .increment(1);
            let pause = backoff
                .next_delay()
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        TakeoverOutcome::NotTaken { reason }
    }
    .instrument(span)
    .await
}

/// The gateway's record of a call nobody took. Gateways number their events from
/// [`GATEWAY_SEQ_BASE`], so this never collides with a worker's events for the same call.
pub fn rejected_event(form: &CallForm, reason: &str, at_ms: i64) -> CallEvent {
    CallEvent {
        call_sid: form.call_sid.clone(),
        seq: GATEWAY_SEQ_BASE,
        at_ms,
        body: Some(call_event::Body::Rejected(CallRejected {
            reason: reason.to_owned(),
            from: form.from.clone(),
            to: form.to.clone(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_map_to_the_contract() {
        assert_eq!(direction("inbound"), Direction::Inbound);
        assert_eq!(direction("outbound-api"), Direction::Outbound);
        assert_eq!(direction("outbound-dial"), Direction::Outbound);
        assert_eq!(direction(""), Direction::Unspecified);
        assert_eq!(direction("sideways"), Direction::Unspecified);
    }

    #[test]
    fn offers_and_rejections_carry_the_call() {
        let form = CallForm {
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: "+15550001234".into(),
            to: "+15550001111".into(),
            direction: "outbound-api".into(),
            ..Default::default()
        };
        let offer = call_offer(&form, "gw-1", 5);
        assert_eq!(offer.call_sid, "CA1");
        assert_eq!(offer.account_sid, "AC1");
        assert_eq!(offer.from, "+15550001234");
        assert_eq!(offer.to, "+15550001111");
        assert_eq!(offer.direction(), Direction::Outbound);
        assert_eq!(offer.gateway_id, "gw-1");
        assert_eq!(offer.offered_at_ms, 5);

        let ev = rejected_event(&form, "no_workers", 7);
        assert_eq!(ev.kind(), "rejected");
        assert_eq!(ev.seq, GATEWAY_SEQ_BASE);
        assert_eq!(ev.msg_id(), format!("CA1:{GATEWAY_SEQ_BASE}"));
        let Some(call_event::Body::Rejected(r)) = ev.body else {
            panic!()
        };
        assert_eq!(
            (r.reason.as_str(), r.from.as_str(), r.to.as_str()),
            ("no_workers", "+15550001234", "+15550001111")
        );
    }
}
