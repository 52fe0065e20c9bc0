//! Whether a call's owner is still there: the stream actor's detection machine.
//!
//! Pure (no I/O, the time is passed in), so it is tested on its own on tokio's paused clock. The
//! stream actor feeds it frames, probe answers and timer ticks, and does what it returns:
//!
//! - a frame of the current epoch means the owner is alive ([`Watch::Heard`]);
//! - after a fifth of `WORKER_SILENCE_MS` (300 ms by default, never less) of silence an `OwnerProbe` goes
//!   out ([`Watch::Probing`]): "no
//!   responders" means the owner's subscriptions are gone (kill -9), so it is lost at once; an
//!   `OwnerAck` of the current epoch or newer means it is alive; without an answer it is lost
//!   once the silence reaches `WORKER_SILENCE_MS`;
//! - a lost owner, or one that asks to hand the call over, makes the call [`Watch::Offering`]
//!   to other workers until `TAKEOVER_TIMEOUT_MS`; a frame of a newer epoch (or the accepting
//!   reply) commits the new owner; nobody within the bound means the call is [`Watch::Lost`];
//! - frames of an older epoch than the current one are stale and never played.
//!
//! While the gateway's own NATS connection is down the silence is not the worker's fault: every
//! tick in that state restarts the silence, so the owner gets a whole window once the link is
//! back.

use std::time::Duration;

use switchboard_proto::event::OwnerReason;
use tokio::time::Instant;

/// The owner is probed after this fraction of `WORKER_SILENCE_MS` (at least
/// [`MIN_PROBE_AFTER`]): 300 ms of the default 1500. A probe is one request, answered at once by
/// a live owner; waiting for a second missed heartbeat would add 200 ms to the silence of every
/// caller whose worker crashed.
pub const PROBE_FRACTION: u32 = 5;

/// The earliest probe: one missed heartbeat of an owner that sends one every 250 ms, with 50 ms
/// of slack, so a short `WORKER_SILENCE_MS` does not probe between an owner's heartbeats.
pub const MIN_PROBE_AFTER: Duration = Duration::from_millis(300);

/// Where the call's ownership stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// The owner was last heard at `at`.
    Heard { at: Instant },
    /// Nothing since `since` for the probe delay: a probe is out.
    Probing { since: Instant },
    /// The call is offered to other workers, because of `reason`, until `until`. The current
    /// owner was last heard at `last_heard`; the caller's gap began at `silent_since`.
    Offering {
        reason: OwnerReason,
        silent_since: Instant,
        last_heard: Instant,
        until: Instant,
    },
    /// No worker took the call in time: it is ending.
    Lost,
}

/// What the stream actor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Wait,
    /// Send an `OwnerProbe` for the current epoch.
    Probe,
    /// Offer the call as a takeover of `epoch` (one more than the current owner's).
    Offer {
        reason: OwnerReason,
        epoch: u32,
        silent_since: Instant,
    },
    /// No worker took the call: apologise, close the record, end the stream.
    GiveUp { silent_since: Instant },
}

/// The answer to an `OwnerProbe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// An `OwnerAck` from a worker of `epoch`.
    Alive { epoch: u32 },
    /// Nobody subscribes to the call's owner subject: the owner's connection is gone.
    NoResponders,
    /// A timeout or an error: says nothing either way.
    Unanswered,
}

/// What to do with an outbound frame of some epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The current owner's: play it.
    Play,
    /// From an owner that was replaced, or the call is lost: drop it.
    Stale,
    /// From a newer owner: commit it, then play the frame.
    Commit,
}

/// A new owner took the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Why the call was offered and how long the caller had no owner (None: the new owner's
    /// frames came before the gateway offered the call, e.g. a hand-over race).
    pub offer: Option<(OwnerReason, Duration)>,
}

/// The detection machine of one call.
#[derive(Debug, Clone)]
pub struct OwnerWatch {
    epoch: u32,
    watch: Watch,
    probe_after: Duration,
    silence: Duration,
    takeover: Duration,
}

