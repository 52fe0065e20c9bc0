//! The dial loop of one replica: claims the contacts of every running campaign that its caps
//! allow within the next [`LEAD`] ([`crate::store::claim`]) and places each claimed call in a
//! task of its own, at the call's moment and once the replica's [`Gate`] lets it through.
//!
//! The loop sleeps until half the lead before the earliest moment a pacer named (so the next
//! claim is made while the calls before it are still being placed), or until woken (a campaign
//! created or resumed here, an attempt ended), and at most [`POLL`], so it notices what other
//! replicas changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::metrics as m;
use crate::pacer::{LEAD, Window};
use crate::place::Placer;
use crate::store::{self, Claim, Claimed};

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
    /// The replica's windows of recent create requests.
    pub gate: Gate,
    pub wake: Arc<Notify>,
}

/// One replica's windows of its recent create requests ([`Window`]): the account's, and each
/// campaign's while it has calls in one.
#[derive(Clone)]
pub struct Gate(Arc<Mutex<Windows>>);

struct Windows {
    account: Window,
    campaigns: HashMap<Uuid, Window>,
}

impl Gate {
    /// The gate of an account whose cap is `calls_per_second`.
    pub fn new(calls_per_second: f64) -> Self {
        Self(Arc::new(Mutex::new(Windows {
            account: Window::new(calls_per_second),
            campaigns: HashMap::new(),
        })))
    }

    /// Waits until a create request of `campaign` (whose cap is `calls_per_second`) fits the
    /// account's window and the campaign's, and counts it in both; `false` if `stop` came
    /// first.
    pub async fn admit(
        &self,
        campaign: Uuid,
        calls_per_second: f64,
        stop: &CancellationToken,
    ) -> bool {
        loop {
            let wait = {
                let mut windows = self.0.lock().await;
                let windows = &mut *windows;
                let now = Instant::now();
                windows
                    .campaigns
                    .retain(|id, w| *id == campaign || !w.is_idle(now));
                let own = windows
                    .campaigns
                    .entry(campaign)
                    .or_insert_with(|| Window::new(calls_per_second));
                match own.wait(now).max(windows.account.wait(now)) {
                    None => {
                        own.record(now);
                        windows.account.record(now);
                        return true;
                    }
                    Some(at) => at,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wait) => {}
                () = stop.cancelled() => return false,
            }
        }
    }
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
                Ok(Some(at)) => until = until.min(at - LEAD / 2),
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

    /// Claims what every running campaign allows within the lead and schedules each call;
    /// the earliest moment a pacer named for a next call.
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
                    for call in claimed {
                        calls.spawn(place_when_due(
                            self.placer.clone(),
                            self.gate.clone(),
                            call,
                            stop.clone(),
                        ));
                    }
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

/// Places `claimed` at its moment, once the gate lets it through; a call not placed by `stop`
/// is given back (its contact is pending again).
async fn place_when_due(placer: Placer, gate: Gate, claimed: Claimed, stop: CancellationToken) {
    let due = tokio::select! {
        () = placer.clock.sleep_until(claimed.dial_at) => true,
        () = stop.cancelled() => false,
    };
    if !due
        || !gate
            .admit(claimed.campaign_id, claimed.calls_per_second, &stop)
            .await
    {
        if let Err(error) = store::release_unplaced(&placer.pool, claimed.attempt_id).await {
            tracing::warn!(%error, attempt = claimed.attempt_id, "giving back a claim failed");
        }
        return;
    }
    placer.place(claimed, stop).await;
}
