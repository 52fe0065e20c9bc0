//! Reloading the agents file while the worker runs.
//!
//! [`watch`] checks the modification time and size of the agents file and of every
//! `instructions_file` it names, every poll interval (no inotify: it works the same on every file
//! system and in containers with mounted config maps), and reloads at once on SIGHUP. A file that reads and validates replaces the routing table for new offers;
//! calls in progress are untouched, because each holds its own `Arc<Agent>`. A file with a
//! mistake is refused with the precise error (file, agent, field) and the previous table stays.
//! Each load also warns about listed tools that nobody has registered (see [`warn_unregistered`]),
//! so a misspelled tool name shows when the file is loaded, not only on the next call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{Agents, AgentsError};

/// What identifies a version of one file without reading it.
type Fingerprint = Option<(SystemTime, u64)>;

async fn fingerprint(path: &Path) -> Fingerprint {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// [`fingerprints`], taken before the watch task starts, so an edit made right after `watch`
/// returns is seen as a change.
fn fingerprints_now(sources: &[PathBuf]) -> Vec<Fingerprint> {
    sources
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// The fingerprints of every file the agents were read from.
async fn fingerprints(sources: &[PathBuf]) -> Vec<Fingerprint> {
    let mut all = Vec::with_capacity(sources.len());
    for path in sources {
        all.push(fingerprint(path).await);
    }
    all
}

fn sources_of(agents: &Agents) -> Vec<PathBuf> {
    agents.sources().map(Path::to_path_buf).collect()
}

/// Logs (at warn) every business tool the agents list that has no spec in the registry: the
/// model will not be offered it until a tool server registers it.
pub async fn warn_unregistered(registry: Option<&kv::Store>, agents: &Agents) {
    let Some(store) = registry else { return };
    let listed = agents.business_tools();
    match switchboard_service::tool_registry::unregistered(store, listed).await {
        Ok(missing) => {
            for tool in missing {
                let by = agents.listing(tool);
                tracing::warn!(tool, agents = ?by, file = %agents.file().display(),
                    "a listed tool is not registered (misspelled, or no tool server runs it); \
                     calls go on without it");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not check the agents' tools against the registry")
        }
    }
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

/// Starts watching the agents file of `current` (the table loaded at start) in a task on
/// `tasks`; returns the receiver new offers route with. Stops when `stop` is cancelled.
pub fn watch(
    current: Arc<Agents>,
    every: Duration,
    stop: CancellationToken,
    registry: Option<kv::Store>,
    tasks: &TaskTracker,
) -> watch::Receiver<Arc<Agents>> {
    let path = current.file().to_path_buf();
    let mut sources = sources_of(&current);
    let mut seen = fingerprints_now(&sources);
    let (tx, rx) = watch::channel(current);
    tasks.spawn(async move {
        let mut hangup = hangup_signal();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                () = next_hangup(&mut hangup) => true,
            };
            let now = fingerprints(&sources).await;
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match load(path.clone()).await {
                Ok(agents) => {
                    // The new file may name other instruction files: watch those from now on.
                    let new_sources = sources_of(&agents);
                    if new_sources != sources {
                        sources = new_sources;
                        seen = fingerprints(&sources).await;
                    }
                    warn_unregistered(registry.as_ref(), &agents).await;
                    metrics::counter!(crate::metrics::AGENTS_RELOADS, "result" => "ok")
                        .increment(1);
                    tracing::info!(file = %path.display(), agents = agents.all().len(), forced,
                        "agents file reloaded; new calls use it");
                    tx.send_replace(Arc::new(agents));
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::AGENTS_RELOADS, "result" => "error")
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
