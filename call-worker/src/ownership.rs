//! A call's ownership as its owner sees it: the epoch it claimed, and whether it still holds
//! the call.
//!
//! A worker claims a call before it answers an offer `accepted` ([`claim`]: a conditional
//! `owner` event, see [`switchboard_service::events::claim`]); epoch 0 for a new call, one more
//! than the last owner's for a takeover. From then on it holds the call until it learns that
//! another owner took it, in one of three ways, each final:
//! - JetStream refused one of its events (the fence, [`Ownership::on_refused`]);
//! - the gateway sent a `StreamStart` of a higher epoch ([`Ownership::on_start`]);
//! - the gateway probed with a higher epoch ([`Ownership::on_probe`]).
//!
//! A call that lost its ownership stops at once: it closes its Realtime session, sends nothing
//! more to the gateway and publishes no `ended` (the call is not over, only no longer ours).

use switchboard_proto::call_event::Body;
use switchboard_proto::event::{OwnerReason, owner_seq};
use switchboard_proto::{CallEvent, CallOffer, CallOwner, now_ms};
use switchboard_service::events::{self, ClaimError, Fence};

/// How an owner learned that it lost the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostBy {
    /// JetStream refused one of its events: a newer claim is stored.
    Refused,
    /// The gateway started the stream for a newer epoch.
    NewerStart(u32),
    /// The gateway probed for a newer epoch.
    NewerProbe(u32),
}

/// Whether the owner holds the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// It serves the call.
    Held,
    /// It asked the gateway to hand the call over (draining) and serves it until a newer owner
    /// shows up.
    HandingOver,
    /// Another owner has the call.
    Lost(LostBy),
}

/// What a `StreamStart` means to the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartVerdict {
    /// A start for this owner's epoch: serve it (announce ourselves with an `Owner` frame).
    Serve,
    /// A start for an older epoch, sent before the gateway learned of us: ignore it.
    Stale,
    /// A newer owner is being started: we lost the call.
    Lost,
}

/// One owner's view of its ownership of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    epoch: u32,
    holding: Holding,
}

impl Ownership {
    /// The owner of `epoch`, holding the call.
    pub fn new(epoch: u32) -> Self {
        Self {
            epoch,
            holding: Holding::Held,
        }
    }

    /// The epoch this owner claimed.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Where it stands.
    pub fn holding(&self) -> Holding {
        self.holding
    }

    /// Whether it still serves the call.
    pub fn holds(&self) -> bool {
        !matches!(self.holding, Holding::Lost(_))
    }

    /// JetStream refused one of the owner's events.
    pub fn on_refused(&mut self) {
        self.lose(LostBy::Refused);
    }

    /// The gateway probes for `epoch`: the answer is our epoch while we hold the call and the
    /// probe is not for a newer one; `None` (no answer) otherwise.
    pub fn on_probe(&mut self, epoch: u32) -> Option<u32> {
        if epoch > self.epoch {
            self.lose(LostBy::NewerProbe(epoch));
        }
        self.holds().then_some(self.epoch)
    }

    /// The gateway (re)started the stream for `epoch`.
    pub fn on_start(&mut self, epoch: u32) -> StartVerdict {
        if epoch > self.epoch {
            self.lose(LostBy::NewerStart(epoch));
        }
        if !self.holds() {
            StartVerdict::Lost
        } else if epoch < self.epoch {
            StartVerdict::Stale
        } else {
            StartVerdict::Serve
        }
    }

    /// The owner is draining and asked the gateway to hand the call over.
    pub fn hand_over(&mut self) {
        if self.holding == Holding::Held {
            self.holding = Holding::HandingOver;
        }
    }

    fn lose(&mut self, by: LostBy) {
        if self.holds() {
            self.holding = Holding::Lost(by);
        }
    }
}

/// A stored claim: the epoch and the fence of its events.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The epoch claimed.
    pub epoch: u32,
    /// Guards the owner's other events.
    pub fence: Fence,
}

/// What a claim needs besides the offer.
#[derive(Debug, Clone, Copy)]
pub struct ClaimFor<'a> {
    /// This worker.
    pub worker_id: &'a str,
    /// The agent that will serve the call.
    pub agent_id: &'a str,
    /// The stream sequence of the call's last `owner` event (0 for a new call).
    pub previous: u64,
}

