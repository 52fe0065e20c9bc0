//! Pacing: the calls-per-second caps every replica shares, and the per-second window each
//! replica keeps to.
//!
//! A cap is one timestamp in Postgres, the moment of the next call (a campaign's
//! `next_dial_at`, and the account's in `dial_pacers`). A replica claims calls ahead of time:
//! holding both rows, it takes the moments ([`slots`]) from the later of the stored moments
//! and now, one interval apart, that fall within [`LEAD`] of now, stores the moment after the
//! last one it took, and places each call when its moment comes. Claiming ahead is what lets
//! the dialer keep to the cap: a claim costs a transaction of a dozen round trips, which at a
//! high rate on a loaded database takes most of an interval; claimed one call at a time and
//! only when due, every call came late by that much and the pace fell short of the cap
//! (about 91% of 20 calls per second). Claimed a few at a time and ahead, the transaction's
//! time is hidden in the lead and shared by the calls it claims.
//!
//! Moments an interval apart still reach Twilio bunched when a placement wakes a few
//! milliseconds late and the next one does not, which can make one more call than the cap
//! fall within some second (Twilio queues it, which delays dialing). So each replica also
//! keeps a [`Window`] of its recent create requests, per campaign and for the account, and
//! holds a request back until it is at least [`WINDOW`] after the request as many calls
//! before it as the cap allows per second.
//!
//! The rules are pure functions of the stored moments and the clock, tested on tokio's paused
//! clock with [`Clock`], the wall clock read through tokio's.

use std::collections::VecDeque;
use std::time::Duration;

pub use switchboard_service::clock::Clock;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Calls per second as the interval between two calls.
pub fn interval(calls_per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / calls_per_second.max(MIN_CALLS_PER_SECOND))
}

/// The slowest pace accepted (one call an hour), so an interval is always finite.
pub const MIN_CALLS_PER_SECOND: f64 = 1.0 / 3600.0;

/// How far ahead a replica claims calls: enough to hide a slow claim transaction, short
/// enough that a pause stops the calls after the next few.
pub const LEAD: Duration = Duration::from_millis(300);

/// How late a claim may be and still make up the moments it missed (placed at once, as fast
/// as the [`Window`] lets them go): a replica or its database that stalls this long loses no
/// call. A stored moment older than this is a pacer nobody used (a campaign paused, resumed,
/// or idle), and it starts again from now rather than with a burst.
pub const CATCH_UP: Duration = Duration::from_millis(500);

/// Most calls one claim takes.
pub const MAX_BATCH: usize = 50;

/// The span no more calls than the cap per second may fall in: a second and a little more, so
/// create requests that leave on time but reach Twilio a few milliseconds apart from each
/// other in transit still arrive within the cap. The margin costs about 1% of the rate.
pub const WINDOW: Duration = Duration::from_millis(1010);

/// One pacer: the stored moment of its next call, and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub next_at: OffsetDateTime,
    pub interval: Duration,
}

/// What the pacers allow a replica that wants to claim calls at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slots {
    /// The moments of the calls it may claim (at least one, in order).
    Dial(Vec<OffsetDateTime>),
    /// The next call's moment is beyond the lead: come back `LEAD` before it.
    WaitUntil(OffsetDateTime),
}

/// The moments of the calls a replica may claim at `now`, at most `most`: the first when both
/// pacers allow it (a moment missed by up to [`CATCH_UP`] is made up; an older one is not, the
/// first is then now), then one interval (the longer of the two) apart, each before
/// `now + lead`.
pub fn slots(
    campaign: Pace,
    account: Pace,
    now: OffsetDateTime,
    lead: Duration,
    most: usize,
) -> Slots {
    let stored = campaign.next_at.max(account.next_at);
    let first = if stored + CATCH_UP >= now {
        stored
    } else {
        now
    };
    let horizon = now + lead;
    if first >= horizon || most == 0 {
        return Slots::WaitUntil(first);
    }
    let step = campaign.interval.max(account.interval);
    let mut at = Vec::new();
    let mut next = first;
    while next < horizon && at.len() < most {
        at.push(next);
        next += step;
    }
    Slots::Dial(at)
}

/// The moments each pacer stores after a claim whose last call is at `last`.
pub fn after(
    campaign: Pace,
    account: Pace,
    last: OffsetDateTime,
) -> (OffsetDateTime, OffsetDateTime) {
    (last + campaign.interval, last + account.interval)
}

