//! The notifier: every call event, as signed Standard Webhooks, to the HTTP endpoints that
//! asked for it; `call.ended` carries the end-of-call report.
//!
//! - [`metrics`]: the metric names;
//! - [`endpoints`]: the `WEBHOOKS_FILE` (`[[endpoint]]` with `url`, `secret`, `events`,
//!   `allow_private_network`);
//! - [`signature`]: `webhook-id` / `webhook-timestamp` / `webhook-signature` (`v1,` HMAC-SHA256);
//! - [`consumer`]: the durable JetStream consumer `notifier`: keeps events, schedules
//!   deliveries in Postgres, acks after the commit;
//! - [`report`]: webhook bodies and the end-of-call report;
//! - [`dispatch`]: one task per endpoint sending, retrying with backoff and `Retry-After`,
//!   disabling on 410, giving up into the log;
//! - [`ssrf`]: no delivery to non-public addresses unless the endpoint allows it;
//! - [`store`]: the Postgres state (`migrations/`);
//! - [`api`]: the delivery log, re-send and endpoint re-enabling.
#![forbid(unsafe_code)]

pub mod api;
pub mod consumer;
pub mod dispatch;
pub mod endpoints;
pub mod metrics;
pub mod report;
pub mod signature;
pub mod ssrf;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use persister::auth::AdminToken;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::redact::Secret;
use switchboard_service::{Health, NatsArgs, telemetry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{Clients, Clock, Settings};

/// `notifier` settings (flags with environment fallbacks). `Debug` prints no credential.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "notifier",
    version,
    about = "Delivers Switchboard call events as signed webhooks"
)]
pub struct Config {
    /// HTTP address of the delivery-log API, /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8084")]
    pub listen: SocketAddr,
    /// Postgres URL of the notifier's database (migrated at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Bearer token of the delivery-log API. Required.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// The endpoints (TOML, `[[endpoint]]` tables).
    #[arg(long, env = "WEBHOOKS_FILE")]
    pub webhooks_file: PathBuf,
    /// Seconds an attempt may take before it counts as failed.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15)]
    pub webhook_timeout_seconds: u64,
    /// Attempts before a delivery is given up (kept, and re-sendable).
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 20)]
    pub webhook_max_attempts: u32,
    /// Milliseconds before the first retry; each retry doubles it (with jitter).
    #[arg(long, env = "WEBHOOK_FIRST_RETRY_MS", default_value_t = 5000)]
    pub webhook_first_retry_ms: u64,
    /// Most seconds between two retries.
    #[arg(long, env = "WEBHOOK_MAX_RETRY_SECONDS", default_value_t = 36_000)]
    pub webhook_max_retry_seconds: u64,
    /// An end-of-call report above this many bytes carries a link instead of the transcript.
    #[arg(long, env = "WEBHOOK_MAX_PAYLOAD_BYTES", default_value_t = 20_000)]
    pub webhook_max_payload_bytes: usize,
    /// Base URL of the persister's read API, for the transcript link of large reports.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The price table of the cost in the report (as the persister's).
    #[command(flatten)]
    pub prices: persister::pricing::PriceArgs,
    /// Seconds the notifier may take to stop after SIGTERM.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl Config {
    fn settings(&self) -> Settings {
        Settings {
            timeout: Duration::from_secs(self.webhook_timeout_seconds.max(1)),
            first_retry_delay: Duration::from_millis(self.webhook_first_retry_ms.max(1)),
            max_retry_delay: Duration::from_secs(self.webhook_max_retry_seconds.max(1)),
            max_attempts: self.webhook_max_attempts.max(1),
            max_payload_bytes: self.webhook_max_payload_bytes,
            api_base: self.public_url.clone().filter(|u| !u.is_empty()),
            ..Settings::default()
        }
    }
}

