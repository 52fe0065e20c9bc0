//! The one retry backoff every service uses: exponential with jitter.
//!
//! Jitter matters here because failures are correlated: when NATS or Postgres comes back, every
//! replica and every call actor that was retrying would otherwise knock at the same instant.
//! Each delay is drawn uniformly from the upper half of the current step ("equal jitter"), so a
//! retry never comes sooner than half the nominal delay and the herd spreads out.

use std::time::Duration;

use rand::Rng as _;

/// Exponential backoff with equal jitter, capped at a maximum step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the step up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros().max(1) as u64);
        half + Duration::from_micros(jitter)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Sleeps for [`Backoff::next_delay`], cut short by `stop`: a retry loop must not hold up a
    /// shutdown.
    pub async fn wait_or(&mut self, stop: &tokio_util::sync::CancellationToken) {
        let delay = self.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for step_ms in [100u64, 200, 400, 800, 800, 800] {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step_ms);
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_grows_and_ends_at_once_on_stop() {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let t0 = tokio::time::Instant::now();
        for _ in 0..8 {
            backoff.wait_or(&stop).await;
        }
        // Steps 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 s, each jittered into its upper half.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(8_150) && waited <= Duration::from_millis(16_300),
            "{waited:?}"
        );
        stop.cancel();
        let t1 = tokio::time::Instant::now();
        backoff.wait_or(&stop).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[test]
    fn delays_are_spread_out() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(backoff.next_delay());
        }
        assert!(seen.len() > 10, "jitter should spread retries: {seen:?}");
    }
}
