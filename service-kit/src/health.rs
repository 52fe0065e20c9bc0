//! Liveness, readiness and metrics routes.
//!
//! Liveness stays true while the process runs (a draining pod must not be restarted); readiness
//! is true once the service can do its work and turns false when draining starts, so load
//! balancers stop sending new work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// A cloneable readiness flag.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Not ready until [`Health::set_ready`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the service ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// `/healthz`, `/readyz` and (when a recorder is given) `/metrics`.
    pub fn router<S: Clone + Send + Sync + 'static>(
        &self,
        metrics: Option<PrometheusHandle>,
    ) -> Router<S> {
        let health = self.clone();
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = health.is_ready();
                    async move {
                        if ready {
                            (StatusCode::OK, "ready")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                        }
                    }
                }),
            );
        match metrics {
            Some(handle) => router.route("/metrics", get(move || async move { handle.render() })),
            None => router,
        }
    }
}
