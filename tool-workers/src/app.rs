//! The `tool-worker` service: the example tools served with the SDK, plus health and metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use switchboard_service::backoff::Backoff;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::redact::Secret;
use switchboard_service::{Health, NatsArgs, telemetry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::{ServeError, ToolServer};
use crate::tool::ToolDefinitionError;
use crate::{appointments, customers};

/// The tools database schema (`migrations/`), embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The role the migrations grant the example tools' privileges to: what the tool-worker
/// connects as on Kubernetes (k8s/base/postgres.yaml creates it).
pub const RUNTIME_ROLE: &str = "switchboard_tool_worker";

/// Who applies the tools database migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Migrate {
    /// Apply them at start, then serve (one database role for everything: development).
    AtStart,
    /// Apply them and exit: a Kubernetes init container connecting as the database owner.
    Only,
    /// Serve a database someone else migrated, only checking every migration is applied: the
    /// runtime role has no right to create tables.
    Skip,
}

/// `tool-worker` settings (flags with environment fallbacks). `Debug` prints no credential.
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
    /// Postgres URL of the tools database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Who applies the tools database migrations: `at-start`, `only` (apply and exit) or
    /// `skip` (check they are applied).
    #[arg(long, env = "MIGRATE", value_enum, default_value_t = Migrate::AtStart)]
    pub migrate: Migrate,
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
    #[error(
        "the tools database lacks migrations {missing:?}; apply them as the database owner \
         (tool-worker --migrate only) before starting with --migrate skip"
    )]
    NotMigrated { missing: Vec<i64> },
    #[error("reading the applied migrations: {0}")]
    MigrationCheck(sqlx::Error),
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
    let service_tasks = TaskTracker::new();
    let stop = switchboard_service::tasks::stop_on(shutdown, &service_tasks);
    if config.migrate == Migrate::Only {
        return migrate_only(&config, &stop).await;
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
    let http = switchboard_service::tasks::serve(listener, app, http_stop.clone(), &service_tasks);
    tracing::info!(listen = %config.listen, "tool-worker starting");

    let result = serve(&config, &health, &stop).await;
    health.set_ready(false);
    // Ends the signal's watcher too, whoever stopped the serving.
    stop.cancel();
    service_tasks.close();
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

/// `--migrate only`: applies the migrations and returns.
async fn migrate_only(config: &Config, stop: &CancellationToken) -> Result<(), RunError> {
    let Some(pool) = connect_database(config.database_url.expose(), stop).await? else {
        return Ok(());
    };
    let result = tokio::select! {
        r = MIGRATOR.run(&pool) => r.map_err(RunError::from),
        () = stop.cancelled() => Ok(()),
    };
    pool.close().await;
    if result.is_ok() {
        tracing::info!("tools database migrated");
    }
    result
}

/// Postgres' SQLSTATE for a table that does not exist.
const UNDEFINED_TABLE: &str = "42P01";

/// `--migrate skip`: every migration this build knows must be applied already.
async fn check_migrated(pool: &PgPool) -> Result<(), RunError> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            // No migration table: nothing was ever applied.
            Err(error)
                if error
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|code| code == UNDEFINED_TABLE) =>
            {
                Vec::new()
            }
            Err(error) => return Err(RunError::MigrationCheck(error)),
        };
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RunError::NotMigrated { missing })
    }
}

async fn serve(config: &Config, health: &Health, stop: &CancellationToken) -> Result<(), RunError> {
    let Some(pool) = connect_database(config.database_url.expose(), stop).await? else {
        return Ok(());
    };
    // Each step may wait on a server that is not up yet; a shutdown meanwhile just stops.
    let startup = async {
        match config.migrate {
            Migrate::AtStart | Migrate::Only => MIGRATOR.run(&pool).await?,
            Migrate::Skip => check_migrated(&pool).await?,
        }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn debug_output_holds_no_credential() {
        let config = Config::try_parse_from([
            "tool-worker",
            "--database-url",
            "postgres://switchboard_tool_worker:t00l-pa55@db/switchboard_tools",
            "--nats-password",
            "nats-pa55",
            "--migrate",
            "skip",
        ])
        .unwrap();
        assert_eq!(config.migrate, Migrate::Skip);
        assert!(config.database_url.expose().contains("t00l-pa55"));
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("t00l-pa55"), "{printed}");
        assert!(!printed.contains("nats-pa55"), "{printed}");
        assert!(printed.contains("Skip"), "{printed}");
    }
}
