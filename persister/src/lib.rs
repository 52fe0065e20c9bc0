//! The persister: the Postgres record of every call, and the read API over it.
//!
//! Call-workers and gateways publish `CallEvent`s to the JetStream stream `VOICE_EVENTS`; the
//! persister consumes them through one durable consumer shared by all replicas, applies each
//! exactly once in effect, and serves the calls as JSON.
//!
//! - [`writer`]: applying one event in one transaction (the `call_events` dedupe ledger, upserts
//!   that tolerate any arrival order);
//! - [`batch`]: applying a batch of events in one transaction with multi-row statements;
//! - [`consumer`]: the durable pull consumer (pulling overlapped with writing, ack after commit,
//!   nak and back off on database errors, terminate undecodable messages, ride out transient
//!   stream errors) and the lag gauges;
//! - [`spans`]: the `persist.batch` span of a batch and the `persist` span of each call in it,
//!   continuing the call's trace from its event headers;
//! - [`sessions`]: the read model and its queries (`GET /api/sessions[/{call_sid}]`);
//! - [`analytics`]: `GET /api/analytics`, the overview of calls, outcomes, latency, tools and
//!   cost over a date range and agent, in SQL;
//! - [`export`]: `GET /api/sessions.csv`, the filtered calls list as CSV (RFC 4180 quoting,
//!   formulas defused), streamed a page at a time;
//! - [`live`]: `GET /api/live`, call events as Server-Sent Events from a core NATS subscription,
//!   with a bounded buffer per client;
//! - [`api`]: the axum routes and their JSON errors, and a call's recording as `audio/wav`
//!   (`GET /api/sessions/{call_sid}/recording`, read from the recording store `RECORDINGS_URL`);
//! - [`retention`]: deleting recordings older than `RECORDINGS_RETENTION_DAYS`;
//! - [`dashboard`]: the embedded web console (`/sessions`, `/sessions/{call_sid}`) and its
//!   sign-in (`/login`, `/logout`);
//! - [`labels`]: the console's words for the contract's codes (`/assets/labels.js`);
//! - [`console_sessions`]: the console's sign-in sessions (random ids with an expiry in
//!   Postgres, shared by all replicas, revoked on sign-out);
//! - [`web_call`]: test calls from the console: the agents list and the web-call tickets the
//!   gateway's `GET /web-call` accepts;
//! - [`webhook_log`]: the webhook deliveries on the console (a call's, and across calls by
//!   endpoint and state), re-sends and enabling an endpoint, through the notifier's delivery
//!   log (`NOTIFIER_URL`);
//! - [`campaigns`]: the console's outbound campaigns and do-not-call list, passed on to the
//!   dialer's campaigns API (`DIALER_URL`);
//! - [`upstream`]: the base URLs and HTTP client of the services the console reads through;
//! - [`auth`]: the `ADMIN_TOKEN` bearer check (constant time) and who may read;
//! - [`headers`]: the security headers of every response (CSP, nosniff, no referrer, no framing);
//! - [`pricing`]: the per-call cost estimate from token usage (configurable prices);
//! - [`db`]: pool, embedded migrations (`migrations/`), database probe;
//! - [`metrics`]: the names of the persister's metrics;
//! - [`readiness`]: `/readyz` = database reachable, consumer running, not draining.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod api;
pub mod auth;
pub mod batch;
pub mod campaigns;
pub mod console_sessions;
pub mod consumer;
pub mod dashboard;
pub mod db;
pub mod export;
pub mod headers;
pub mod labels;
pub mod live;
pub mod metrics;
pub mod pricing;
pub mod readiness;
pub mod retention;
pub mod sessions;
pub mod spans;
pub mod upstream;
pub mod web_call;
pub mod webhook_log;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::recordings::{RecordingStore, RecordingsArgs};
use switchboard_service::redact::Secret;
use switchboard_service::{Health, NatsArgs, telemetry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, AdminToken};
use crate::console_sessions::ConsoleSessions;
use crate::readiness::Readiness;

