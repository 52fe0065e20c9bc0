//! The gateway's settings: flags with environment fallbacks (ARCHITECTURE.md section 5).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_service::NatsArgs;
use switchboard_service::recordings::RecordingsArgs;
use switchboard_service::redact::Secret;

use crate::allowlist::{Allowlist, InvalidEntry};

/// What the caller hears when no worker takes the call.
pub const DEFAULT_BUSY_MESSAGE: &str =
    "Sorry, all of our agents are busy right now. Please call again later.";

/// Gateway configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", version, about = "Switchboard's Twilio gateway")]
pub struct Config {
    /// HTTP listen address (webhooks, media WebSockets, health, metrics).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The public base URL Twilio uses to reach this service, e.g. `https://agent.example.com`.
    /// Signatures are checked against it (never against the Host header) and the media stream
    /// URL in the TwiML is derived from it.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: String,

    /// Twilio account SID (REST call control).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: String,

    /// Twilio auth token: key of `X-Twilio-Signature` and of the per-call stream tokens.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Secret,

    /// Base URL of Twilio's REST API (overridable for tests).
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_base: String,

    /// Bearer token of `POST /calls` (placing calls costs money, so it is not the read-only
    /// `ADMIN_TOKEN` of the dashboard). Unset or empty: the route refuses everyone.
    #[arg(long, env = "CALLS_TOKEN", hide_env_values = true)]
    pub calls_token: Option<Secret>,

    /// Destinations `POST /calls` may dial: comma-separated E.164 numbers (`+15550002222`) or
    /// prefixes ending in `*` (`+1555*`). Unset or empty: every destination is refused.
    #[arg(long, env = "CALLS_ALLOWED_TO", default_value = "")]
    pub calls_allowed_to: String,

    /// Outbound calls `POST /calls` places per minute on this instance (a token bucket that
    /// holds a minute's worth, so a burst of this many is allowed).
    #[arg(long, env = "CALLS_PER_MINUTE", default_value_t = 10)]
    pub calls_per_minute: u32,

    /// The agents file (ARCHITECTURE.md section 6). The gateway reads it for what it enforces
    /// itself: where a worker may transfer a call (each agent's `transfer_to`, and those of the
    /// agents it may hand off to). Unset: every transfer is refused.
    #[arg(long, env = "AGENTS_FILE")]
    pub agents_file: Option<PathBuf>,

    /// This instance's id in offers, stream starts and logs (default: `HOSTNAME`, else random).
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// How long a call offer waits for a worker's answer.
    #[arg(long, env = "OFFER_TIMEOUT_MS", default_value_t = 3000)]
    pub offer_timeout_ms: u64,

    /// What callers hear when no worker takes their call.
    #[arg(long, env = "BUSY_MESSAGE", default_value = DEFAULT_BUSY_MESSAGE)]
    pub busy_message: String,

    /// On shutdown, how long open media streams may continue before they are closed.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 600)]
    pub drain_seconds: u64,

    /// How long the stream token in the TwiML stays valid (Twilio connects within seconds).
    #[arg(long, env = "STREAM_TOKEN_TTL_SECONDS", default_value_t = 300)]
    pub stream_token_ttl_seconds: u64,

    /// Media streams this instance holds at once; further upgrades get 503.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 2000)]
    pub max_streams: usize,

    /// How long a new media socket may take to send `start`.
    #[arg(long, env = "START_TIMEOUT_SECONDS", default_value_t = 10)]
    pub start_timeout_seconds: u64,

    /// A call whose owning worker sends nothing (not even a heartbeat, every 250 ms) and does
    /// not answer the owner probe for this long is lost: it is offered to another worker.
    #[arg(long, env = "WORKER_SILENCE_MS", default_value_t = 1500)]
    pub worker_silence_ms: u64,

    /// How long a lost call is offered to other workers before the caller hears the agent's
    /// apology and the call is transferred or hung up (end reason `worker_lost`).
    #[arg(long, env = "TAKEOVER_TIMEOUT_MS", default_value_t = 5000)]
    pub takeover_timeout_ms: u64,

    /// The admin token (the console's `ADMIN_TOKEN`). The gateway uses it for one thing only:
    /// as a bearer token it opens a web call (`GET /web-call`). Unset: only tickets do.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Key of the web-call tickets the persister issues to signed-in console users (the same
    /// value on both). Unset: tickets are refused.
    #[arg(long, env = "WEB_CALL_SECRET", hide_env_values = true)]
    pub web_call_secret: Option<Secret>,

