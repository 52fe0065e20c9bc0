//! The shutdown sequence every service runs, under one deadline.
//!
//! Kubernetes kills a pod when its grace period ends, whatever the pod was waiting for; a
//! process that waits on an unreachable broker or database without a bound is killed mid-write
//! instead of exiting cleanly. So every step of a drain runs on a [`Drain`]: not ready -> stop
//! intake -> let running work finish -> force the rest -> flush what was accepted. Each step is
//! bounded by what is left of the deadline (and by its own share, where it has one), and a step
//! that runs out is logged and skipped: the process always gets to `exit(0)` in time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A drain deadline, and the steps run before it.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    deadline: Instant,
}

impl Drain {
    /// A drain that must be over `within` from now.
    pub fn new(within: Duration) -> Self {
        Self {
            deadline: Instant::now() + within,
        }
    }

    /// When the process must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left until the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The deadline less `reserve`, kept for the steps after this one (forcing, flushing).
    pub fn until_reserve(&self, reserve: Duration) -> Duration {
        self.remaining().saturating_sub(reserve)
    }

    /// Runs `step` for at most `limit` and at most what is left of the deadline. `None` when it
    /// was cut short (logged with `what`).
    pub async fn step<T>(
        &self,
        what: &'static str,
        limit: Duration,
        step: impl Future<Output = T>,
    ) -> Option<T> {
        let limit = limit.min(self.remaining());
        match tokio::time::timeout(limit, step).await {
            Ok(done) => Some(done),
            Err(_) => {
                tracing::warn!(step = what, ?limit, "drain step cut short by its deadline");
                None
            }
        }
    }
}

/// Flushes a NATS connection, bounded: a flush waits for the server's answer and would wait
/// forever while the server is away.
pub async fn flush_nats(drain: &Drain, client: &async_nats::Client, limit: Duration) {
    if let Some(Err(error)) = drain.step("nats flush", limit, client.flush()).await {
        tracing::warn!(%error, "flushing NATS on shutdown failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_are_cut_at_their_limit_and_at_the_deadline() {
        let drain = Drain::new(Duration::from_secs(10));
        let began = Instant::now();
        let done = drain
            .step("quick", Duration::from_secs(5), async { 7 })
            .await;
        assert_eq!(done, Some(7));
        let cut = drain
            .step(
                "stuck",
                Duration::from_secs(3),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(cut, None);
        assert_eq!(began.elapsed(), Duration::from_secs(3));
        // The own limit (60 s) is longer than what is left: the deadline wins.
        let cut = drain
            .step(
                "stuck",
                Duration::from_secs(60),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(cut, None);
        assert_eq!(began.elapsed(), Duration::from_secs(10));
        assert_eq!(drain.remaining(), Duration::ZERO);
        assert_eq!(drain.until_reserve(Duration::from_secs(1)), Duration::ZERO);
    }
}
