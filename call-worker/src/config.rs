//! The worker's settings: flags with environment fallbacks (ARCHITECTURE.md section 5).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_service::redact::Secret;

use switchboard_realtime::{DEFAULT_MODEL, DEFAULT_URL};
use switchboard_service::NatsArgs;

use crate::realtime::RealtimeSettings;

/// call-worker settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "call-worker",
    version,
    about = "Switchboard call-worker: one actor per call, owning its OpenAI Realtime session"
)]
pub struct Config {
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// OpenAI API key; omit it to send no Authorization header (the simulator).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,
    /// Realtime endpoint (`?model=` is appended).
    #[arg(long, env = "REALTIME_URL", default_value = DEFAULT_URL)]
    pub realtime_url: String,
    /// Realtime model id.
    #[arg(long, env = "REALTIME_MODEL", default_value = DEFAULT_MODEL)]
    pub realtime_model: String,
    /// The agents file (TOML, `[[agent]]` tables).
    #[arg(long, env = "AGENTS_FILE", default_value = "agents.toml")]
    pub agents_file: PathBuf,
    /// How often the agents file is checked for changes, in milliseconds (SIGHUP reloads at
    /// once too).
    #[arg(long, env = "AGENTS_RELOAD_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub agents_reload_ms: u64,
    /// Calls this worker takes at once (a hard cap).
    #[arg(long, env = "MAX_CALLS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_calls: u32,
    /// This worker's id in offers, heartbeats and events (default: HOSTNAME, else random).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Default deadline of a business tool call, in milliseconds (a ToolSpec may set its own).
    #[arg(long, env = "TOOL_TIMEOUT_MS", default_value_t = 8000)]
    pub tool_timeout_ms: u64,
    /// On SIGTERM, how long running calls may continue before they are ended.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 300)]
    pub drain_seconds: u64,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl Config {
    /// Defaults for a NATS server at `nats_url` and an agents file (tests, embedding).
    pub fn new(nats_url: &str, agents_file: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            openai_api_key: None,
            realtime_url: DEFAULT_URL.to_owned(),
            realtime_model: DEFAULT_MODEL.to_owned(),
            agents_file: agents_file.into(),
            agents_reload_ms: 2000,
            max_calls: 100,
            worker_id: None,
            tool_timeout_ms: 8000,
            drain_seconds: 300,
            nats: NatsArgs::for_url(nats_url),
        }
    }

    /// The worker id: `WORKER_ID`, else the host name, else a random one.
    pub fn worker_id(&self) -> String {
        if let Some(id) = self.worker_id.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        if let Ok(host) = std::env::var("HOSTNAME")
            && !host.is_empty()
        {
            return host;
        }
        if let Ok(host) = std::fs::read_to_string("/etc/hostname")
            && !host.trim().is_empty()
        {
            return host.trim().to_owned();
        }
        format!(
            "call-worker-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    /// The Realtime connection settings (an empty key counts as none).
    pub fn realtime(&self) -> RealtimeSettings {
        RealtimeSettings {
            url: self.realtime_url.clone(),
            model: self.realtime_model.clone(),
            api_key: self
                .openai_api_key
                .clone()
                .filter(|k| !k.expose().trim().is_empty()),
        }
    }

    /// The default business-tool deadline.
    pub fn tool_timeout(&self) -> Duration {
        Duration::from_millis(self.tool_timeout_ms)
    }

    /// How often the agents file is checked for changes.
    pub fn agents_reload(&self) -> Duration {
        Duration::from_millis(self.agents_reload_ms)
    }

    /// The drain period.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_parse_with_defaults() {
        let c = Config::try_parse_from([
            "call-worker",
            "--agents-file",
            "a.toml",
            "--nats-url",
            "nats://x:4222",
            "--worker-id",
            "w1",
            "--openai-api-key",
            "",
        ])
        .unwrap();
        assert_eq!(c.realtime_model, "gpt-realtime");
        assert_eq!(c.realtime_url, "wss://api.openai.com/v1/realtime");
        assert_eq!(c.tool_timeout(), Duration::from_millis(8000));
        assert_eq!(c.worker_id(), "w1");
        assert_eq!(c.agents_reload(), Duration::from_secs(2));
        assert_eq!(c.realtime().api_key, None);
        assert!(Config::try_parse_from(["call-worker", "--max-calls", "0"]).is_err());
    }
}
