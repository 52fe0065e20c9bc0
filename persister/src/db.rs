//! The Postgres pool, the embedded migrations and the liveness probe of the database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// The schema (`migrations/`), embedded at build time and applied at start. sqlx takes an
/// advisory lock, so replicas starting together apply it once.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often the database is probed for `/readyz` while the consumer is idle.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// A pool for `url` that connects on first use, so the HTTP endpoints come up while the
/// database is still starting. A malformed URL fails at once.
pub fn pool(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// `SELECT 1`, bounded so a hung server reads as down.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Waits until the database answers, retrying with backoff; `false` if `stop` came first.
pub async fn wait_until_reachable(pool: &PgPool, stop: &CancellationToken) -> bool {
    let mut backoff = switchboard_service::backoff::Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    loop {
        let error = tokio::select! {
            r = ping(pool) => match r {
                Ok(()) => return true,
                Err(error) => error,
            },
            () = stop.cancelled() => return false,
        };
        tracing::warn!(%error, "database unreachable; retrying");
        backoff.wait_or(stop).await;
        if stop.is_cancelled() {
            return false;
        }
    }
}

/// Probes the database every few seconds and reports it to readiness, so `/readyz` notices an
/// outage even when no events arrive.
pub async fn probe(pool: PgPool, readiness: Readiness, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let ok = ping(&pool).await.is_ok();
        if ok != readiness.database_ok() {
            if ok {
                tracing::info!("database reachable");
            } else {
                tracing::warn!("database unreachable");
            }
        }
        readiness.set_database(ok);
    }
}
