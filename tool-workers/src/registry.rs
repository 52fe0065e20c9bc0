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

/// Re-registers `specs` every `every` until `shutdown`, then withdraws them.
pub(crate) async fn refresh(
    mut registration: Registration,
    specs: Vec<(String, bytes::Bytes)>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = registration.put(&specs).await {
                    metrics::counter!(crate::metrics::REGISTRY_ERRORS).increment(1);
                    tracing::warn!(%error, "refreshing tool registry failed");
                }
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
