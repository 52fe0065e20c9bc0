//! The recording retention period: recordings older than `RECORDINGS_RETENTION_DAYS` are
//! deleted from the recording store, and their records with them (the call's `recording`
//! becomes `null`; its transcript and the rest of its record stay).
//!
//! Every replica sweeps, every [`SWEEP_EVERY`]: a sweep is idempotent (a recording another
//! replica deleted first is simply gone), so no coordination is needed. Age is the store's own
//! modification time of the WAV, the moment the gateway wrote it.

use std::time::Duration;

use sqlx::PgPool;
use switchboard_service::recordings::{RecordingStore, StoreError};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// How often the store is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Why a sweep failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("forgetting deleted recordings: {0}")]
    Database(#[from] sqlx::Error),
}

/// Deletes every recording written more than `retention` before `now_ms` (milliseconds since
/// the Unix epoch), objects first, then their records; returns how many objects it deleted.
pub async fn sweep(
    store: &RecordingStore,
    pool: &PgPool,
    retention: Duration,
    now_ms: i64,
) -> Result<usize, SweepError> {
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let swept = store.sweep(cutoff).await?;
    if swept.is_empty() {
        return Ok(0);
    }
    let locations: Vec<String> = swept.into_iter().map(|s| s.location).collect();
    crate::sessions::forget_recordings(pool, &locations).await?;
    metrics::counter!(m::RECORDINGS_DELETED).increment(locations.len() as u64);
    tracing::info!(
        deleted = locations.len(),
        ?retention,
        "old recordings deleted"
    );
    Ok(locations.len())
}

/// Sweeps now and every [`SWEEP_EVERY`] until `stop`; `None` keeps recordings forever.
pub async fn run(
    store: RecordingStore,
    pool: PgPool,
    retention: Option<Duration>,
    stop: CancellationToken,
) {
    let Some(retention) = retention else {
        return;
    };
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let swept = tokio::select! {
            () = stop.cancelled() => return,
            swept = sweep(&store, &pool, retention, switchboard_proto::now_ms()) => swept,
        };
        if let Err(error) = swept {
            metrics::counter!(m::RETENTION_ERRORS).increment(1);
            tracing::warn!(%error, "recording retention sweep failed; retrying at the next");
        }
    }
}