impl OwnerWatch {
    /// The owner of epoch 0, as of `now`; `silence` is `WORKER_SILENCE_MS` and `takeover`
    /// `TAKEOVER_TIMEOUT_MS`.
    pub fn new(now: Instant, silence: Duration, takeover: Duration) -> Self {
        Self {
            epoch: 0,
            watch: Watch::Heard { at: now },
            probe_after: (silence / PROBE_FRACTION).max(MIN_PROBE_AFTER).min(silence),
            silence,
            takeover,
        }
    }

    /// The same watch for the owner of `epoch` (a stream re-attached to a call already taken
    /// over).
    pub fn at_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch the gateway plays.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// How long the owner may be silent before it is probed.
    pub fn probe_after(&self) -> Duration {
        self.probe_after
    }

    pub fn state(&self) -> Watch {
        self.watch
    }

    /// Whether the call is being offered to another worker.
    pub fn offering(&self) -> bool {
        matches!(self.watch, Watch::Offering { .. })
    }

    /// When [`Self::tick`] has something to do (None: nothing until an input arrives).
    pub fn deadline(&self) -> Option<Instant> {
        match self.watch {
            Watch::Heard { at } => Some(at + self.probe_after),
            Watch::Probing { since } => Some(since + self.silence),
            Watch::Offering { until, .. } => Some(until),
            Watch::Lost => None,
        }
    }

    /// Time passed; `link_up` says whether the gateway's own NATS connection is up.
    pub fn tick(&mut self, now: Instant, link_up: bool) -> Step {
        match self.watch {
            Watch::Heard { .. } | Watch::Probing { .. } if !link_up => {
                self.watch = Watch::Heard { at: now };
                Step::Wait
            }
            Watch::Heard { at } if now >= at + self.probe_after => {
                self.watch = Watch::Probing { since: at };
                Step::Probe
            }
            Watch::Probing { since } if now >= since + self.silence => {
                self.offer(OwnerReason::WorkerLost, since, now)
            }
            Watch::Offering { until, .. } if now >= until => self.offer_ended(now),
            _ => Step::Wait,
        }
    }

    /// A probe was answered (an answer to an earlier probe, after the machine moved on, is
    /// ignored).
    pub fn probe_answered(&mut self, answer: ProbeAnswer, now: Instant) -> Step {
        let Watch::Probing { since } = self.watch else {
            return Step::Wait;
        };
        match answer {
            ProbeAnswer::NoResponders => self.offer(OwnerReason::WorkerLost, since, now),
            ProbeAnswer::Alive { epoch } if epoch >= self.epoch => {
                self.watch = Watch::Heard { at: now };
                Step::Wait
            }
            ProbeAnswer::Alive { .. } | ProbeAnswer::Unanswered => Step::Wait,
        }
    }

    /// An outbound frame of `epoch` arrived at `now`.
    pub fn admit(&mut self, epoch: u32, now: Instant) -> Admit {
        if self.watch == Watch::Lost || epoch < self.epoch {
            return Admit::Stale;
        }
        if epoch > self.epoch {
            return Admit::Commit;
        }
        match &mut self.watch {
            Watch::Heard { .. } | Watch::Probing { .. } => self.watch = Watch::Heard { at: now },
            Watch::Offering { last_heard, .. } => *last_heard = now,
            Watch::Lost => {}
        }
        Admit::Play
    }

    /// The current owner asked for the call to be handed over.
    pub fn hand_over(&mut self, now: Instant) -> Step {
        match self.watch {
            Watch::Heard { .. } | Watch::Probing { .. } => {
                self.offer(OwnerReason::HandOver, now, now)
            }
            Watch::Offering { .. } | Watch::Lost => Step::Wait,
        }
    }

    /// The owner of `epoch` took the call at `now`. None when that is no news (not newer than
    /// the current epoch, or the call is lost already); otherwise, if the call was being
    /// offered, why and the caller's gap.
    pub fn commit(&mut self, epoch: u32, now: Instant) -> Option<Committed> {
        if epoch <= self.epoch || self.watch == Watch::Lost {
            return None;
        }
        let offer = match self.watch {
            Watch::Offering {
                reason,
                silent_since,
                ..
            } => Some((reason, now.duration_since(silent_since))),
            _ => None,
        };
        self.epoch = epoch;
        self.watch = Watch::Heard { at: now };
        Some(Committed { offer })
    }

