//! The gateway: Switchboard's only part that speaks Twilio.
//!
//! It is stateless beyond its open sockets: a call is offered to the call-workers over NATS when
//! Twilio's webhook arrives, and the media socket (which may land on any replica) is bridged to
//! the call's `voice.call.<sid>.in` / `.out` subjects.
//!
//! - [`config`]: flags and environment (ARCHITECTURE.md section 5);
//! - [`webhook`]: `POST /twilio-voice` (signature, replay check, offer, TwiML) and
//!   `POST /twilio-status`;
//! - [`body`]: reading a request body under a size limit and a deadline;
//! - [`status`]: Twilio status callbacks as `status` call events;
//! - [`amd`]: `POST /twilio-amd`, Twilio's answering-machine verdicts as `amd` call events;
//! - [`calls`]: `POST /calls`, outbound calls placed through Twilio's REST API, behind its own
//!   token, a destination allowlist ([`allowlist`]) and a rate limit ([`rate`]);
//! - [`twilio_rest`]: the Twilio REST client (create a call, update a live call);
//! - [`offer`]: the `CallOffer` request to the worker queue group and the `rejected` event;
//! - [`reattach`]: `POST /twilio-connect-action` and `POST /twilio-stream-status`, which give a
//!   live call a new media stream on any gateway when its stream ends or fails;
//! - [`dial`]: transfers that ring and may come back (`POST /twilio-dial-action`,
//!   `POST /twilio-dial-status`) and keys pressed on the line;
//! - [`stream_token`]: the per-call, per-stream token that binds a media socket to its call;
//! - [`claims`]: one-time claims in the `voice-calls` KV bucket (a call is offered once, a
//!   token opens one stream);
//! - [`agents`]: the agents file as the gateway enforces it (where a call may be transferred);
//! - [`media`]: `GET /media` admission (upgrade signature, `MAX_STREAMS`, message size limit);
//! - [`stream`]: the actor owning one media socket: handshake, forwarding both ways, ending;
//! - [`owner`]: whether the call's owner is still there (heartbeats, probes, epochs): the
//!   detection machine of a stream;
//! - [`takeover`]: probing a silent owner, offering its call to another worker, and closing
//!   the record of a call nobody took over;
//! - [`recorder`]: the call's two-channel recording (caller, agent as heard), kept off the
//!   media path and written to the recording store when the stream ends;
//! - [`spill`]: the settled part of a recording, held in a temporary file until it is stored;
//! - [`replay`]: the last seconds of caller audio, replayed to a call's new owner;
//! - [`close`]: the close codes and reasons media sockets end with;
//! - [`outbox`]: the socket writer task and its non-blocking, audio-dropping queue;
//! - [`frames`]: the mapping between Twilio's JSON and the `switchboard.v1` frames;
//! - [`web_call`]: `GET /web-call`, a test call from the console's browser page: the gateway
//!   creates and offers the call itself and the browser speaks the Media Streams messages;
//! - [`metrics`]: metric names;
//! - [`shared`]: the read-only state handlers and actors share.
//!
//! [`Gateway::serve`] runs the HTTP server until a shutdown future resolves, then drains:
//! readiness turns false, new calls get 503, open streams continue until they end or
//! `DRAIN_SECONDS` pass, then close with 1001.
#![forbid(unsafe_code)]

pub mod agents;
pub mod allowlist;
pub mod amd;
pub mod body;
pub mod calls;
pub mod claims;
pub mod close;
pub mod config;
pub mod dial;
pub mod frames;
pub mod media;
pub mod metrics;
pub mod offer;
pub mod outbox;
pub mod owner;
pub mod rate;
pub mod reattach;
pub mod recorder;
pub mod replay;
pub mod shared;
pub mod spill;
pub mod status;
pub mod stream;
pub mod stream_token;
pub mod takeover;
pub mod twilio_rest;
pub mod web_call;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_service::Health;
use switchboard_service::backoff::Backoff;
use switchboard_service::drain::{Drain, flush_nats};
use switchboard_service::events::{EventPublisher, ensure_stream};
use switchboard_service::recordings::RecordingStore;
use switchboard_twilio::signature::Validator;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use shared::Shared;
use stream_token::StreamTokens;

