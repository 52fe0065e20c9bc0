//! The dial loop of one replica: claims due contacts of every running campaign as their caps
//! allow ([`crate::store::claim`]) and places each claimed call in a task of its own.
//!
//! The loop sleeps until the earliest moment a pacer named, or until woken (a campaign created or
//! resumed here, an attempt ended), and at most [`POLL`], so it notices what other replicas
//! changed.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use crate::place::Placer;
use crate::store::{self, Claim};

/// Longest sleep of the loop.
pub const POLL: Duration = Duration::from_millis(250);
/// An attempt whose create request has had no stored answer for this long is expired.
pub const UNPLACED_AFTER: Duration = Duration::from_secs(120);
/// How often unplaced attempts are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// The loop's settings.
#[derive(Clone)]
pub struct Dialing {
    pub placer: Placer,
    /// The Twilio account (the account pacer's key).
    pub account: String,
    /// The account's calls-per-second cap as an interval.
    pub account_interval: Duration,
    pub wake: Arc<Notify>,
}

impl Dialing {
    /// Runs until `stop`; placements in flight are tracked by `calls`.
    pub async fn run(self, calls: TaskTracker, stop: CancellationToken) {
        let pool = &self.placer.pool;
        let clock = self.placer.clock;
        let mut last_expiry = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            let mut until = clock.now() + POLL;
            match self.round(&calls, &stop).await {
                Ok(Some(at)) => until = until.min(at),
                Ok(None) => {}
                Err(error) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    tracing::warn!(%error, "claiming contacts failed");
                }
            }
            if last_expiry.elapsed() >= EXPIRE_EVERY {
                last_expiry = tokio::time::Instant::now();
                let now = clock.now();
                if let Err(error) = store::expire_unplaced(pool, now - UNPLACED_AFTER, now).await {
                    tracing::warn!(%error, "expiring unplaced attempts failed");
                }
            }
            tokio::select! {
                () = clock.sleep_until(until) => {}
                () = self.wake.notified() => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Claims what every running campaign allows now (one call each per round: after a call
    /// its pacer's next moment is known, so no claim is spent on learning it); the earliest
    /// moment a pacer named.
    async fn round(
        &self,
        calls: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let pool = &self.placer.pool;
        let mut earliest: Option<OffsetDateTime> = None;
        for campaign in store::running_campaigns(pool).await? {
            if stop.is_cancelled() {
                break;
            }
            let now = self.placer.clock.now();
            let next = match store::claim(pool, campaign, &self.account, self.account_interval, now)
                .await?
            {
                Claim::Dial(claimed, at) => {
                    let placer = self.placer.clone();
                    calls.spawn(placer.place(claimed, stop.clone()));
                    Some(at)
                }
                Claim::WaitUntil(at) => Some(at),
                Claim::AtCap | Claim::Idle => None,
            };
            if let Some(at) = next {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest)
    }
}