    /// The console's public URL when it is served from another origin than `PUBLIC_URL`: web
    /// calls are accepted from pages of either origin, and refused from any other.
    #[arg(long, env = "CONSOLE_URL")]
    pub console_url: Option<String>,

    /// Web calls this instance holds at once (they count against `MAX_STREAMS` too).
    #[arg(long, env = "WEB_CALLS_MAX", default_value_t = 20)]
    pub web_calls_max: usize,

    /// Web calls one console user (or the admin token) may hold at once on this instance.
    #[arg(long, env = "WEB_CALLS_PER_USER", default_value_t = 2)]
    pub web_calls_per_user: usize,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub recordings: RecordingsArgs,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("PUBLIC_URL must be an absolute http(s) URL without a query, got `{0}`")]
    PublicUrl(String),
    #[error("TWILIO_AUTH_TOKEN must not be empty")]
    EmptyAuthToken,
    #[error("MAX_STREAMS must be at least 1")]
    NoStreams,
    #[error("CALLS_PER_MINUTE must be at least 1")]
    NoCallsPerMinute,
    #[error("CONSOLE_URL must be an absolute http(s) URL, got `{0}`")]
    ConsoleUrl(String),
    #[error("CALLS_ALLOWED_TO: {0}")]
    CallsAllowedTo(#[from] InvalidEntry),
}

impl Config {
    /// Rejects settings the gateway cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.public_url.trim();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !scheme_ok || host.is_empty() || host.starts_with('/') || url.contains(['?', '#']) {
            return Err(ConfigError::PublicUrl(self.public_url.clone()));
        }
        if self.twilio_auth_token.is_empty() {
            return Err(ConfigError::EmptyAuthToken);
        }
        if self.max_streams == 0 {
            return Err(ConfigError::NoStreams);
        }
        if self.calls_per_minute == 0 {
            return Err(ConfigError::NoCallsPerMinute);
        }
        self.calls_allowlist()?;
        if let Some(url) = &self.console_url
            && origin_of(url).is_none()
        {
            return Err(ConfigError::ConsoleUrl(url.clone()));
        }
        Ok(())
    }

    /// The origins web calls are accepted from: `PUBLIC_URL`'s, and `CONSOLE_URL`'s if set.
    pub fn web_call_origins(&self) -> Vec<String> {
        std::iter::once(&self.public_url)
            .chain(self.console_url.as_ref())
            .filter_map(|url| origin_of(url))
            .collect()
    }

    /// `ADMIN_TOKEN`, unless unset or empty.
    pub fn admin_token(&self) -> Option<Secret> {
        self.admin_token.clone().filter(|t| !t.is_empty())
    }

    /// `CALLS_ALLOWED_TO`, parsed.
    pub fn calls_allowlist(&self) -> Result<Allowlist, InvalidEntry> {
        Allowlist::parse(&self.calls_allowed_to)
    }

    /// `CALLS_TOKEN`, unless unset or empty.
    pub fn calls_token(&self) -> Option<Secret> {
        self.calls_token.clone().filter(|t| !t.is_empty())
    }

    /// `GATEWAY_ID`, else the host name (the pod name on Kubernetes), else a random id.
    pub fn resolved_gateway_id(&self) -> String {
        self.gateway_id
            .clone()
            .filter(|id| !id.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("gateway-{}", uuid::Uuid::new_v4().simple()))
    }

    /// `OFFER_TIMEOUT_MS` as a duration.
    pub fn offer_timeout(&self) -> Duration {
        Duration::from_millis(self.offer_timeout_ms)
    }

    /// `DRAIN_SECONDS` as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// `START_TIMEOUT_SECONDS` as a duration.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_seconds)
    }

    /// `WORKER_SILENCE_MS` as a duration.
    pub fn worker_silence(&self) -> Duration {
        Duration::from_millis(self.worker_silence_ms)
    }

    /// `TAKEOVER_TIMEOUT_MS` as a duration.
    pub fn takeover_timeout(&self) -> Duration {
        Duration::from_millis(self.takeover_timeout_ms)
    }
}