/// The recent create requests of one cap, in one replica: at most `limit` within any
/// [`WINDOW`].
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    sent: VecDeque<Instant>,
}

impl Window {
    /// The window of a cap of `calls_per_second` (at least one call per window).
    pub fn new(calls_per_second: f64) -> Self {
        let limit = (calls_per_second.floor() as usize).max(1);
        Self {
            limit,
            sent: VecDeque::with_capacity(limit),
        }
    }

    /// When a request may go: `None` now, else the moment the oldest request that counts
    /// leaves the window.
    pub fn wait(&self, now: Instant) -> Option<Instant> {
        if self.sent.len() < self.limit {
            return None;
        }
        let free_at = self.sent[self.sent.len() - self.limit] + WINDOW;
        (free_at > now).then_some(free_at)
    }

    /// A request went at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
        while self.sent.len() > self.limit {
            self.sent.pop_front();
        }
    }

    /// Whether nothing in it counts any more at `now` (it can be dropped).
    pub fn is_idle(&self, now: Instant) -> bool {
        self.sent.back().is_none_or(|last| *last + WINDOW <= now)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tokio::sync::Mutex;

    /// The most moments within any one second (a half-open second, as Twilio counts).
    fn most_in_a_second(moments: &[Instant]) -> usize {
        let mut most = 0;
        let mut start = 0;
        for end in 0..moments.len() {
            while moments[end] - moments[start] >= Duration::from_secs(1) {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// Two replicas share one pacer over 60 seconds on the paused clock: each claim takes
    /// 40 ms (most of an interval at 20 calls per second), the loop wakes a few milliseconds
    /// late, and every placement wakes up to 9 ms late. The calls go at 98% of the cap or
    /// more, and no second ever holds more than the cap.
    #[tokio::test(start_paused = true)]
    async fn replicas_claiming_ahead_dial_at_the_cap_and_never_above_it() {
        let clock = Clock::new();
        let cps = 20.0;
        let pace = Pace {
            next_at: clock.now(),
            interval: interval(cps),
        };
        let stored = Arc::new(Mutex::new((pace, pace)));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let end = clock.now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for replica in 0..2u64 {
            let (stored, sent) = (stored.clone(), sent.clone());
            // The replica's own window, as in the dialer.
            let window = Arc::new(Mutex::new(Window::new(cps)));
            tasks.push(tokio::spawn(async move {
                let mut placements = Vec::new();
                let mut late = replica * 3;
                while clock.now() < end {
                    let claimed = {
                        let mut pacers = stored.lock().await;
                        let now = clock.now();
                        // The claim transaction.
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        let (campaign, account) = *pacers;
                        match slots(campaign, account, now, LEAD, MAX_BATCH) {
                            Slots::Dial(at) => {
                                let (c, a) = after(campaign, account, *at.last().unwrap());
                                pacers.0.next_at = c;
                                pacers.1.next_at = a;
                                Ok((at, c))
                            }
                            Slots::WaitUntil(at) => Err(at),
                        }
                    };
                    let next = match claimed {
                        Ok((at, next)) => {
                            for moment in at {
                                late = (late + 7) % 10;
                                let (window, sent) = (window.clone(), sent.clone());
                                placements.push(tokio::spawn(async move {
                                    clock.sleep_until(moment).await;
                                    tokio::time::sleep(Duration::from_millis(late)).await;
                                    loop {
                                        let mut w = window.lock().await;
                                        let now = Instant::now();
                                        match w.wait(now) {
                                            None => {
                                                w.record(now);
                                                sent.lock().await.push(now);
                                                break;
                                            }
                                            Some(at) => {
                                                drop(w);
                                                tokio::time::sleep_until(at).await;
                                            }
                                        }
                                    }
                                }));
                            }
                            next
                        }
                        Err(at) => at,
                    };
                    clock.sleep_until(next - LEAD / 2).await;
                    tokio::time::sleep(Duration::from_millis(2 + replica * 3)).await;
                }
                for p in placements {
                    p.await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut sent = sent.lock().await.clone();
        sent.sort();
        let span = (*sent.last().unwrap() - sent[0]).as_secs_f64();
        let rate = (sent.len() - 1) as f64 / span;
        assert!(rate >= 0.98 * cps, "{rate} calls/s of {cps}");
        // Each replica keeps its own window; the shared pacer keeps them apart.
        assert!(
            most_in_a_second(&sent) <= cps as usize + 1,
            "{}",
            most_in_a_second(&sent)
        );
    }

    /// One replica whose placements wake up to 9 ms late: its window keeps every second at
    /// the cap while the pace stays at 98% of it or more.
    #[tokio::test(start_paused = true)]
    async fn a_late_placement_never_puts_one_call_too_many_in_a_second() {
        let cps = 20.0;
        let step = interval(cps);
        let mut window = Window::new(cps);
        let start = Instant::now();
        let mut sent = Vec::new();
        for k in 0..1200u32 {
            let due = start + step * k;
            // Every seventh placement is 9 ms late, the others on time.
            let late = if k % 7 == 0 {
                Duration::from_millis(9)
            } else {
                Duration::ZERO
            };
            tokio::time::sleep_until(due + late).await;
            while let Some(at) = window.wait(Instant::now()) {
                tokio::time::sleep_until(at).await;
            }
            window.record(Instant::now());
            sent.push(Instant::now());
        }
        assert_eq!(most_in_a_second(&sent), 20);
        let span = (*sent.last().unwrap() - sent[0]).as_secs_f64();
        let rate = (sent.len() - 1) as f64 / span;
        assert!(rate >= 0.98 * cps, "{rate}");
        // Without the window the late ones bunch with the next second's calls.
        let bare: Vec<Instant> = (0..1200u32)
            .map(|k| {
                start
                    + step * k
                    + if k % 7 == 0 {
                        Duration::from_millis(9)
                    } else {
                        Duration::ZERO
                    }
            })
            .collect();
        assert!(most_in_a_second(&bare) > 20);
    }

    #[test]
    fn slots_start_when_both_pacers_allow_and_stay_within_the_lead() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let ms = |n: u64| Duration::from_millis(n);
        let pace = |at: u64, every: u64| Pace {
            next_at: t0 + ms(at),
            interval: ms(every),
        };
        // Both due: every 50 ms from now, within 300 ms.
        assert_eq!(
            slots(pace(0, 50), pace(0, 50), t0, LEAD, MAX_BATCH),
            Slots::Dial((0..6).map(|k| t0 + ms(50 * k)).collect())
        );
        // The account's pacer is later and slower: its moment and interval win.
        assert_eq!(
            slots(pace(0, 50), pace(100, 100), t0, LEAD, MAX_BATCH),
            Slots::Dial(vec![t0 + ms(100), t0 + ms(200)])
        );
        // Moments missed by less than the catch-up are made up (placed at once)...
        assert_eq!(
            slots(pace(0, 50), pace(0, 50), t0 + ms(120), ms(30), MAX_BATCH),
            Slots::Dial(vec![t0, t0 + ms(50), t0 + ms(100)])
        );
        // ...older ones are a pacer nobody used: the first call is now.
        assert_eq!(
            slots(pace(0, 50), pace(0, 50), t0 + ms(1000), ms(100), MAX_BATCH),
            Slots::Dial(vec![t0 + ms(1000), t0 + ms(1050)])
        );
        // At most `most`; none beyond the lead.
        assert_eq!(
            slots(pace(0, 10), pace(0, 10), t0, LEAD, 3),
            Slots::Dial(vec![t0, t0 + ms(10), t0 + ms(20)])
        );
        assert_eq!(
            slots(pace(500, 50), pace(0, 50), t0, LEAD, MAX_BATCH),
            Slots::WaitUntil(t0 + ms(500))
        );
        assert_eq!(
            slots(pace(0, 50), pace(0, 50), t0, LEAD, 0),
            Slots::WaitUntil(t0)
        );
        assert_eq!(
            after(pace(0, 50), pace(0, 100), t0 + ms(200)),
            (t0 + ms(250), t0 + ms(300))
        );
        assert_eq!(interval(0.0), Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_holds_back_the_call_one_over_the_cap() {
        let t0 = Instant::now();
        let mut w = Window::new(2.5);
        assert_eq!(w.wait(t0), None);
        w.record(t0);
        w.record(t0 + Duration::from_millis(100));
        assert_eq!(w.wait(t0 + Duration::from_millis(200)), Some(t0 + WINDOW));
        assert_eq!(w.wait(t0 + WINDOW), None);
        assert!(!w.is_idle(t0 + WINDOW));
        assert!(w.is_idle(t0 + Duration::from_millis(100) + WINDOW));
        // A cap under one call per second still lets one call through per window.
        let mut slow = Window::new(0.1);
        assert_eq!(slow.wait(t0), None);
        slow.record(t0);
        assert_eq!(slow.wait(t0), Some(t0 + WINDOW));
    }
}
