//! What a stream actor does about its call's owner beyond the socket: probing a silent owner,
//! offering the call to another worker, and closing the call when nobody takes it.
//!
//! The decisions are [`crate::owner`]'s; this module runs their I/O in tracked tasks that
//! report back to the actor through [`Ownership::next_report`], so the media path never waits
//! on a probe, an offer or JetStream.
//!
//! When no worker takes a lost call within `TAKEOVER_TIMEOUT_MS`, the gateway closes the record
//! itself ([`close_record`]): it claims the next ownership epoch with its own `owner` event
//! (conditional on the call's last `owner` event, exactly as a worker claims), which fences the
//! old owner (a worker that wakes up later has every event refused and stops), then publishes
//! `ended` with reason `worker_lost` under that fence.

use std::time::Duration;

use async_nats::RequestErrorKind;
use async_nats::jetstream;
use switchboard_proto::event::{EndReason, GATEWAY_SEQ_BASE, OwnerReason};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEnded, CallEvent, CallOwner, CallRecording, Message as _, Owner, OwnerAck, OwnerProbe,
    call_event, now_ms,
};
use switchboard_service::events::{ClaimError, EventPublisher, claim, last_owner};
use switchboard_twilio::twiml;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::offer::TakeoverOutcome;
use crate::owner::{OwnerWatch, ProbeAnswer};
use crate::replay::ReplayRing;

/// What the caller hears when the call is lost and its owner never said what its agent says
/// then (no `Owner` frame arrived): the agents file's default.
pub use switchboard_agents::DEFAULT_APOLOGY;

/// The `seq` of the gateway's own `owner` claim when it closes a lost call: in the gateways'
/// range (`GATEWAY_SEQ_BASE` and up, below 2^32), above the status callbacks'
/// (`GATEWAY_SEQ_BASE + 1 + SequenceNumber`). Its `ended` follows at the next seq.
pub const LOST_OWNER_SEQ: u64 = GATEWAY_SEQ_BASE + 900_000;

/// How many times the fencing claim is tried when another claim lands between reading the
/// call's last `owner` event and claiming after it.
const CLAIM_ATTEMPTS: u32 = 5;

/// What a task reports back to the stream actor.
#[derive(Debug)]
pub enum Report {
    /// The answer to an `OwnerProbe`.
    Probe(ProbeAnswer),
    /// How a takeover offer ended.
    Offer(TakeoverOutcome),
}

/// The takeover state of one stream: the detection machine, the replay ring, the current
/// owner's `Owner` frame, and the channel its tasks report on.
pub struct Ownership {
    pub watch: OwnerWatch,
    pub ring: ReplayRing,
    /// The last `Owner` frame of the current owner (the apology and `transfer_to`).
    pub owner: Option<Owner>,
    reports: mpsc::Receiver<Report>,
    report_tx: mpsc::Sender<Report>,
    /// Cancels the stream's probe and offer tasks when the stream ends.
    tasks: CancellationToken,
    _stop_tasks: DropGuard,
}

impl Ownership {
    pub fn new(watch: OwnerWatch) -> Self {
        let (report_tx, reports) = mpsc::channel(8);
        let tasks = CancellationToken::new();
        Self {
            watch,
            ring: ReplayRing::new(),
            owner: None,
            reports,
            report_tx,
            _stop_tasks: tasks.clone().drop_guard(),
            tasks,
        }
    }

    /// The next report of a task (pending forever while none is running).
    pub async fn next_report(&mut self) -> Report {
        match self.reports.recv().await {
            Some(report) => report,
            // The actor holds a sender, so the channel never closes.
            None => std::future::pending().await,
        }
    }

    /// The current owner's worker id (empty if it never sent an `Owner` frame).
    pub fn worker_id(&self) -> &str {
        self.owner.as_ref().map_or("", |o| o.worker_id.as_str())
    }

    /// The apology and transfer of the current owner's agent.
    pub fn fallback(&self) -> (&str, &str) {
        match &self.owner {
            Some(o) if !o.apology.trim().is_empty() => (o.apology.as_str(), &o.transfer_to),
            Some(o) => (DEFAULT_APOLOGY, &o.transfer_to),
            None => (DEFAULT_APOLOGY, ""),
        }
    }

    /// Runs `work` in a task of `tracker`, cancelled when the stream ends, and reports its
    /// result.
    pub fn spawn<F>(&self, tracker: &tokio_util::task::TaskTracker, work: F)
    where
        F: Future<Output = Report> + Send + 'static,
    {
        let tx = self.report_tx.clone();
        let cancel = self.tasks.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                report = work => {
                    let _ = tx.send(report).await;
                }
            }
        });
    }
}

/// Asks the call's owner whether it is alive (`OwnerProbe` on `voice.call.<sid>.owner`).
pub async fn probe(
    nats: async_nats::Client,
    subject: String,
    epoch: u32,
    timeout: Duration,
) -> ProbeAnswer {
    let request = async_nats::client::Request::new()
        .payload(OwnerProbe { epoch }.encode_to_vec().into())
        .timeout(Some(timeout));
    let answer = match nats.send_request(subject, request).await {
        Ok(reply) => match OwnerAck::decode(reply.payload) {
            Ok(ack) => ProbeAnswer::Alive { epoch: ack.epoch },
            Err(error) => {
                tracing::debug!(%error, "undecodable owner ack");
                ProbeAnswer::Unanswered
            }
        },
        Err(error) if error.kind() == RequestErrorKind::NoResponders => ProbeAnswer::NoResponders,
        Err(error) => {
            tracing::debug!(%error, "owner probe unanswered");
            ProbeAnswer::Unanswered
        }
    };
    let label = match answer {
        ProbeAnswer::Alive { .. } => "alive",
        ProbeAnswer::NoResponders => "no_responders",
        ProbeAnswer::Unanswered => "unanswered",
    };
    metrics::counter!(crate::metrics::OWNER_PROBES, "answer" => label).increment(1);
    answer
}