/// The origin (`scheme://host[:port]`, lower case) of an absolute http(s) URL, as browsers send
/// it in `Origin`.
pub fn origin_of(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_owned(),
        _ => host,
    };
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Config {
        parse_with_url("https://gw.example.com", extra)
    }

    fn parse_with_url(public_url: &str, extra: &[&str]) -> Config {
        let mut args = vec![
            "gateway",
            "--public-url",
            public_url,
            "--twilio-account-sid",
            "AC1",
            "--twilio-auth-token",
            "twilio-s3cret",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse(&[]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.twilio_api_base, "https://api.twilio.com");
        assert_eq!(c.offer_timeout(), Duration::from_secs(3));
        assert_eq!(c.busy_message, DEFAULT_BUSY_MESSAGE);
        assert_eq!(c.drain(), Duration::from_secs(600));
        assert_eq!(c.stream_token_ttl_seconds, 300);
        assert_eq!(c.max_streams, 2000);
        assert_eq!(c.start_timeout(), Duration::from_secs(10));
        assert_eq!(c.worker_silence(), Duration::from_millis(1500));
        assert_eq!(c.takeover_timeout(), Duration::from_secs(5));
        assert_eq!(c.nats.nats_subject_prefix, "voice");
        assert_eq!(c.calls_per_minute, 10);
        assert!(c.calls_token().is_none());
        assert!(c.agents_file.is_none());
        assert!(c.calls_allowlist().unwrap().is_empty());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = parse(&[
            "--calls-token",
            "calls-s3cret",
            "--nats-password",
            "nats-s3cret",
            "--admin-token",
            "admin-s3cret",
            "--web-call-secret",
            "web-s3cret",
        ]);
        let printed = format!("{c:?}");
        for secret in [
            "twilio-s3cret",
            "calls-s3cret",
            "admin-s3cret",
            "web-s3cret",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert_eq!(c.calls_token().unwrap().expose(), "calls-s3cret");
        assert_eq!(c.twilio_auth_token.expose(), "twilio-s3cret");
    }

    #[test]
    fn calls_settings_are_checked() {
        assert!(parse(&["--calls-per-minute", "0"]).validate().is_err());
        assert!(
            parse(&["--calls-allowed-to", "+1555*,5550001"])
                .validate()
                .is_err()
        );
        let c = parse(&["--calls-allowed-to", " +1555* , +442071838750 "]);
        assert!(c.validate().is_ok());
        let list = c.calls_allowlist().unwrap();
        assert!(list.allows("+15550002222"));
        assert!(list.allows("+442071838750"));
        assert!(!list.allows("+442071838751"));
        assert!(parse(&["--calls-token", ""]).calls_token().is_none());
    }

    #[test]
    fn web_calls_come_from_the_public_and_console_origins() {
        let c = parse(&[]);
        assert_eq!(c.web_call_origins(), ["https://gw.example.com"]);
        assert_eq!(c.web_calls_max, 20);
        assert_eq!(c.web_calls_per_user, 2);
        assert!(c.admin_token().is_none());
        let c = parse(&["--console-url", "HTTP://Console.example.com:80/sessions"]);
        assert!(c.validate().is_ok());
        assert_eq!(
            c.web_call_origins(),
            ["https://gw.example.com", "http://console.example.com"]
        );
        assert!(parse(&["--console-url", "console"]).validate().is_err());
        assert_eq!(
            origin_of("https://a.example:8443/x?y"),
            Some("https://a.example:8443".into())
        );
        assert_eq!(origin_of("ftp://a.example"), None);
        assert_eq!(origin_of("https://user@a.example"), None);
    }

    #[test]
    fn gateway_id_prefers_the_flag() {
        assert_eq!(
            parse(&["--gateway-id", "gw-7"]).resolved_gateway_id(),
            "gw-7"
        );
        assert!(!parse(&[]).resolved_gateway_id().is_empty());
    }

    #[test]
    fn rejects_unusable_public_urls() {
        for bad in [
            "gw.example.com",
            "ftp://x",
            "https://",
            "https:///x",
            "https://x/?a=1",
        ] {
            let c = parse_with_url(bad, &[]);
            assert!(c.validate().is_err(), "{bad} accepted");
        }
        assert!(
            parse_with_url("http://127.0.0.1:8080/", &[])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--max-streams", "0"]).validate().is_err());
    }
}