/// `persister` settings (flags with environment fallbacks). `Debug` prints no credential.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "persister",
    version,
    about = "Persists Switchboard call events to Postgres and serves the read API"
)]
pub struct Config {
    /// HTTP address of the API, /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8083")]
    pub listen: SocketAddr,
    /// Postgres URL of the persister's database (migrated at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Bearer token required by the read API. Required: the service refuses to start without it.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// The console's public base URL, e.g. `https://console.example.com`. When it is https, the
    /// session cookie is marked `Secure`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a console sign-in lasts, in seconds.
    #[arg(long, env = "SESSION_TTL_SECONDS", default_value_t = console_sessions::DEFAULT_TTL.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_seconds: u64,
    /// The price table of the per-call cost estimate.
    #[command(flatten)]
    pub prices: pricing::PriceArgs,
    /// Events a live (`/api/live`) client may fall behind before it is disconnected.
    #[arg(long, env = "LIVE_CLIENT_BUFFER", default_value_t = live::DEFAULT_CLIENT_BUFFER)]
    pub live_client_buffer: usize,
    /// Seconds the persister may take to stop after SIGTERM: the batch being written gets until
    /// then, and the process exits by then whatever NATS and Postgres are doing.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: u64,
    /// Test calls from the console (`WEB_CALL_URL`, `WEB_CALL_SECRET`, `AGENTS_FILE`).
    #[command(flatten)]
    pub web_call: web_call::WebCallArgs,
    /// The notifier's delivery log, shown per call in the console (`NOTIFIER_URL`).
    #[command(flatten)]
    pub webhook_log: webhook_log::WebhookLogArgs,
    /// The dialer's campaigns API, behind the console's Campaigns page (`DIALER_URL`).
    #[command(flatten)]
    pub dialer: campaigns::DialerArgs,
    /// The recording store (`RECORDINGS_URL`), whose recordings the API serves.
    #[command(flatten)]
    pub recordings: RecordingsArgs,
    /// Days a recording is kept; older ones are deleted (0 keeps them forever).
    #[arg(long, env = "RECORDINGS_RETENTION_DAYS", default_value_t = 90)]
    pub recordings_retention_days: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl Config {
    /// Whether the console is served over https, by `PUBLIC_URL`; an unusable URL is an error.
    fn serves_https(&self) -> Result<bool, RunError> {
        let Some(url) = self.public_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(false);
        };
        let bad = || RunError::PublicUrl(url.to_owned());
        let uri: axum::http::Uri = url.parse().map_err(|_| bad())?;
        if uri.authority().is_none() {
            return Err(bad());
        }
        match uri.scheme_str() {
            Some("https") => Ok(true),
            Some("http") => Ok(false),
            _ => Err(bad()),
        }
    }
}