/// Why the notifier stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("ADMIN_TOKEN is not set (or empty): the delivery-log API needs a bearer token")]
    MissingAdminToken,
    #[error(transparent)]
    Endpoints(#[from] endpoints::EndpointsError),
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    DatabaseUrl(sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("binding {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Nats(#[from] switchboard_service::nats::ConnectError),
    #[error(transparent)]
    Prices(#[from] persister::pricing::PricesError),
}

/// How often kept call events older than [`KEEP_EVENTS`] are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long call events are kept for end-of-call reports.
const KEEP_EVENTS: Duration = Duration::from_secs(24 * 3600);
/// Kept at the end of the drain for the last steps.
const FINAL_STEPS: Duration = Duration::from_millis(400);

/// Runs until `shutdown` resolves, then drains: attempts in flight finish (or are left to
/// their lease), the last acks are flushed.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = config
        .admin_token
        .as_ref()
        .and_then(|t| AdminToken::new(t.expose()))
        .ok_or(RunError::MissingAdminToken)?;
    let endpoints = endpoints::load(&config.webhooks_file)?;
    let prices = config.prices.load()?;
    let settings = Arc::new(config.settings());
    let pool = persister::db::pool(config.database_url.expose()).map_err(RunError::DatabaseUrl)?;
    let clients = Clients::new()?;
    let clock = Clock::new();

    let service_tasks = TaskTracker::new();
    let stop = switchboard_service::tasks::stop_on(shutdown, &service_tasks);
    let health = Health::new();
    let wake: Arc<HashMap<String, Arc<Notify>>> = Arc::new(
        endpoints
            .iter()
            .map(|e| (e.url.to_string(), Arc::new(Notify::new())))
            .collect(),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let app = health
        .router(telemetry::install_metrics())
        .merge(api::router(api::ApiState {
            pool: pool.clone(),
            token: Arc::new(token),
            wake: wake.clone(),
            clock,
        }));
    let http_stop = CancellationToken::new();
    let http = switchboard_service::tasks::serve(listener, app, http_stop.clone(), &service_tasks);
    tracing::info!(listen = %config.listen, endpoints = endpoints.len(), "notifier starting");

    let result = async {
        if !persister::db::wait_until_reachable(&pool, &stop).await {
            return Ok(());
        }
        store::MIGRATOR.run(&pool).await?;
        let client = config.nats.connect("notifier").await?;
        let js = async_nats::jetstream::new(client.clone());
        let tasks = TaskTracker::new();
        let endpoints = Arc::new(endpoints);
        for endpoint in endpoints.iter() {
            tasks.spawn(dispatch::run_endpoint(
                endpoint.clone(),
                clients.clone(),
                pool.clone(),
                settings.clone(),
                clock,
                wake[endpoint.url.as_str()].clone(),
                stop.clone(),
            ));
        }
        tasks.spawn(sweep(pool.clone(), stop.clone()));
        tasks.spawn(consumer::run(
            js,
            config.nats.subjects(),
            pool.clone(),
            consumer::Targets {
                endpoints,
                wake: wake.clone(),
                prices,
                clock,
            },
            health.clone(),
            stop.clone(),
        ));
        tasks.close();
        stop.cancelled().await;
        health.set_ready(false);
        let drain = Drain::new(Duration::from_secs(config.drain_seconds));
        tracing::info!("draining");
        // Attempts in flight finish within their timeout; one cut off is retried by any
        // replica once its lease runs out.
        drain
            .step(
                "finishing the attempts in flight",
                drain.until_reserve(FINAL_STEPS * 2),
                tasks.wait(),
            )
            .await;
        flush_nats(&drain, &client, FINAL_STEPS).await;
        Ok::<_, RunError>(())
    }
    .await;
    health.set_ready(false);
    stop.cancel();
    service_tasks.close();
    http_stop.cancel();
    let _ = tokio::time::timeout(FINAL_STEPS, http).await;
    if tokio::time::timeout(FINAL_STEPS, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database pool did not close in time");
    }
    result?;
    tracing::info!("notifier stopped");
    Ok(())
}

/// Forgets call events kept longer than [`KEEP_EVENTS`], every [`SWEEP_EVERY`].
async fn sweep(pool: sqlx::PgPool, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = store::sweep_events(&pool, KEEP_EVENTS).await {
            tracing::debug!(%error, "sweeping kept call events failed");
        }
    }
}