/// The TwiML a lost call is updated with: the apology, then the transfer if the agent has one
/// (and the gateway's agents file allows it), else a hang-up.
pub fn apology_twiml(apology: &str, transfer_to: Option<&str>) -> String {
    let doc = twiml::Response::new().say(apology);
    match transfer_to {
        Some(to) => doc.dial(to),
        None => doc.hangup(),
    }
    .build()
}

/// What the gateway's record of a lost call says.
#[derive(Debug, Clone)]
pub struct LostCall {
    pub call_sid: String,
    pub gateway_id: String,
    /// The epoch the gateway played; its claim is the one after the call's last owner.
    pub epoch: u32,
    /// The owner that was lost.
    pub previous_worker_id: String,
    pub agent_id: String,
    /// Milliseconds the caller had no owner.
    pub gap_ms: u32,
    /// Milliseconds since the stream started.
    pub duration_ms: u64,
    /// `worker_lost`, or how the stream ended while the call was being offered.
    pub reason: EndReason,
}

/// Why the record of a lost call could not be closed in JetStream.
#[derive(Debug, thiserror::Error)]
pub enum CloseRecordError {
    #[error("reading the call's last owner event: {0}")]
    Read(#[source] async_nats::Error),
    #[error(transparent)]
    Claim(ClaimError),
    #[error("every claim attempt lost to a newer claim")]
    Contended,
}

/// Closes the record of a call nobody took over: the gateway's fencing `owner` claim of the
/// epoch after the call's last claim, then `ended` under that fence through `events` (which
/// retries it, and logs it in full for recovery if it cannot be published). `ended` carries
/// what `recording` yields: it is awaited once the claim fenced the lost owner, so a late
/// recording never delays the fence. Returns the epoch the gateway claimed.
pub async fn close_record(
    js: &jetstream::Context,
    events: &EventPublisher,
    subjects: &Subjects,
    lost: &LostCall,
    recording: impl Future<Output = Option<CallRecording>>,
) -> Result<u32, CloseRecordError> {
    let mut recording = std::pin::pin!(recording);
    let owner_subject = subjects.event(&lost.call_sid, "owner");
    for _ in 0..CLAIM_ATTEMPTS {
        let last = last_owner(js, &owner_subject)
            .await
            .map_err(CloseRecordError::Read)?;
        let (previous, epoch) = match last {
            Some((sequence, owner)) => (sequence, owner.epoch.max(lost.epoch) + 1),
            None => (0, lost.epoch + 1),
        };
        let owner = CallEvent {
            call_sid: lost.call_sid.clone(),
            seq: LOST_OWNER_SEQ,
            at_ms: now_ms(),
            body: Some(call_event::Body::Owner(CallOwner {
                epoch,
                worker_id: lost.gateway_id.clone(),
                reason: OwnerReason::WorkerLost.as_str().to_owned(),
                previous_worker_id: lost.previous_worker_id.clone(),
                gap_ms: lost.gap_ms,
                agent_id: lost.agent_id.clone(),
            })),
        };
        match claim(js, subjects, &owner, previous).await {
            Ok(fence) => {
                let recording = recording.as_mut().await.map(Box::new);
                let ended = CallEvent {
                    call_sid: lost.call_sid.clone(),
                    seq: LOST_OWNER_SEQ + 1,
                    at_ms: now_ms(),
                    body: Some(call_event::Body::Ended(CallEnded {
                        reason: lost.reason.as_str().to_owned(),
                        duration_ms: lost.duration_ms,
                        usage: None,
                        recording,
                    })),
                };
                events.publish_fenced(ended, &fence);
                return Ok(epoch);
            }
            Err(ClaimError::Lost) => {
                tracing::debug!("another owner claimed the call meanwhile; claiming after it");
            }
            Err(error) => return Err(CloseRecordError::Claim(error)),
        }
    }
    Err(CloseRecordError::Contended)
}

/// When `at` (a tokio instant in the past) was, in milliseconds since the Unix epoch.
pub fn unix_ms_of(at: Instant) -> i64 {
    let ago = Instant::now().saturating_duration_since(at);
    now_ms() - ago.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use switchboard_twilio::twiml::{Instructions, Verb};

    use super::*;

    #[test]
    fn the_apology_transfers_when_the_agent_has_a_number_and_hangs_up_otherwise() {
        let Instructions(verbs) =
            Instructions::parse(&apology_twiml("Sorry & goodbye", Some("+15550009999")))
                .expect("valid TwiML");
        assert_eq!(
            verbs,
            vec![
                Verb::Say("Sorry & goodbye".into()),
                Verb::dial("+15550009999")
            ]
        );
        let Instructions(verbs) =
            Instructions::parse(&apology_twiml("Sorry", None)).expect("valid TwiML");
        assert_eq!(verbs, vec![Verb::Say("Sorry".into()), Verb::Hangup]);
    }

    #[test]
    fn a_lost_owner_without_an_owner_frame_gets_the_default_apology() {
        let mut ownership = Ownership::new(OwnerWatch::new(
            Instant::now(),
            Duration::from_millis(1500),
            Duration::from_secs(5),
        ));
        assert_eq!(ownership.fallback(), (DEFAULT_APOLOGY, ""));
        ownership.owner = Some(Owner {
            worker_id: "w1".into(),
            agent_id: "a".into(),
            apology: " ".into(),
            transfer_to: "+1555".into(),
        });
        assert_eq!(ownership.fallback(), (DEFAULT_APOLOGY, "+1555"));
        assert_eq!(ownership.worker_id(), "w1");
    }
}
