//! Pacing: the calls-per-second caps every replica shares.
//!
//! A cap is one timestamp in Postgres, the earliest moment the next call may be placed (a
//! campaign's `next_dial_at`, and the account's in `dial_pacers`). A replica that wants to dial
//! locks the row, and may dial only if that moment has come; it then moves the moment one
//! interval on. A replica that wakes late (it was busy, the database was slow) may catch up by
//! at most half an interval, so the rate holds at the cap while two calls are never closer than
//! half an interval, whichever replica places them (Twilio queues calls created faster than the
//! account's calls per second, which would only delay them and blur the concurrency count).
//!
//! The rule itself is [`take`], a pure function of the stored moment and the clock, so it is
//! tested on tokio's paused clock with [`Clock`], the wall clock read through tokio's.

use std::time::Duration;

pub use switchboard_service::clock::Clock;
use time::OffsetDateTime;

/// Calls per second as the interval between two calls.
pub fn interval(calls_per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / calls_per_second.max(MIN_CALLS_PER_SECOND))
}

/// The slowest pace accepted (one call an hour), so an interval is always finite.
pub const MIN_CALLS_PER_SECOND: f64 = 1.0 / 3600.0;

/// What a pacer answers a replica that wants to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Dial now; store this as the next moment.
    Dial { next_at: OffsetDateTime },
    /// Not before this moment.
    WaitUntil(OffsetDateTime),
}

/// The pacing rule: with the next moment `next_at` stored and the clock at `now`.
pub fn take(next_at: OffsetDateTime, now: OffsetDateTime, interval: Duration) -> Take {
    if next_at > now {
        Take::WaitUntil(next_at)
    } else {
        Take::Dial {
            next_at: next_at.max(now - interval / 2) + interval,
        }
    }
}

/// The later of two moments a replica has to wait for (the campaign's and the account's).
pub fn both(a: Take, b: Take) -> Take {
    match (a, b) {
        (Take::WaitUntil(x), Take::WaitUntil(y)) => Take::WaitUntil(x.max(y)),
        (Take::WaitUntil(x), _) | (_, Take::WaitUntil(x)) => Take::WaitUntil(x),
        (Take::Dial { next_at: x }, Take::Dial { next_at: y }) => Take::Dial { next_at: x.max(y) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas share one stored moment and each dials as soon as it may, waking a few
    /// milliseconds late; over 60 seconds on the paused clock the calls come at the cap, never
    /// two within half an interval.
    #[tokio::test(start_paused = true)]
    async fn replicas_sharing_one_pacer_dial_at_the_cap() {
        let clock = Clock::new();
        let interval = interval(2.0);
        let stored = std::sync::Arc::new(tokio::sync::Mutex::new(clock.now()));
        let dials = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let end = clock.now() + Duration::from_secs(60);
        let mut replicas = Vec::new();
        for replica in 0..2u64 {
            let (stored, dials) = (stored.clone(), dials.clone());
            replicas.push(tokio::spawn(async move {
                // A replica wakes a few milliseconds late, as a real one does.
                let lag = Duration::from_millis(3 + replica * 4);
                while clock.now() < end {
                    let taken = {
                        let mut next_at = stored.lock().await;
                        let taken = take(*next_at, clock.now(), interval);
                        if let Take::Dial { next_at: next } = taken {
                            *next_at = next;
                            dials.lock().await.push(clock.now());
                        }
                        taken
                    };
                    if let Take::WaitUntil(at) = taken {
                        clock.sleep_until(at).await;
                    }
                    tokio::time::sleep(lag).await;
                }
            }));
        }
        for r in replicas {
            r.await.unwrap();
        }
        let dials = dials.lock().await;
        for pair in dials.windows(2) {
            assert!(pair[1] - pair[0] >= interval / 2, "{pair:?}");
        }
        // 2 a second for 60 seconds: the wake-up lag costs nothing.
        assert!((119..=121).contains(&dials.len()), "{}", dials.len());
    }

    #[test]
    fn the_later_wait_wins_and_a_late_wake_catches_up_half_an_interval() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let second = Duration::from_secs(1);
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(take(t0 + second, t0, second), Take::WaitUntil(t0 + second));
        // Woken 0.2 s late: the next call keeps its place in the rhythm.
        assert_eq!(
            take(t0, t0 + ms(200), second),
            Take::Dial {
                next_at: t0 + second
            }
        );
        // Woken 0.9 s late: the next call is half an interval away, not less.
        assert_eq!(
            take(t0, t0 + ms(900), second),
            Take::Dial {
                next_at: t0 + ms(1400)
            }
        );
        let wait = |s: u64| Take::WaitUntil(t0 + Duration::from_secs(s));
        let dial = |s: u64| Take::Dial {
            next_at: t0 + Duration::from_secs(s),
        };
        assert_eq!(both(wait(1), wait(2)), wait(2));
        assert_eq!(both(dial(5), wait(2)), wait(2));
        assert_eq!(both(dial(1), dial(3)), dial(3));
        assert_eq!(interval(0.0), Duration::from_secs(3600));
    }
}