/// The `owner` event claiming `offer`'s epoch: the first event of its owner.
pub fn owner_event(offer: &CallOffer, claim: ClaimFor<'_>) -> CallEvent {
    let at_ms = now_ms();
    let reason = OwnerReason::parse(&offer.takeover).unwrap_or(OwnerReason::Offer);
    let gap_ms = if offer.owner_silent_since_ms > 0 {
        u32::try_from(at_ms.saturating_sub(offer.owner_silent_since_ms).max(0)).unwrap_or(u32::MAX)
    } else {
        0
    };
    CallEvent {
        call_sid: offer.call_sid.clone(),
        seq: owner_seq(offer.epoch, 1),
        at_ms,
        body: Some(Body::Owner(CallOwner {
            epoch: offer.epoch,
            worker_id: claim.worker_id.to_owned(),
            reason: reason.as_str().to_owned(),
            previous_worker_id: offer.previous_worker_id.clone(),
            gap_ms,
            agent_id: claim.agent_id.to_owned(),
        })),
    }
}

/// Claims `offer`'s epoch of its call (see [`switchboard_service::events::claim`]), inside the
/// trace of the offer (`headers`, the offer message's), like every other event of the call.
pub async fn claim(
    js: &async_nats::jetstream::Context,
    subjects: &switchboard_proto::subject::Subjects,
    offer: &CallOffer,
    claim: ClaimFor<'_>,
    headers: Option<&async_nats::HeaderMap>,
) -> Result<Claim, ClaimError> {
    use tracing::Instrument as _;
    let event = owner_event(offer, claim);
    let span =
        tracing::info_span!(parent: None, "claim", call_sid = %offer.call_sid, epoch = offer.epoch);
    if let Some(headers) = headers {
        switchboard_service::trace::set_parent(&span, headers);
    }
    let fence = events::claim(js, subjects, &event, claim.previous)
        .instrument(span)
        .await?;
    Ok(Claim {
        epoch: offer.epoch,
        fence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Input {
        Refused,
        Probe(u32),
        Start(u32),
        HandOver,
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            Just(Input::Refused),
            (0u32..6).prop_map(Input::Probe),
            (0u32..6).prop_map(Input::Start),
            Just(Input::HandOver),
        ]
    }

    proptest! {
        /// Whatever happens: the owner answers probes only with its own epoch and only while it
        /// holds the call; it loses the call exactly when it is refused or sees a newer epoch,
        /// and never gets it back.
        #[test]
        fn ownership_is_lost_once_and_for_good(epoch in 0u32..4, inputs in proptest::collection::vec(input(), 0..24)) {
            let mut o = Ownership::new(epoch);
            let mut lost = false;
            for i in inputs {
                let was = o.holding();
                match i {
                    Input::Refused => {
                        o.on_refused();
                        lost = true;
                    }
                    Input::Probe(e) => {
                        lost |= e > epoch;
                        let answer = o.on_probe(e);
                        prop_assert_eq!(answer, (!lost).then_some(epoch));
                    }
                    Input::Start(e) => {
                        lost |= e > epoch;
                        let verdict = o.on_start(e);
                        let expected = if lost {
                            StartVerdict::Lost
                        } else if e < epoch {
                            StartVerdict::Stale
                        } else {
                            StartVerdict::Serve
                        };
                        prop_assert_eq!(verdict, expected);
                    }
                    Input::HandOver => o.hand_over(),
                }
                prop_assert_eq!(o.holds(), !lost);
                prop_assert_eq!(o.epoch(), epoch);
                // The first way of losing is the one kept.
                if let Holding::Lost(by) = was {
                    prop_assert_eq!(o.holding(), Holding::Lost(by));
                }
            }
        }
    }

    #[test]
    fn a_takeover_claim_records_the_gap_and_the_previous_owner() {
        let offer = CallOffer {
            call_sid: "CA1".into(),
            epoch: 2,
            takeover: OwnerReason::WorkerLost.as_str().into(),
            previous_worker_id: "worker-a".into(),
            owner_silent_since_ms: now_ms() - 700,
            ..Default::default()
        };
        let event = owner_event(
            &offer,
            ClaimFor {
                worker_id: "worker-b",
                agent_id: "desk",
                previous: 7,
            },
        );
        assert_eq!(event.seq, owner_seq(2, 1));
        let Some(Body::Owner(o)) = event.body else {
            panic!("not an owner event");
        };
        assert_eq!((o.epoch, o.reason.as_str()), (2, "worker_lost"));
        assert_eq!(o.previous_worker_id, "worker-a");
        assert!((700..5000).contains(&o.gap_ms), "{}", o.gap_ms);
        let new = owner_event(
            &CallOffer {
                call_sid: "CA2".into(),
                ..Default::default()
            },
            ClaimFor {
                worker_id: "w",
                agent_id: "desk",
                previous: 0,
            },
        );
        let Some(Body::Owner(o)) = new.body else {
            panic!("not an owner event");
        };
        assert_eq!((o.epoch, o.reason.as_str(), o.gap_ms), (0, "offer", 0));
        assert_eq!(new.seq, 1);
    }
}
