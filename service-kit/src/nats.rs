//! The NATS connection settings of the contract: `NATS_URL`, `NATS_CREDS`, `NATS_USER` +
//! `NATS_PASSWORD`, `NATS_SUBJECT_PREFIX`.

use std::time::Duration;

use switchboard_proto::subject::Subjects;

/// NATS settings, flattened into each binary's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated: the client connects to one of them, learns the
    /// rest of the cluster from it, and reconnects to another when its server goes away.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// A NATS credentials file.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// NATS user (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (never printed by `Debug`).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<crate::redact::Secret>,
    /// Prefix of every subject.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "voice")]
    pub nats_subject_prefix: String,
    /// Copies the cluster keeps of every stream and KV bucket (1 to 5; 3 on a 3-node cluster).
    /// Existing streams and buckets are updated to it in place.
    #[arg(long, env = crate::storage::REPLICAS_ENV, default_value_t = 1,
          value_parser = |v: &str| crate::storage::parse_replicas(v))]
    pub nats_replicas: usize,
}

/// Why the NATS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
}

impl NatsArgs {
    /// Settings for a server at `url` with the default prefix (tests, tools).
    pub fn for_url(url: &str) -> Self {
        Self {
            nats_url: url.to_owned(),
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_subject_prefix: switchboard_proto::subject::DEFAULT_PREFIX.to_owned(),
            nats_replicas: 1,
        }
    }

    /// The subject builder for the configured prefix.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.nats_subject_prefix.clone())
    }

    /// Connects as `name` (shown in the server's connection list). Retries while the server is
    /// down at start, so pods may start in any order.
    ///
    /// The first word of `name` is the service's role (`gateway`, `call-worker`, ...): replies to
    /// its requests arrive under that role's own inbox prefix
    /// ([`switchboard_proto::permissions::inbox_prefix`]), the only part of `_INBOX` its NATS
    /// user may subscribe to.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        // Audio frames are small, but a stalled task must not buffer minutes of them.
        self.connect_with_capacity(name, 8 * 1024).await
    }

    /// [`Self::connect`] with another bound on the messages each subscription buffers (client
    /// wide in async-nats): when a subscriber falls that far behind, new messages for it are
    /// dropped and counted in `nats_slow_consumer_total`.
    pub async fn connect_with_capacity(
        &self,
        name: &str,
        subscription_capacity: usize,
    ) -> Result<async_nats::Client, ConnectError> {
        crate::storage::set_replicas(self.nats_replicas);
        let role = name.split_whitespace().next().unwrap_or(name);
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .custom_inbox_prefix(switchboard_proto::permissions::inbox_prefix(role))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(subscription_capacity)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    async_nats::Event::SlowConsumer(sid) => {
                        metrics::counter!(metric::SLOW_CONSUMER).increment(1);
                        tracing::warn!(sid, "nats slow consumer: messages dropped")
                    }
                    // A permissions violation or another refusal: the operation it belongs to
                    // fails or times out, and this line says why.
                    async_nats::Event::ServerError(error) => {
                        metrics::counter!(metric::SERVER_ERRORS).increment(1);
                        tracing::error!(%error, "nats server refused an operation")
                    }
                    other => tracing::info!(event = %other, "nats event"),
                }
            });
        if let Some(path) = &self.nats_creds {
            opts =
                opts.credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::Credentials {
                        path: path.display().to_string(),
                        source,
                    })?;
        }
        if let (Some(user), Some(pass)) = (&self.nats_user, &self.nats_password) {
            opts = opts.user_and_password(user.clone(), pass.expose().to_owned());
        }
        let urls: Vec<&str> = self.nats_url.split(',').map(str::trim).collect();
        opts.connect(urls.as_slice())
            .await
            .map_err(|source| ConnectError::Connect {
                url: self.nats_url.clone(),
                source,
            })
    }
}

/// The NATS connection's metric names.
pub mod metric {
    /// Counter: subscriptions whose client buffer overflowed (messages dropped).
    pub const SLOW_CONSUMER: &str = "nats_slow_consumer_total";
    /// Counter: operations the server refused (permissions violations among them).
    pub const SERVER_ERRORS: &str = "nats_server_errors_total";
}
