//! The worker process: wiring, HTTP probes, capacity and drain.
//!
//! Start: read the agents file (a mistake stops the process with a precise error), connect to
//! NATS, make sure the events stream and the tool registry exist, serve `/healthz`, `/readyz`
//! and `/metrics`, and take offers.
//!
//! Drain (SIGTERM): readiness turns false, the offer subscription is drained (no new calls),
//! running calls may finish until shortly before `DRAIN_SECONDS` (a reserve of a fifth, at most
//! 10 s, is kept, and before it a hand-over window of half the drain, at most 5 s). Then each
//! call still running asks its gateway to hand it over to another worker (a `HandOver` frame;
//! the call goes on here until the new owner's epoch shows up, then stops without ending). What
//! no other worker took by the reserve is ended with reason `worker_shutdown`; queued call
//! events are published to JetStream, or spilled to the log if the broker is away. The process stops
//! within `DRAIN_SECONDS` whatever NATS is doing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use switchboard_proto::WORKERS_QUEUE_GROUP;
use switchboard_service::Health;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::events::{EventPublisher, ensure_stream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{Agents, AgentsError};
use crate::call::CallContext;
use crate::config::Config;
use crate::offers::Offers;
use crate::tools;

/// How long the offer intake may take to stop (it declines offers for a moment, then
/// unsubscribes).
const OFFERS_STOP_LIMIT: Duration = Duration::from_secs(5);
/// Kept at the very end of the drain for the NATS flush and the HTTP server.
const FINAL_STEPS: Duration = Duration::from_millis(500);

/// The part of the drain kept for ending the calls still running and publishing their last
/// events: a fifth of it, at most 10 seconds. Calls get the rest.
fn shutdown_reserve(drain: Duration) -> Duration {
    (drain / 5).min(Duration::from_secs(10))
}

/// Before the reserve: the time calls still running get to be handed over to other workers
/// (the gateway re-offers each, another worker rebuilds it and the gateway commits it): half the
/// drain, at most 5 seconds.
fn hand_over_window(drain: Duration) -> Duration {
    (drain / 2).min(Duration::from_secs(5))
}

/// Why the worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The agents file is wrong.
    #[error(transparent)]
    Agents(#[from] AgentsError),
    /// NATS is unreachable.
    #[error(transparent)]
    Nats(#[from] switchboard_service::nats::ConnectError),
    /// JetStream refused the events stream.
    #[error("creating the events stream: {0}")]
    Stream(String),
    /// NATS refused the offer subscription.
    #[error("subscribing to offers: {0}")]
    Subscribe(String),
    /// The HTTP listener.
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The worker task died.
    #[error("worker task failed: {0}")]
    Task(String),
}

/// A running worker.
pub struct Worker {
    addr: SocketAddr,
    worker_id: String,
    health: Health,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl Worker {
    /// Starts a worker; it takes offers once this returns.
    pub async fn start(config: Config) -> Result<Self, WorkerError> {
        let agents = Arc::new(Agents::load(&config.agents_file)?);
        let worker_id = config.worker_id();
        tracing::info!(%worker_id, agents = agents.all().len(), file = %agents.file().display(),
            "agents loaded");

        let client = config
            .nats
            .connect_with_capacity(
                &format!("call-worker {worker_id}"),
                crate::call::SUBSCRIPTION_CAPACITY,
            )
            .await?;
        let subjects = config.nats.subjects();
        let js = jetstream::new(client.clone());
        ensure_stream(&js, &subjects)
            .await
            .map_err(|e| WorkerError::Stream(e.to_string()))?;
        let registry = match tools::open_registry(&js).await {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::error!(error = %e, "tool registry unavailable; business tools are left out");
                None
            }
        };
        let publisher = EventPublisher::spawn(js, subjects.clone());

        let health = Health::new();
        let metrics = switchboard_service::telemetry::install_metrics();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WorkerError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WorkerError::Listen {
                addr: config.listen,
                source,
            })?;
        // The worker's own tasks (not the calls'): the HTTP server, the offer desk, the drain.
        let service_tasks = TaskTracker::new();
        let http_stop = CancellationToken::new();
        let router: axum::Router = health.router(metrics);
        let http =
            switchboard_service::tasks::serve(listener, router, http_stop.clone(), &service_tasks);

        let offers_sub = client
            .queue_subscribe(subjects.offer(), WORKERS_QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| WorkerError::Subscribe(e.to_string()))?;
        // Takeover offers reach every worker (no queue group): see `Subjects::takeover`.
        let takeovers_sub = client
            .subscribe(subjects.takeover())
            .await
            .map_err(|e| WorkerError::Subscribe(e.to_string()))?;
        let ctx = Arc::new(CallContext {
            client: client.clone(),
            subjects,
            publisher: publisher.clone(),
            registry,
            realtime: config.realtime(),
            worker_id: worker_id.clone(),
            tool_timeout: config.tool_timeout(),
        });
        let calls = CancellationToken::new();
        let hand_over = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        crate::reload::warn_unregistered(ctx.registry.as_ref(), &agents).await;
        // The reloader stops at the first step of the drain, so the calls' tracker closes on
        // calls alone.
        let agents = crate::reload::watch(
            agents,
            config.agents_reload(),
            shutdown.clone(),
            ctx.registry.clone(),
            &tracker,
        );
        let offers = Offers::new(
            ctx,
            agents,
            config.max_calls as usize,
            calls.clone(),
            hand_over.clone(),
            tracker.clone(),
        );
        let stop_offers = CancellationToken::new();
        let offers_task =
            service_tasks.spawn(offers.run(offers_sub, takeovers_sub, stop_offers.clone()));
        metrics::gauge!(crate::metrics::MAX_CALLS).set(f64::from(config.max_calls));
        health.set_ready(true);
        tracing::info!(%addr, %worker_id, max_calls = config.max_calls, "call-worker ready");

        let drain_within = config.drain();
        let done = service_tasks.spawn({
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.cancelled().await;
                let drain = Drain::new(drain_within);
                let reserve = shutdown_reserve(drain_within);
                health.set_ready(false);
                stop_offers.cancel();
                let mut offers_task = offers_task;
                if drain
                    .step("stop taking offers", OFFERS_STOP_LIMIT, &mut offers_task)
                    .await
                    .is_none()
                {
                    offers_task.abort();
                }
                tracker.close();
                tracing::info!(
                    calls = tracker.len(),
                    drain = ?drain.remaining(),
                    "draining: waiting for calls to end"
                );
                let window = hand_over_window(drain_within);
                let ended =
                    tokio::time::timeout(drain.until_reserve(reserve + window), tracker.wait())
                        .await
                        .is_ok();
                if !ended {
                    tracing::info!(
                        calls = tracker.len(),
                        "drain deadline near; handing the calls over"
                    );
                    hand_over.cancel();
                }
                if !ended
                    && tokio::time::timeout(drain.until_reserve(reserve), tracker.wait())
                        .await
                        .is_err()
                {
                    tracing::warn!(
                        calls = tracker.len(),
                        "drain deadline near; ending the remaining calls"
                    );
                    calls.cancel();
                    if drain
                        .step("ending calls", reserve / 2, tracker.wait())
                        .await
                        .is_none()
                    {
                        tracing::error!(calls = tracker.len(), "calls did not end in time");
                    }
                }
                // Whatever the broker is doing, the events still queued get what is left of the
                // deadline (less a moment for the rest); the publisher spills what misses it.
                let report = publisher.close(drain.until_reserve(FINAL_STEPS)).await;
                if report.spilled > 0 {
                    tracing::error!(
                        spilled = report.spilled,
                        "call events were written to the log instead of the stream"
                    );
                }
                flush_nats(&drain, &client, FINAL_STEPS / 2).await;
                http_stop.cancel();
                if let Some(Ok(Err(e))) = drain.step("http server", FINAL_STEPS / 2, http).await {
                    tracing::error!(error = %e, "http server failed");
                }
                tracing::info!("call-worker stopped");
            }
        });
        // Nothing more is spawned on it; `wait` joins the last of them, the drain.
        service_tasks.close();
        Ok(Self {
            addr,
            worker_id,
            health,
            shutdown,
            done,
        })
    }

    /// The HTTP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Whether `/readyz` says ready.
    pub fn is_ready(&self) -> bool {
        self.health.is_ready()
    }

    /// Starts draining (what SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the worker has drained and stopped.
    pub async fn wait(self) -> Result<(), WorkerError> {
        self.done
            .await
            .map_err(|e| WorkerError::Task(e.to_string()))
    }
}

/// Runs a worker until `shutdown` resolves, then drains it.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let worker = Worker::start(config).await?;
    shutdown.await;
    worker.shutdown();
    worker.wait().await
}