    /// The offer ended without a worker (no worker within the bound, or a refusal that no
    /// other worker would change). A handing-over owner goes on serving; a lost owner that
    /// has been heard again within the silence window is alive after all; otherwise the call
    /// is lost.
    pub fn offer_ended(&mut self, now: Instant) -> Step {
        let Watch::Offering {
            reason,
            silent_since,
            last_heard,
            ..
        } = self.watch
        else {
            return Step::Wait;
        };
        let revived = last_heard > silent_since && now.duration_since(last_heard) < self.silence;
        if reason == OwnerReason::HandOver || revived {
            self.watch = Watch::Heard { at: last_heard };
            return Step::Wait;
        }
        self.watch = Watch::Lost;
        Step::GiveUp { silent_since }
    }

    fn offer(&mut self, reason: OwnerReason, silent_since: Instant, now: Instant) -> Step {
        self.watch = Watch::Offering {
            reason,
            silent_since,
            last_heard: silent_since,
            until: now + self.takeover,
        };
        Step::Offer {
            reason,
            epoch: self.epoch + 1,
            silent_since,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    const SILENCE: Duration = Duration::from_millis(1500);
    const TAKEOVER: Duration = Duration::from_millis(5000);
    const PROBE_AFTER: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the machine's timer until it asks for something (as the stream actor's loop does).
    async fn next_step(w: &mut OwnerWatch) -> Step {
        loop {
            let Some(deadline) = w.deadline() else {
                return Step::Wait;
            };
            tokio::time::sleep_until(deadline).await;
            let step = w.tick(Instant::now(), true);
            if step != Step::Wait {
                return step;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_the_owner() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        for _ in 0..40 {
            advance(ms(250)).await;
            assert_eq!(w.admit(0, Instant::now()), Admit::Play);
            assert_eq!(w.tick(Instant::now(), true), Step::Wait);
        }
        assert_eq!(
            w.state(),
            Watch::Heard {
                at: start + ms(10_000)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_probes_after_300_ms_and_no_responders_is_lost_at_once() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(Instant::now(), start + PROBE_AFTER);
        advance(ms(3)).await;
        let step = w.probe_answered(ProbeAnswer::NoResponders, Instant::now());
        assert_eq!(
            step,
            Step::Offer {
                reason: OwnerReason::WorkerLost,
                epoch: 1,
                silent_since: start
            }
        );
        assert!(w.offering());
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_silence_limit_still_waits_for_a_missed_heartbeat_before_probing() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, ms(900), TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(Instant::now(), start + MIN_PROBE_AFTER);
        // A long limit probes at a fifth of it.
        let mut w = OwnerWatch::new(Instant::now(), ms(10_000), TAKEOVER);
        let since = Instant::now();
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(Instant::now(), since + ms(2_000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_probe_is_lost_when_the_silence_reaches_the_limit() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(
            w.probe_answered(ProbeAnswer::Unanswered, Instant::now()),
            Step::Wait
        );
        let step = next_step(&mut w).await;
        assert_eq!(Instant::now(), start + SILENCE);
        assert!(matches!(
            step,
            Step::Offer {
                reason: OwnerReason::WorkerLost,
                epoch: 1,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_of_the_current_epoch_means_alive_and_an_older_one_does_not() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(
            w.probe_answered(ProbeAnswer::Alive { epoch: 0 }, Instant::now()),
            Step::Wait
        );
        assert_eq!(w.state(), Watch::Heard { at: Instant::now() });

        // Epoch 1 owns it now; a late ack from the epoch-0 worker proves nothing.
        w.commit(1, Instant::now());
        let since = Instant::now();
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(
            w.probe_answered(ProbeAnswer::Alive { epoch: 0 }, Instant::now()),
            Step::Wait
        );
        assert_eq!(w.state(), Watch::Probing { since });
        assert!(matches!(
            next_step(&mut w).await,
            Step::Offer { epoch: 2, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_pauses_while_the_gateways_link_is_down() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        // The link is down for 10 s: not the worker's fault.
        for _ in 0..20 {
            advance(ms(500)).await;
            assert_eq!(w.tick(Instant::now(), false), Step::Wait);
        }
        let back = Instant::now();
        // Back up: the owner gets a whole window again.
        assert_eq!(next_step(&mut w).await, Step::Probe);
        assert_eq!(Instant::now(), back + PROBE_AFTER);
        assert!(matches!(next_step(&mut w).await, Step::Offer { .. }));
        assert_eq!(Instant::now(), back + SILENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_epochs_are_dropped_and_a_newer_epoch_commits() {
        let mut w = OwnerWatch::new(Instant::now(), SILENCE, TAKEOVER);
        assert_eq!(w.admit(1, Instant::now()), Admit::Commit);
        assert_eq!(
            w.commit(1, Instant::now()),
            Some(Committed { offer: None }),
            "no offer was out"
        );
        assert_eq!(w.epoch(), 1);
        assert_eq!(w.admit(0, Instant::now()), Admit::Stale);
        assert_eq!(w.admit(1, Instant::now()), Admit::Play);
        assert_eq!(w.commit(1, Instant::now()), None, "commits once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_takeover_commits_with_the_callers_gap() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        w.probe_answered(ProbeAnswer::NoResponders, Instant::now());
        advance(ms(700)).await;
        assert_eq!(
            w.commit(1, Instant::now()),
            Some(Committed {
                offer: Some((OwnerReason::WorkerLost, PROBE_AFTER + ms(700)))
            })
        );
        assert_eq!(w.state(), Watch::Heard { at: Instant::now() });
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_within_the_bound_gives_up() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert_eq!(next_step(&mut w).await, Step::Probe);
        let lost_at = Instant::now();
        w.probe_answered(ProbeAnswer::NoResponders, lost_at);
        assert_eq!(
            next_step(&mut w).await,
            Step::GiveUp {
                silent_since: start
            }
        );
        assert_eq!(Instant::now(), lost_at + TAKEOVER);
        assert_eq!(w.state(), Watch::Lost);
        assert_eq!(w.admit(0, Instant::now()), Admit::Stale);
        assert_eq!(w.admit(1, Instant::now()), Admit::Stale);
        assert_eq!(w.commit(1, Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_owner_heard_again_while_offered_keeps_the_call_if_nobody_takes_it() {
        let start = Instant::now();
        let mut w = OwnerWatch::new(start, SILENCE, TAKEOVER);
        assert!(matches!(next_step(&mut w).await, Step::Probe));
        assert!(matches!(next_step(&mut w).await, Step::Offer { .. }));
        advance(ms(1000)).await;
        // The paused worker wakes up: its frames still play until another owner commits.
        assert_eq!(w.admit(0, Instant::now()), Admit::Play);
        assert_eq!(w.offer_ended(Instant::now()), Step::Wait);
        assert_eq!(w.state(), Watch::Heard { at: Instant::now() });
    }

    #[tokio::test(start_paused = true)]
    async fn a_hand_over_that_nobody_takes_leaves_the_call_with_its_owner() {
        let mut w = OwnerWatch::new(Instant::now(), SILENCE, TAKEOVER);
        advance(ms(100)).await;
        let asked = Instant::now();
        assert_eq!(
            w.hand_over(asked),
            Step::Offer {
                reason: OwnerReason::HandOver,
                epoch: 1,
                silent_since: asked
            }
        );
        assert_eq!(w.hand_over(asked), Step::Wait, "one offer at a time");
        // The draining owner keeps playing while the call is offered.
        advance(ms(200)).await;
        let heard = Instant::now();
        assert_eq!(w.admit(0, heard), Admit::Play);
        tokio::time::sleep_until(w.deadline().expect("offering has a bound")).await;
        assert_eq!(Instant::now(), asked + TAKEOVER);
        assert_eq!(w.tick(Instant::now(), true), Step::Wait);
        assert_eq!(w.state(), Watch::Heard { at: heard });
    }
}
