//! Reloading the agents file while the worker runs.
//!
//! [`watch`] checks the file's modification time and size every poll interval (no inotify: it
//! works the same on every file system and in containers with mounted config maps) and reloads
//! at once on SIGHUP. A file that reads and validates replaces the routing table for new offers;
//! calls in progress are untouched, because each holds its own `Arc<Agent>`. A file with a
//! mistake is refused with the precise error (file, agent, field) and the previous table stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agents::{Agents, AgentsError};

/// What identifies a version of the file without reading it.
type Fingerprint = Option<(SystemTime, u64)>;

async fn fingerprint(path: &Path) -> Fingerprint {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and validates the file off the async threads (it may read `instructions_file`s too).
async fn load(path: PathBuf) -> Result<Agents, AgentsError> {
    let file = path.display().to_string();
    match tokio::task::spawn_blocking(move || Agents::load(&path)).await {
        Ok(result) => result,
        Err(e) => Err(AgentsError::File {
            file,
            message: format!("reloading failed: {e}"),
        }),
    }
}

/// Starts watching the agents file of `current` (the table loaded at start); returns the
/// receiver new offers route with. Stops when `stop` is cancelled.
pub fn watch(
    current: Arc<Agents>,
    every: Duration,
    stop: CancellationToken,
) -> watch::Receiver<Arc<Agents>> {
    let path = current.file().to_path_buf();
    let (tx, rx) = watch::channel(current);
    tokio::spawn(async move {
        let mut seen = fingerprint(&path).await;
        let mut hangup = hangup_signal();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                () = next_hangup(&mut hangup) => true,
            };
            let now = fingerprint(&path).await;
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match load(path.clone()).await {
                Ok(agents) => {
                    metrics::counter!("worker_agents_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(file = %path.display(), agents = agents.all().len(), forced,
                        "agents file reloaded; new calls use it");
                    tx.send_replace(Arc::new(agents));
                }
                Err(e) => {
                    metrics::counter!("worker_agents_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(error = %e, "agents file refused; keeping the previous agents");
                }
            }
        }
    });
    rx
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP handler unavailable; the agents file is still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    if let Some(s) = hangup
        && s.recv().await.is_some()
    {
        return;
    }
    *hangup = None;
    std::future::pending().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}
