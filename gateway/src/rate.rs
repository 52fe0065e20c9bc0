//! A rate limit: `POST /calls` places at most `CALLS_PER_MINUTE` calls a minute per gateway
//! instance, so a leaked `CALLS_TOKEN` cannot run up a phone bill at machine speed.
//!
//! A token bucket holding a minute's worth (a burst of that many is allowed) and refilling one
//! token every `60 s / CALLS_PER_MINUTE`, kept as the generic cell rate algorithm: one instant,
//! the time at which the bucket would be full again, in exact integer time, updated with a
//! compare-and-swap (no lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// At most `per_minute` requests a minute, `per_minute` at once.
#[derive(Debug)]
pub struct RateLimit {
    /// Time one token takes to refill.
    interval: Duration,
    /// How far ahead of now the bucket's "full again" time may run: all tokens but one.
    burst: Duration,
    /// Where the clock of [`Self::full_at`] starts.
    origin: Instant,
    /// When the bucket is full again (the "theoretical arrival time"), in nanoseconds after
    /// `origin`.
    full_at: AtomicU64,
}

impl RateLimit {
    /// A full bucket. `per_minute` is at least 1 (the config checks it; 0 counts as 1).
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        Self {
            interval,
            burst: interval * (per_minute - 1),
            origin: Instant::now(),
            full_at: AtomicU64::new(0),
        }
    }

    /// Takes a token, or says how long until one is there (for `Retry-After`).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = nanos(self.origin.elapsed());
        let (interval, burst) = (nanos(self.interval), nanos(self.burst));
        let mut full_at = self.full_at.load(Ordering::Acquire);
        loop {
            let from = full_at.max(now);
            let ahead = from - now;
            if ahead > burst {
                return Err(Duration::from_nanos(ahead - burst));
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                from.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => full_at = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_token_at_a_time() {
        let limit = RateLimit::per_minute(3);
        for _ in 0..3 {
            assert_eq!(limit.try_acquire(), Ok(()));
        }
        // One token every 20 s.
        assert_eq!(limit.try_acquire(), Err(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limit.try_acquire(), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limit.try_acquire(), Ok(()));
        assert_eq!(limit.try_acquire(), Err(Duration::from_secs(20)));
        // An idle hour refills to the burst size, not more.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(limit.try_acquire(), Ok(()));
        }
        assert!(limit.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn one_a_minute() {
        let limit = RateLimit::per_minute(1);
        assert_eq!(limit.try_acquire(), Ok(()));
        assert_eq!(limit.try_acquire(), Err(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limit.try_acquire(), Ok(()));
    }
}
