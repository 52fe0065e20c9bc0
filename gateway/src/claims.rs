//! One-time claims on a call, shared by every gateway replica in the JetStream KV bucket
//! [`CALLS_BUCKET`] (`voice-calls`).
//!
//! Twilio's signatures carry no timestamp or nonce, so a captured webhook verifies forever. What
//! stops a replay is that each step of a call happens once, decided by a KV `create` (only one
//! writer of a key ever succeeds) or a compare-and-set `update`:
//!
//! - `<call_sid>.offered`: the voice webhook claims the call before offering it. A second webhook
//!   for the same CallSid (a replay, on any replica) finds the claim and is refused: no second
//!   offer, no model session, no new stream token. The value is the agent the gateway routed the
//!   call to, so the replica that later holds the media socket knows whose transfer list applies.
//! - `<call_sid>.attached`: the stream number ([`Attach`]) of the call's current media stream and
//!   its streamSid. A stream token opens a stream only if its number is higher than the one
//!   stored: the first socket that presents a token wins, the same token again is refused
//!   ([`AttachOutcome::TokenReused`]), and so is a token older than the call's current stream
//!   ([`AttachOutcome::CallLive`]).
//! - `<call_sid>.issued`: the last stream number handed out for a re-attach, so every re-attach
//!   token the gateway issues is a new one ([`Claims::reattach_token`]).
//! - `<call_sid>.ended`: the gateway ended the call itself (hang-up, transfer, a silent or lost
//!   worker), with the stop reason. Once set, the call is never re-attached: when `<Connect>`
//!   ends after that, its action URL is answered with `<Hangup/>` ([`crate::reattach`]).
//! - `<call_sid>.reattached.<n>`: the call was re-attached after stream `n` ended, so a second
//!   request about the same stream (a replayed action request, or the REST fallback racing
//!   Twilio's action request) issues no second token.
//!
//! The bucket's entries expire after [`CLAIM_TTL`]; the configuration is one constant
//! ([`bucket_config`]), so whichever replica creates the bucket creates the same one. When the
//! bucket cannot be reached the gateway fails closed: the webhook answers 503 and a stream is
//! closed with 1011, because accepting without the check is what a replay needs.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use switchboard_proto::subject::CALLS_BUCKET;

use crate::stream_token::{Attach, StreamGrant, StreamTokens};

/// How long a claim is kept. A replay of a webhook older than this would be offered again, so
/// it is far longer than Twilio's longest call (24 h is also the most Twilio lets a call last).
pub const CLAIM_TTL: Duration = Duration::from_secs(24 * 3600);

/// The claim bucket's configuration, the same whoever creates it.
pub fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: CALLS_BUCKET.to_owned(),
        description: "Switchboard gateways: calls offered and media streams attached, for replay \
                      protection"
            .to_owned(),
        history: 1,
        max_age: CLAIM_TTL,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

/// The claim bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("cannot open the `{CALLS_BUCKET}` bucket: {0}")]
    Open(String),
    #[error("`{CALLS_BUCKET}` bucket: {0}")]
    Store(String),
    /// A re-attach was asked for a call this gateway never offered (or whose claim expired).
    #[error("call {0} was never offered")]
    UnknownCall(String),
}

/// Whether this webhook is the first for its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferClaim {
    /// The call is ours to offer.
    First,
    /// The call was offered before (a replay).
    Replay,
}

/// What presenting a stream token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// This socket is now the call's stream.
    Attached,
    /// The token already opened a stream.
    TokenReused,
    /// The call already has a newer stream than this token's.
    CallLive,
}

/// How often a compare-and-set is retried when another replica wrote in between.
const CAS_ATTEMPTS: u32 = 8;

/// A handle on the claim bucket (cheap to clone).
#[derive(Clone)]
pub struct Claims {
    kv: kv::Store,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claims(..)")
    }
}

fn key(call_sid: &str, what: &str) -> String {
    format!("{call_sid}.{what}")
}

const OFFERED: &str = "offered";
const ATTACHED: &str = "attached";
const ISSUED: &str = "issued";
const ENDED: &str = "ended";
const REATTACHED: &str = "reattached";

