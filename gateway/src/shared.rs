//! What every request handler and stream actor of one gateway shares, read-only.
//!
//! Nothing here is mutated on the media path: the NATS client and event publisher are actor
//! handles, the semaphore and tokens are lock-free.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use switchboard_proto::subject::Subjects;
use switchboard_service::Health;
use switchboard_service::events::EventPublisher;
use switchboard_service::recordings::RecordingStore;
use switchboard_service::redact::Secret;
use switchboard_twilio::signature::Validator;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::AgentRules;
use crate::allowlist::Allowlist;
use crate::claims::{ClaimError, Claims};
use crate::rate::RateLimit;
use crate::stream_token::StreamTokens;
use crate::twilio_rest::TwilioRest;
use crate::web_call::WebCallLimits;
use switchboard_service::web_call::TicketKey;

/// The shared state of one gateway instance.
pub struct Shared {
    /// This instance, as named in offers and stream starts.
    pub gateway_id: String,
    /// Checks `X-Twilio-Signature` against `PUBLIC_URL`.
    pub validator: Validator,
    /// Issues and checks the per-call media stream tokens.
    pub tokens: StreamTokens,
    /// Lifetime of an issued stream token, in seconds.
    pub token_ttl_seconds: u64,
    /// The NATS connection (a cloneable actor handle).
    pub nats: async_nats::Client,
    /// Subject names under the configured prefix.
    pub subjects: Subjects,
    /// Publishes `rejected` call events without blocking the webhook.
    pub events: EventPublisher,
    /// Readiness for `/readyz`.
    pub health: Health,
    /// How long an offer waits for a worker.
    pub offer_timeout: Duration,
    /// What callers hear when nobody takes the call.
    pub busy_message: String,
    /// How long a new socket may take to send `start`.
    pub start_timeout: Duration,
    /// A call whose owner sends nothing and answers no probe for this long is lost.
    pub worker_silence: Duration,
    /// How long a lost call is offered to other workers before the apology.
    pub takeover_timeout: Duration,
    /// Cancelled when the stop signal arrives: new calls are refused, streams continue.
    pub draining: CancellationToken,
    /// Cancelled when the drain deadline passes: every stream closes with 1001 now.
    pub closing: CancellationToken,
    /// One permit per open media socket (`MAX_STREAMS`).
    pub streams: Arc<Semaphore>,
    /// Every stream task (and REST request), so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Twilio's REST API (outbound calls, transfers, hang-ups).
    pub rest: TwilioRest,
    /// `CALLS_TOKEN` for `POST /calls` (None: the route refuses everyone).
    pub calls_token: Option<Secret>,
    /// `CALLS_ALLOWED_TO`: where `POST /calls` may dial (empty: nowhere).
    pub calls_allowed: Allowlist,
    /// `CALLS_PER_MINUTE`.
    pub calls_rate: RateLimit,
    /// The agents file: call routing and transfer targets.
    pub agents: AgentRules,
    /// `ADMIN_TOKEN`: opens web calls as a bearer token (None: only tickets do).
    pub admin_token: Option<Secret>,
    /// `WEB_CALL_SECRET`: checks the console's web-call tickets (None: tickets are refused).
    pub web_call_key: Option<TicketKey>,
    /// The origins web calls are accepted from (`PUBLIC_URL`'s, `CONSOLE_URL`'s).
    pub web_call_origins: Vec<String>,
    /// `WEB_CALLS_MAX` and `WEB_CALLS_PER_USER`, and the web calls open now.
    pub web_calls: WebCallLimits,
    /// Where call recordings are written (`RECORDINGS_URL`).
    pub recordings: RecordingStore,
    /// The `voice-calls` claim bucket, opened on first use (readiness waits for it).
    pub claims: OnceCell<Claims>,
}

impl Shared {
    /// The claim bucket, opening (or creating) it if this is the first use.
    pub async fn claims(&self) -> Result<&Claims, ClaimError> {
        self.claims
            .get_or_try_init(|| async { Claims::open(&jetstream::new(self.nats.clone())).await })
            .await
    }
}
