//! Keeping a server's tools registered in `voice-tools` while it serves.
//!
//! The bucket's settings, key layout and timings live in
//! [`switchboard_service::tool_registry`], shared with call-workers, the CLI and the Python and
//! TypeScript SDKs. [`refresh`] puts every spec and this replica's heartbeat every
//! [`REFRESH_EVERY`] and, on shutdown, withdraws them, so the tool leaves the model's tool list
//! at once when its last replica stops, or within [`ENTRY_MAX_AGE`] when the replica dies.

use std::time::Duration;

use switchboard_proto::{Message as _, ToolSpec};
pub use switchboard_service::tool_registry::{
    ENTRY_MAX_AGE, REFRESH_EVERY, Registration, RegistryError, open,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long withdrawing the registration may hold up shutdown.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

/// The `(name, encoded spec)` pairs a [`Registration`] puts.
pub(crate) fn encoded(specs: &[ToolSpec]) -> Vec<(String, bytes::Bytes)> {
    specs
        .iter()
        .map(|s| (s.name.clone(), bytes::Bytes::from(s.encode_to_vec())))
        .collect()
}

/// Puts `specs` once; a failure is counted and logged (the caller retries). Whether they are
/// registered now.
pub(crate) async fn put(registration: &mut Registration, specs: &[(String, bytes::Bytes)]) -> bool {
    match registration.put(specs).await {
        Ok(()) => true,
        Err(error) => {
            metrics::counter!(crate::metrics::REGISTRY_ERRORS).increment(1);
            tracing::warn!(%error, "registering tools failed; will retry");
            false
        }
    }
}

/// First retry of a failed registration; retries back off to `every`.
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// Re-registers `specs` every `every` until `shutdown`, then withdraws them. While `specs` are
/// not registered (`registered` false: the first put failed, or a refresh did) they are put
/// again with backoff from [`RETRY_FIRST`] rather than a whole period later: until its tools are
/// listed, no new call offers them to its model. A failed registration is most often a bucket
/// whose stream is still electing a leader (a cluster starting, a node restarting), over within
/// a second or two.
pub(crate) async fn refresh(
    mut registration: Registration,
    specs: Vec<(String, bytes::Bytes)>,
    every: Duration,
    mut registered: bool,
    shutdown: CancellationToken,
) {
    let mut backoff = switchboard_service::backoff::Backoff::new(RETRY_FIRST, every);
    loop {
        let wait = if registered {
            every
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            () = tokio::time::sleep_until(Instant::now() + wait) => {
                let now = put(&mut registration, &specs).await;
                if now && !registered {
                    tracing::info!("tools registered");
                    backoff.reset();
                }
                registered = now;
            }
            () = shutdown.cancelled() => break,
        }
    }
    let names: Vec<String> = specs.into_iter().map(|(name, _)| name).collect();
    match tokio::time::timeout(WITHDRAW_TIMEOUT, registration.withdraw(&names)).await {
        Ok(Ok(())) => tracing::info!(tools = ?names, "tools withdrawn from the registry"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "withdrawing tools failed; they expire from the registry")
        }
        Err(_) => tracing::warn!("withdrawing tools timed out; they expire from the registry"),
    }
}
