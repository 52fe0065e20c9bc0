//! The dialer: outbound campaigns. A campaign is an agent, a caller ID, a list of contacts
//! (each with variables and a time zone), calls-per-second and concurrency caps, a retry policy
//! per result, calling hours, and a state (running, paused, cancelled, completed). The dialer
//! places each call through Twilio's REST API itself, asking for asynchronous answering-machine
//! detection; the call then runs like any outbound call through the gateway and a call-worker,
//! and its result comes back as call events.
//!
//! Replicas share everything through Postgres: no contact is dialed twice and the caps hold
//! across replicas (see [`store`] and [`pacer`]).
//!
//! - [`outcome`]: an attempt's result and the retry policy;
//! - [`pacer`]: the shared calls-per-second rule (calls claimed ahead, each at its moment),
//!   the per-second window of each replica, and the clock;
//! - [`store`]: campaigns, contacts, attempts, the do-not-call list (`migrations/`);
//! - [`dialing`]: the dial loop that claims due contacts and places each at its moment;
//! - [`place`]: one call through Twilio's REST API (20429s repeated with backoff);
//! - [`results`]: the durable consumer `dialer` that ends attempts from `status` / `amd` events;
//! - [`api`]: `POST /api/campaigns`, `GET /api/campaigns/{id}`, controls, contacts, DNC;
//! - [`csv`]: contacts in and out as CSV;
//! - [`metrics`]: the metric names.
#![forbid(unsafe_code)]

pub mod api;
pub mod csv;
pub mod dialing;
pub mod metrics;
pub mod outcome;
pub mod pacer;
pub mod place;
pub mod results;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::twilio_rest::{RestError, TwilioRest};
use persister::auth::AdminToken;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::redact::Secret;
use switchboard_service::{Health, NatsArgs, telemetry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `dialer` settings (flags with environment fallbacks). `Debug` prints no credential.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dialer",
    version,
    about = "Runs Switchboard's outbound campaigns"
)]
pub struct Config {
    /// HTTP address of the campaigns API, /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8085")]
    pub listen: SocketAddr,
    /// Postgres URL of the dialer's database (migrated at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Bearer token of the campaigns API. Required.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// The gateway's public base URL: Twilio's webhooks and callbacks of campaign calls go there.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: String,
    /// Twilio account SID.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: String,
    /// Twilio auth token (the REST API's password).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Secret,
    /// Base URL of Twilio's REST API (overridable for tests).
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_base: String,
    /// The account's calls per second (Twilio's CPS setting, 1 unless raised): the cap of all
    /// campaigns together, across replicas.
    #[arg(long, env = "TWILIO_CALLS_PER_SECOND", default_value_t = 1.0)]
    pub twilio_calls_per_second: f64,
    /// Seconds the dialer may take to stop after SIGTERM.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Why the dialer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("ADMIN_TOKEN is not set (or empty): the campaigns API needs a bearer token")]
    MissingAdminToken,
    #[error("PUBLIC_URL must be an absolute http(s) URL without a query, got `{0}`")]
    PublicUrl(String),
    #[error("TWILIO_CALLS_PER_SECOND must be a positive number")]
    CallsPerSecond,
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("binding {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("building the Twilio client: {0}")]
    Twilio(#[from] RestError),
    #[error(transparent)]
    Nats(#[from] switchboard_service::nats::ConnectError),
}

/// Kept at the end of the drain for the last steps.
const FINAL_STEPS: Duration = Duration::from_millis(400);

/// Runs until `shutdown` resolves, then drains: no new call is placed, requests in flight to
/// Twilio finish and their answers are stored.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = config
        .admin_token
        .as_ref()
        .and_then(|t| AdminToken::new(t.expose()))
        .ok_or(RunError::MissingAdminToken)?;
    let public_url = config.public_url.trim_end_matches('/').to_owned();
    if !(public_url.starts_with("https://") || public_url.starts_with("http://"))
        || public_url.contains('?')
    {
        return Err(RunError::PublicUrl(config.public_url.clone()));
    }
    let cps = config.twilio_calls_per_second;
    if !(cps.is_finite() && cps > 0.0) {
        return Err(RunError::CallsPerSecond);
    }
    let pool = persister::db::pool(config.database_url.expose()).map_err(RunError::DatabaseUrl)?;
    let rest = TwilioRest::new(
        &config.twilio_api_base,
        &config.twilio_account_sid,
        &config.twilio_auth_token,
    )?;
    let clock = pacer::Clock::new();

    let service_tasks = TaskTracker::new();
    let stop = switchboard_service::tasks::stop_on(shutdown, &service_tasks);
    let health = Health::new();
    let wake = Arc::new(Notify::new());
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
        }));
    let http_stop = CancellationToken::new();
    let http = switchboard_service::tasks::serve(listener, app, http_stop.clone(), &service_tasks);
    tracing::info!(listen = %config.listen, "dialer starting");

    let result = async {
        if !persister::db::wait_until_reachable(&pool, &stop).await {
            return Ok(());
        }
        store::MIGRATOR.run(&pool).await?;
        let client = config.nats.connect("dialer").await?;
        let js = async_nats::jetstream::new(client.clone());
        let tasks = TaskTracker::new();
        let calls = TaskTracker::new();
        tasks.spawn(results::run(
            js,
            config.nats.subjects(),
            pool.clone(),
            clock,
            wake.clone(),
            health.clone(),
            stop.clone(),
        ));
        tasks.spawn(
            dialing::Dialing {
                placer: place::Placer {
                    rest,
                    public_url: public_url.into(),
                    pool: pool.clone(),
                    clock,
                },
                account: config.twilio_account_sid.clone(),
                account_interval: pacer::interval(cps),
                gate: dialing::Gate::new(cps),
                wake: wake.clone(),
            }
            .run(calls.clone(), stop.clone()),
        );
        tasks.close();
        stop.cancelled().await;
        health.set_ready(false);
        let drain = Drain::new(Duration::from_secs(config.drain_seconds));
        tracing::info!("draining");
        calls.close();
        drain
            .step(
                "storing the answers of calls being placed",
                drain.until_reserve(FINAL_STEPS * 2),
                async {
                    calls.wait().await;
                    tasks.wait().await;
                },
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
    tracing::info!("dialer stopped");
    Ok(())
}
