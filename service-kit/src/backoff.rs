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
