//! The wall clock read through tokio's clock, so time-driven logic that deals in wall-clock
//! moments (stored in Postgres, compared with other replicas') runs on tokio's paused clock in
//! tests.

use time::OffsetDateTime;
use tokio::time::Instant;

/// The wall clock at start plus tokio's elapsed time (cheap to copy).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    wall: OffsetDateTime,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            wall: OffsetDateTime::now_utc(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.wall + self.origin.elapsed()
    }

    /// Sleeps until the clock reads `at` (returns at once if it has).
    pub async fn sleep_until(&self, at: OffsetDateTime) {
        let wait = at - self.now();
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn moves_with_the_paused_clock() {
        let clock = Clock::new();
        let t0 = clock.now();
        clock.sleep_until(t0 + Duration::from_secs(90)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        clock.sleep_until(t0).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
    }
}
