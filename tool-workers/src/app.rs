//! The `tool-worker` service: the example tools served with the SDK, plus health and metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use switchboard_service::backoff::Backoff;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::{Health, NatsArgs, telemetry};
use tokio_util::sync::CancellationToken;

use crate::server::{ServeError, ToolServer};
use crate::tool::ToolDefinitionError;
use crate::{appointments, customers};

/// `tool-worker` settings (flags with environment fallbacks).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tool-worker",
    version,
    about = "Serves Switchboard's example tools over NATS"
)]
pub struct Config {
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,
    /// Postgres URL of the tools database (migrated at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Seconds the service may take to stop after SIGTERM: requests in flight get until then,
    /// and the process exits by then whatever NATS and Postgres are doing.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    DatabaseUrl(sqlx::Error),
    #[error("migrating the tools database: {0}")]
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
    #[error("declaring tools: {0}")]
    Tool(#[from] ToolDefinitionError),
    #[error("serving tools: {0}")]
    Serve(#[from] ServeError),
}

/// Runs the service until `shutdown` resolves, then drains: readiness turns false, the tool
/// subscriptions are drained (requests in flight are answered), and the process may exit.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }

    let health = Health::new();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let app = health.router::<()>(telemetry::install_metrics());
    let http_stop = CancellationToken::new();
    let http = {
        let http_stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await
        })
    };
    tracing::info!(listen = %config.listen, "tool-worker starting");

    let result = serve(&config, &health, &stop).await;
    health.set_ready(false);
    http_stop.cancel();
    // The HTTP server only serves probes; it stops at once, or is left behind.
    let http_result = match tokio::time::timeout(Duration::from_secs(1), http).await {
        Ok(joined) => joined,
        Err(_) => Ok(Ok(())),
    };
    result?;
    match http_result {
        Ok(r) => r.map_err(RunError::Http),
        Err(join) => Err(RunError::Http(std::io::Error::other(join))),
    }
}

async fn serve(config: &Config, health: &Health, stop: &CancellationToken) -> Result<(), RunError> {
    let Some(pool) = connect_database(&config.database_url, stop).await? else {
        return Ok(());
    };
    // Each step may wait on a server that is not up yet; a shutdown meanwhile just stops.
    let startup = async {
        sqlx::migrate!("./migrations").run(&pool).await?;
        let client = config.nats.connect("tool-worker").await?;
        let serving = ToolServer::new()
            .tool(customers::lookup_customer(pool.clone())?)
            .tool(appointments::check_availability(pool.clone())?)
            .tool(appointments::book_appointment(pool.clone())?)
            .start(client.clone(), &config.nats.subjects(), stop.clone())
            .await?;
        Ok::<_, RunError>((client, serving))
    };
    let (client, serving) = tokio::select! {
        started = startup => started?,
        () = stop.cancelled() => {
            pool.close().await;
            return Ok(());
        }
    };
    health.set_ready(true);
    tracing::info!("tool-worker ready");

    stop.cancelled().await;
    let drain = Drain::new(Duration::from_secs(config.drain_seconds));
    health.set_ready(false);
    tracing::info!("draining tool requests");
    let final_steps = Duration::from_millis(500);
    drain
        .step(
            "answering requests in flight",
            drain.until_reserve(final_steps),
            serving.wait(),
        )
        .await;
    flush_nats(&drain, &client, final_steps / 2).await;
    drain
        .step("closing the database pool", final_steps / 2, pool.close())
        .await;
    tracing::info!("tool-worker stopped");
    Ok(())
}

/// Connects to Postgres, retrying with backoff while it is unreachable (pods start in any
/// order). A malformed URL fails at once. `None` if shutdown came first.
async fn connect_database(url: &str, stop: &CancellationToken) -> Result<Option<PgPool>, RunError> {
    let options = PgConnectOptions::from_str(url).map_err(RunError::DatabaseUrl)?;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone());
        let error = tokio::select! {
            r = attempt => match r {
                Ok(pool) => return Ok(Some(pool)),
                Err(error) => error,
            },
            () = stop.cancelled() => return Ok(None),
        };
        let delay = backoff.next_delay();
        tracing::warn!(%error, ?delay, "connecting to the tools database failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Ok(None),
        }
    }
}