/// Why the persister stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "ADMIN_TOKEN is not set (or empty): the read API needs a bearer token; \
         set ADMIN_TOKEN (or --admin-token)"
    )]
    MissingAdminToken,
    #[error("PUBLIC_URL must be an http:// or https:// base URL, got {0:?}")]
    PublicUrl(String),
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    DatabaseUrl(sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("binding {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Nats(#[from] switchboard_service::nats::ConnectError),
    #[error(transparent)]
    Prices(#[from] pricing::PricesError),
    #[error(transparent)]
    WebCall(#[from] web_call::WebCallConfigError),
    #[error(transparent)]
    WebhookLog(#[from] webhook_log::WebhookLogConfigError),
    #[error(transparent)]
    Dialer(#[from] campaigns::DialerConfigError),
    #[error(transparent)]
    Recordings(#[from] switchboard_service::recordings::StoreError),
}

/// Runs until `shutdown` resolves, then drains: readiness drops, the consumer finishes the event
/// it is writing, the HTTP server finishes its requests, and the pool closes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let admin_token = config
        .admin_token
        .as_ref()
        .filter(|t| !t.expose().is_empty())
        .ok_or(RunError::MissingAdminToken)?;
    let token = AdminToken::new(admin_token.expose()).ok_or(RunError::MissingAdminToken)?;
    let webhook_log = webhook_log::WebhookLog::new(&config.webhook_log, admin_token)?;
    let dialer = campaigns::Dialer::new(&config.dialer, admin_token)?;
    let secure_cookies = config.serves_https()?;
    let prices = config.prices.load()?;
    let web_calls = Arc::new(web_call::WebCalls::new(&config.web_call)?);
    let csp = headers::policy(web_calls.socket_origin());
    let pool = db::pool(config.database_url.expose()).map_err(RunError::DatabaseUrl)?;
    let recordings = RecordingStore::open(&config.recordings.recordings_url)?;

    let service_tasks = TaskTracker::new();
    let stop = switchboard_service::tasks::stop_on(shutdown, &service_tasks);

    let live = live::Live::new(config.live_client_buffer);
    let health = Health::new();
    let readiness = Readiness::new(health.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let access = Access {
        sessions: ConsoleSessions::new(
            pool.clone(),
            &token,
            Duration::from_secs(config.session_ttl_seconds),
            secure_cookies,
        ),
        token: Arc::new(token),
    };
    let app = health
        .router(telemetry::install_metrics())
        .merge(api::router(api::ApiState {
            pool: pool.clone(),
            access: access.clone(),
            live: live.clone(),
            prices: Arc::new(prices.clone()),
            web_calls,
            recordings: recordings.clone(),
        }))
        .merge(webhook_log::router(access.clone(), webhook_log))
        .merge(campaigns::router(access.clone(), dialer))
        .merge(dashboard::router(access))
        .layer(axum::middleware::map_response_with_state(
            csp,
            headers::secure,
        ));
    let http_stop = CancellationToken::new();
    let http = switchboard_service::tasks::serve(listener, app, http_stop.clone(), &service_tasks);
    tracing::info!(listen = %config.listen, "persister starting");

    let retention = (config.recordings_retention_days > 0)
        .then(|| Duration::from_secs(config.recordings_retention_days * 24 * 60 * 60));
    let sweeper = service_tasks.spawn(retention::run(
        recordings,
        pool.clone(),
        retention,
        stop.clone(),
    ));
    let result = consume(&config, &prices, &pool, &readiness, &live, &stop).await;
    readiness.set_draining();
    stop.cancel();
    service_tasks.close();
    live.close();
    http_stop.cancel();
    if tokio::time::timeout(FINAL_STEPS, sweeper).await.is_err() {
        tracing::warn!("recording retention sweep did not stop in time");
    }
    let http_result = match tokio::time::timeout(FINAL_STEPS, http).await {
        Ok(joined) => joined,
        // A live-view client still connected; the process is leaving anyway.
        Err(_) => Ok(Ok(())),
    };
    if tokio::time::timeout(FINAL_STEPS, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database pool did not close in time");
    }
    result?;
    tracing::info!("persister stopped");
    match http_result {
        Ok(r) => r.map_err(RunError::Http),
        Err(join) => Err(RunError::Http(std::io::Error::other(join))),
    }
}

/// Migrates, then consumes until `stop`.
async fn consume(
    config: &Config,
    prices: &pricing::Prices,
    pool: &sqlx::PgPool,
    readiness: &Readiness,
    live: &live::Live,
    stop: &CancellationToken,
) -> Result<(), RunError> {
    if !db::wait_until_reachable(pool, stop).await {
        return Ok(());
    }
    db::MIGRATOR.run(pool).await?;
    readiness.set_database(true);
    tracing::info!("database migrated");

    let client = config.nats.connect("persister").await?;
    let js = async_nats::jetstream::new(client.clone());
    let tasks = TaskTracker::new();
    tasks.spawn(live::run(
        client.clone(),
        config.nats.subjects(),
        live.clone(),
        prices.clone(),
        stop.clone(),
    ));
    tasks.spawn(db::probe(pool.clone(), readiness.clone(), stop.clone()));
    tasks.spawn(consumer::poll_lag(js.clone(), stop.clone()));
    tasks.spawn(consumer::run(
        js,
        config.nats.subjects(),
        pool.clone(),
        readiness.clone(),
        prices.clone(),
        stop.clone(),
    ));
    tasks.close();

    stop.cancelled().await;
    let drain = Drain::new(Duration::from_secs(config.drain_seconds));
    readiness.set_draining();
    tracing::info!("draining");
    // A batch being written is committed or rolled back within the drain; events not acked
    // are redelivered to another replica (or to this one after a restart), so nothing is lost
    // when the database or NATS hangs past the deadline.
    drain
        .step(
            "finishing the current batch",
            drain.until_reserve(FINAL_STEPS * 2),
            tasks.wait(),
        )
        .await;
    // Acks are publishes; make sure the last ones left before the connection goes.
    flush_nats(&drain, &client, FINAL_STEPS).await;
    Ok(())
}

/// Kept at the end of the drain for each of the last steps (NATS flush, HTTP server, pool).
const FINAL_STEPS: Duration = Duration::from_millis(400);