impl Claims {
    /// Opens the bucket, creating it if missing (or bringing its settings and replicas in line:
    /// [`switchboard_service::storage::ensure_bucket`]).
    pub async fn open(js: &jetstream::Context) -> Result<Self, ClaimError> {
        switchboard_service::storage::ensure_bucket(js, bucket_config())
            .await
            .map(|kv| Self { kv })
            .map_err(|e| ClaimError::Open(e.to_string()))
    }

    /// Claims `call_sid` for its first (and only) offer, recording the agent it was routed to
    /// (empty when the gateway has no agents file).
    pub async fn claim_offer(&self, call_sid: &str, agent: &str) -> Result<OfferClaim, ClaimError> {
        match self
            .kv
            .create(
                key(call_sid, OFFERED),
                Bytes::copy_from_slice(agent.as_bytes()),
            )
            .await
        {
            Ok(_) => Ok(OfferClaim::First),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(OfferClaim::Replay),
            Err(e) => Err(ClaimError::Store(e.to_string())),
        }
    }

    /// The agent the webhook routed `call_sid` to (`None`: the call was never offered; an empty
    /// string: offered without an agents file).
    pub async fn offered_agent(&self, call_sid: &str) -> Result<Option<String>, ClaimError> {
        let value = self
            .kv
            .get(key(call_sid, OFFERED))
            .await
            .map_err(|e| ClaimError::Store(e.to_string()))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Makes stream `attach` (`stream_sid`) the call's stream, if its token was never used and
    /// the call has no newer stream.
    pub async fn attach(
        &self,
        call_sid: &str,
        attach: Attach,
        stream_sid: &str,
    ) -> Result<AttachOutcome, ClaimError> {
        let key = key(call_sid, ATTACHED);
        let value = Bytes::from(format!("{attach} {stream_sid}"));
        for _ in 0..CAS_ATTEMPTS {
            let current = self.live_entry(&key).await?;
            // Each arm returns, or falls through when another replica wrote in between.
            match current {
                None => match self.kv.create(key.as_str(), value.clone()).await {
                    Ok(_) => return Ok(AttachOutcome::Attached),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(ClaimError::Store(e.to_string())),
                },
                Some(entry) => {
                    let live = attached_number(&entry.value);
                    if live == Some(attach) {
                        return Ok(AttachOutcome::TokenReused);
                    }
                    if live.is_some_and(|live| live > attach) {
                        return Ok(AttachOutcome::CallLive);
                    }
                    match self
                        .kv
                        .update(key.as_str(), value.clone(), entry.revision)
                        .await
                    {
                        Ok(_) => return Ok(AttachOutcome::Attached),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                        Err(e) => return Err(ClaimError::Store(e.to_string())),
                    }
                }
            }
        }
        Err(ClaimError::Store(format!(
            "{key}: still contended after {CAS_ATTEMPTS} attempts"
        )))
    }

    /// The entry of `key` unless absent or deleted.
    async fn live_entry(&self, key: &str) -> Result<Option<kv::Entry>, ClaimError> {
        Ok(self
            .kv
            .entry(key)
            .await
            .map_err(|e| ClaimError::Store(e.to_string()))?
            .filter(|e| e.operation == kv::Operation::Put))
    }

    /// Records that the gateway ended `call_sid` itself (`reason`: the stream's stop reason), so
    /// no gateway re-attaches it. The first record stays (a later one changes nothing).
    pub async fn mark_ended(&self, call_sid: &str, reason: &str) -> Result<(), ClaimError> {
        match self
            .kv
            .create(
                key(call_sid, ENDED),
                Bytes::copy_from_slice(reason.as_bytes()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ClaimError::Store(e.to_string())),
        }
    }

    /// Takes back the gateway's own end of `call_sid` when it was for `reason` (a transfer whose
    /// human did not answer: the caller comes back). Returns whether there was such an end.
    pub async fn clear_ended(&self, call_sid: &str, reason: &str) -> Result<bool, ClaimError> {
        let key = key(call_sid, ENDED);
        let Some(entry) = self.live_entry(&key).await? else {
            return Ok(false);
        };
        if entry.value.as_ref() != reason.as_bytes() {
            return Ok(false);
        }
        // Only the revision read: an end recorded again meanwhile stays.
        self.kv
            .delete_expect_revision(&key, Some(entry.revision))
            .await
            .map_err(|e| ClaimError::Store(e.to_string()))?;
        Ok(true)
    }

    /// Claims the one re-attach of `call_sid` after its stream `ended` (true: this request's).
    pub async fn claim_reattach(&self, call_sid: &str, ended: Attach) -> Result<bool, ClaimError> {
        match self
            .kv
            .create(
                format!("{call_sid}.{REATTACHED}.{ended}"),
                Bytes::from_static(b"1"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ClaimError::Store(e.to_string())),
        }
    }

    /// Why the gateway ended `call_sid` itself, or `None` while it has not.
    pub async fn ended_reason(&self, call_sid: &str) -> Result<Option<String>, ClaimError> {
        Ok(self
            .live_entry(&key(call_sid, ENDED))
            .await?
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// The stream number and streamSid of the call's current stream (`None`: no stream yet).
    pub async fn attached_stream(
        &self,
        call_sid: &str,
    ) -> Result<Option<(Attach, String)>, ClaimError> {
        let Some(entry) = self.live_entry(&key(call_sid, ATTACHED)).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&entry.value);
        let (number, stream_sid) = text.split_once(' ').unwrap_or((&text, ""));
        let number = number.parse().map_err(|_| {
            ClaimError::Store(format!("{call_sid}.{ATTACHED}: not `<number> <streamSid>`"))
        })?;
        Ok(Some((number, stream_sid.to_owned())))
    }

    /// Issues a one-time token that re-attaches `call_sid` with a new stream (gateway failover,
    /// hold, transfer back) under owner `epoch`: the next stream number of the call, so it is
    /// accepted once, and after it no older token of the call is. Valid until `expires_at_unix`.
    /// Returns the stream number and the token.
    pub async fn reattach_token(
        &self,
        tokens: &StreamTokens,
        call_sid: &str,
        epoch: u32,
        expires_at_unix: u64,
    ) -> Result<(Attach, String), ClaimError> {
        if self.offered_agent(call_sid).await?.is_none() {
            return Err(ClaimError::UnknownCall(call_sid.to_owned()));
        }
        let key = key(call_sid, ISSUED);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.live_entry(&key).await?;
            let (next, written) = match current {
                None => {
                    let next: Attach = 1;
                    let r = self.kv.create(key.as_str(), number(next)).await;
                    match r {
                        Ok(_) => (next, true),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => (next, false),
                        Err(e) => return Err(ClaimError::Store(e.to_string())),
                    }
                }
                Some(entry) => {
                    let issued = std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|v| v.parse::<Attach>().ok())
                        .ok_or_else(|| ClaimError::Store(format!("{key}: not a number")))?;
                    let next = issued
                        .checked_add(1)
                        .ok_or_else(|| ClaimError::Store(format!("{key}: exhausted")))?;
                    match self
                        .kv
                        .update(key.as_str(), number(next), entry.revision)
                        .await
                    {
                        Ok(_) => (next, true),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            (next, false)
                        }
                        Err(e) => return Err(ClaimError::Store(e.to_string())),
                    }
                }
            };
            if written {
                let grant = StreamGrant {
                    attach: next,
                    epoch,
                };
                return Ok((next, tokens.issue(call_sid, grant, expires_at_unix)));
            }
        }
        Err(ClaimError::Store(format!(
            "{key}: still contended after {CAS_ATTEMPTS} attempts"
        )))
    }
}

fn number(n: Attach) -> Bytes {
    Bytes::from(n.to_string())
}

/// The stream number stored in an `attached` value (`<attach> <streamSid>`).
fn attached_number(value: &[u8]) -> Option<Attach> {
    let text = std::str::from_utf8(value).ok()?;
    text.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attached_value_names_the_stream_number() {
        assert_eq!(attached_number(b"0 MZ1"), Some(0));
        assert_eq!(attached_number(b"17 MZ1"), Some(17));
        assert_eq!(attached_number(b"x MZ1"), None);
        assert_eq!(attached_number(b""), None);
    }

    #[test]
    fn the_bucket_is_configured_once() {
        let config = bucket_config();
        assert_eq!(config.bucket, "voice-calls");
        assert_eq!(config.history, 1);
        assert_eq!(config.max_age, CLAIM_TTL);
    }
}