/// The most of `DRAIN_SECONDS` kept at its end for closing the remaining streams and publishing
/// their last events (a fifth of the drain, at most this): the gateway stops within
/// `DRAIN_SECONDS` whatever NATS is doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Nats(#[from] switchboard_service::nats::ConnectError),
    #[error(transparent)]
    Rest(#[from] twilio_rest::RestError),
    #[error(transparent)]
    Key(#[from] stream_token::InvalidKey),
    #[error(transparent)]
    Agents(#[from] switchboard_agents::AgentsError),
    #[error(transparent)]
    Recordings(#[from] switchboard_service::recordings::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// A configured gateway, connected to NATS and ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    drain: Duration,
}

impl Gateway {
    /// Validates `config`, connects to NATS and starts the event publisher. `metrics` renders
    /// `/metrics` (None leaves the route out, e.g. when a test process has no recorder).
    pub async fn connect(config: Config, metrics: Option<PrometheusHandle>) -> Result<Self, Error> {
        config.validate()?;
        let agents = agents::AgentRules::load(config.agents_file.as_deref())?;
        if !agents.configured() {
            tracing::warn!("no AGENTS_FILE: every transfer a worker asks for is refused");
        }
        let calls_allowed = config
            .calls_allowlist()
            .map_err(config::ConfigError::from)?;
        let recordings = RecordingStore::open(&config.recordings.recordings_url)?;
        let gateway_id = config.resolved_gateway_id();
        let nats = config
            .nats
            .connect(&format!("gateway {gateway_id}"))
            .await?;
        let subjects = config.nats.subjects();
        let events = EventPublisher::spawn(jetstream::new(nats.clone()), subjects.clone());
        crate::metrics::describe();
        let shared = Shared {
            validator: Validator::new(config.twilio_auth_token.expose(), &config.public_url),
            tokens: StreamTokens::new(config.twilio_auth_token.expose().as_bytes())?,
            token_ttl_seconds: config.stream_token_ttl_seconds,
            gateway_id,
            nats,
            subjects,
            events,
            health: Health::new(),
            offer_timeout: config.offer_timeout(),
            busy_message: config.busy_message.clone(),
            start_timeout: config.start_timeout(),
            worker_silence: config.worker_silence(),
            takeover_timeout: config.takeover_timeout(),
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            tracker: TaskTracker::new(),
            rest: twilio_rest::TwilioRest::new(
                &config.twilio_api_base,
                &config.twilio_account_sid,
                &config.twilio_auth_token,
            )?,
            calls_token: config.calls_token(),
            calls_allowed,
            calls_rate: rate::RateLimit::per_minute(config.calls_per_minute),
            agents,
            recordings,
            claims: tokio::sync::OnceCell::new(),
            admin_token: config.admin_token(),
            web_call_key: config
                .web_call_secret
                .as_ref()
                .and_then(|s| switchboard_service::web_call::TicketKey::new(s.expose())),
            web_call_origins: config.web_call_origins(),
            web_calls: web_call::WebCallLimits::new(
                config.web_calls_max,
                config.web_calls_per_user,
            ),
        };
        Ok(Self {
            shared: Arc::new(shared),
            metrics,
            drain: config.drain(),
        })
    }

    /// This instance's id.
    pub fn gateway_id(&self) -> &str {
        &self.shared.gateway_id
    }

    /// All routes: Twilio's webhooks and media socket, health and metrics.
    pub fn router(&self) -> Router {
        let twilio = Router::new()
            .route(webhook::VOICE_PATH, post(webhook::voice))
            .route(webhook::STATUS_PATH, post(webhook::status))
            .route(amd::AMD_PATH, post(amd::verdict))
            .route(
                reattach::CONNECT_ACTION_PATH,
                post(reattach::connect_action),
            )
            .route(reattach::STREAM_STATUS_PATH, post(reattach::stream_status))
            .route(dial::DIAL_ACTION_PATH, post(dial::dial_action))
            .route(dial::DIAL_STATUS_PATH, post(dial::dial_status))
            .route(webhook::MEDIA_PATH, get(media::upgrade))
            .route(calls::CALLS_PATH, post(calls::create))
            .route(web_call::WEB_CALL_PATH, get(web_call::upgrade))
            .with_state(self.shared.clone());
        twilio.merge(self.shared.health.router(self.metrics.clone()))
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the crate docs) and
    /// returns once every stream has closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let shared = self.shared.clone();
        let closing = shared.closing.clone();
        // Media frames are small and latency-bound: no Nagle delay on accepted sockets.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        // The gateway's own tasks (the streams have theirs): the server and the readiness probe.
        let service_tasks = TaskTracker::new();
        let mut server =
            switchboard_service::tasks::serve(listener, self.router(), closing, &service_tasks);

        // Ready once the events stream exists (retried: NATS may come up after us).
        let readiness = service_tasks.spawn(become_ready(shared.clone()));
        service_tasks.close();

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                // The server only ends on its own when accepting fails.
                readiness.abort();
                shared.closing.cancel();
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Error::Serve(e)),
                    Err(e) => Err(Error::Serve(std::io::Error::other(e))),
                };
            }
        }

        readiness.abort();
        tracing::info!(drain = ?self.drain, "draining: refusing new calls, waiting for open streams");
        shared.health.set_ready(false);
        shared.draining.cancel();
        shared.tracker.close();
        let drain = Drain::new(self.drain);
        let reserve = (self.drain / 5).min(SHUTDOWN_GRACE);
        if tokio::time::timeout(drain.until_reserve(reserve), shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline near; closing the remaining streams");
        }
        shared.closing.cancel();
        if drain
            .step("closing streams", reserve / 2, shared.tracker.wait())
            .await
            .is_none()
        {
            tracing::warn!("some streams did not close in time");
        }
        match drain.step("http server", reserve / 4, &mut server).await {
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Some(_) => {}
            None => server.abort(),
        }
        let report = shared
            .events
            .close(drain.until_reserve(Duration::from_millis(300)))
            .await;
        if report.spilled > 0 {
            tracing::error!(
                spilled = report.spilled,
                "call events were written to the log instead of the stream"
            );
        }
        flush_nats(&drain, &shared.nats, Duration::from_millis(300)).await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Creates the events stream and opens the claim bucket (retrying with backoff until both
/// work), then marks the gateway ready.
async fn become_ready(shared: Arc<Shared>) {
    let js = jetstream::new(shared.nats.clone());
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let ready = match ensure_stream(&js, &shared.subjects).await {
            Ok(_) => shared.claims().await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match ready {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, "cannot create the events stream or claim bucket yet; retrying");
                backoff.wait().await;
            }
        }
    }
    if !shared.draining.is_cancelled() {
        shared.health.set_ready(true);
        tracing::info!("gateway ready");
    }
}

/// Binds `LISTEN`, installs the metrics recorder, connects and serves until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let metrics = switchboard_service::telemetry::install_metrics();
    let gateway = Gateway::connect(config, metrics).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), gateway_id = gateway.gateway_id(),
        "gateway listening");
    gateway.serve(listener, shutdown).await
}
