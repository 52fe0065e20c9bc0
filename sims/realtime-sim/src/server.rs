//! The HTTP side: the listener, `/healthz`, the WebSocket upgrade on every other path, and
//! the [`SimServer`] handle that tests and the binary hold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::registry::{Registry, SessionRecord};
use crate::script::Script;
use crate::session::{self, SessionContext};

/// How a [`SimServer`] behaves beyond its script.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Keep a [`SessionRecord`] of every connection (all client events included). Tests want
    /// this; a long-running process does not, since records grow with traffic.
    pub record: bool,
    /// How long each WebSocket upgrade takes before the server answers it: a real handshake's
    /// time (TLS, the API's own setup), so benchmarks of reconnects and takeovers include it.
    pub connect_delay: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            record: true,
            connect_delay: Duration::ZERO,
        }
    }
}

/// A running simulator. Dropping it stops the server too, without waiting.
pub struct SimServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    registry: Registry,
    serve: Option<JoinHandle<std::io::Result<()>>>,
}

struct App {
    script: Arc<Script>,
    connect_delay: Duration,
    registry: Registry,
    cancel: CancellationToken,
    tracker: TaskTracker,
    next_id: AtomicU64,
}

impl SimServer {
    /// Listens on `addr` (e.g. `127.0.0.1:0`) and serves `script`, recording every session.
    pub async fn start(addr: &str, script: Script) -> std::io::Result<SimServer> {
        Self::start_with(addr, script, SimOptions::default()).await
    }

    /// Like [`SimServer::start`], with options.
    pub async fn start_with(
        addr: &str,
        script: Script,
        options: SimOptions,
    ) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = Registry::spawn(options.record);
        let app = Arc::new(App {
            script: Arc::new(script),
            connect_delay: options.connect_delay,
            registry: registry.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            next_id: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .fallback(upgrade)
            .with_state(app);
        let stop = cancel.clone();
        let serve = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(SimServer {
            addr,
            cancel,
            tracker,
            registry,
            serve: Some(serve),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Realtime endpoint, `ws://127.0.0.1:PORT/v1/realtime` (a wildcard listen address is
    /// reached through loopback).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("ws://{addr}/v1/realtime")
    }

    /// One record per accepted connection, in order (empty when recording is off).
    pub async fn sessions(&self) -> Vec<SessionRecord> {
        self.registry.snapshot().await
    }

    /// Stops accepting, closes every session with 1001 and waits for them to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        if let Some(serve) = self.serve.take() {
            match tokio::time::timeout(Duration::from_secs(5), serve).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "realtime-sim server failed"),
                Ok(_) => {}
                Err(_) => tracing::warn!("realtime-sim server did not stop in time"),
            }
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Every path but `/healthz`: check the key, then upgrade to a Realtime session.
async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    if !app.connect_delay.is_zero() {
        tokio::time::sleep(app.connect_delay).await;
    }
    if app.script.session.require_api_key && !has_bearer(&headers) {
        let body = serde_json::json!({"error": {
            "type": "invalid_request_error",
            "code": "invalid_api_key",
            "message": "Missing or invalid bearer authentication in header.",
            "param": null,
        }});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let query = uri.query().unwrap_or_default().to_string();
    let model = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("model="))
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let ctx = SessionContext {
        id,
        script: app.script.clone(),
        registry: app.registry.clone(),
        cancel: app.cancel.child_token(),
        model,
        beta: headers.contains_key("openai-beta"),
    };
    let registry = app.registry.clone();
    let tracker = app.tracker.clone();
    let span = tracing::info_span!("realtime_session", session = id);
    ws.on_upgrade(move |socket| {
        tracker.track_future(
            async move {
                registry.opened(id, header_list, query);
                session::run(socket, ctx).await;
            }
            .instrument(span),
        )
    })
}

/// `Authorization: Bearer <something>`.
fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| !key.trim().is_empty())
}
