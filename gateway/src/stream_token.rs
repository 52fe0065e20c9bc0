//! Per-call media stream tokens.
//!
//! The voice webhook puts a token into the TwiML `<Parameter name="token">`; Twilio hands it back
//! in the `start` frame of the media socket, which may land on any gateway replica. The token is
//! `<attach>.<epoch>.<expiry_unix>.<base64url(HMAC-SHA256(key,
//! "switchboard-stream:v3:" + call_sid + ":" + attach + ":" + epoch + ":" + expiry_unix))>`, keyed with the Twilio auth token every replica already has, so
//! any replica can check it. It binds the socket to the call the webhook offered, so a leaked
//! signature on the upgrade alone cannot attach a stranger's audio to (or listen to) someone
//! else's call.
//!
//! `attach` numbers the streams of one call: the webhook's token is attach 0, and every token
//! the gateway issues later to re-attach the call (gateway failover, hold, transfer back) gets
//! the next number ([`crate::claims::Claims::reattach_token`]). The MAC proves who issued a
//! token; that each `(call, attach)` opens one stream only, and never one older than the call's
//! current stream, is checked in the shared `voice-calls` bucket ([`crate::claims`]).
//!
//! `epoch` is the call's ownership epoch when the token was issued (0 for the webhook's): the
//! stream it opens starts with `StreamStart.epoch` set to it, so the owner that continues the
//! call on the new stream is the one the token was issued for.
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Domain separation: the same key also signs Twilio webhooks (with SHA-1), so our messages get a
/// prefix no Twilio URL starts with.
const DOMAIN: &str = "switchboard-stream:v3:";

/// The number of one stream of a call: 0 for the webhook's stream, then one more for every
/// re-attach the gateway issues.
pub type Attach = u32;

/// What a verified token grants: which stream of the call it opens, under which owner epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGrant {
    pub attach: Attach,
    pub epoch: u32,
}

impl StreamGrant {
    /// The call's first stream, issued by the webhook to the worker that accepted the call.
    pub const FIRST: Self = Self {
        attach: 0,
        epoch: 0,
    };

    /// `StreamStart.attach`: which stream of the call this is, from 1 (token numbers are from 0).
    pub fn stream_number(self) -> u32 {
        self.attach.saturating_add(1)
    }

    /// `StreamStart.resumed`: the stream continues a call that already had one.
    pub fn resumed(self) -> bool {
        self.attach > 0
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<digits>.<digits>.<digits>.<base64url>`.
    #[error("malformed stream token")]
    Malformed,
    /// The MAC does not match this call (tampered, another call, or another key).
    #[error("stream token does not match the call")]
    BadSignature,
    /// Valid but past its expiry.
    #[error("stream token expired")]
    Expired,
}

/// The key could not be used (HMAC takes keys of any length, so this does not happen in
/// practice; it is an error rather than a panic all the same).
#[derive(Debug, thiserror::Error)]
#[error("invalid stream token key")]
pub struct InvalidKey;

/// Issues and verifies stream tokens with one key.
#[derive(Clone)]
pub struct StreamTokens {
    /// The keyed MAC, cloned per use so the key schedule is computed once.
    mac: HmacSha256,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamTokens(..)")
    }
}

impl StreamTokens {
    /// Tokens keyed with `key` (the Twilio auth token).
    pub fn new(key: &[u8]) -> Result<Self, InvalidKey> {
        let mac = HmacSha256::new_from_slice(key).map_err(|_| InvalidKey)?;
        Ok(Self { mac })
    }

    /// A token for stream `grant.attach` of `call_sid` under owner epoch `grant.epoch` that is
    /// valid until `expires_at_unix` (seconds since the Unix epoch).
    pub fn issue(&self, call_sid: &str, grant: StreamGrant, expires_at_unix: u64) -> String {
        let StreamGrant { attach, epoch } = grant;
        let tag = self
            .tag(call_sid, grant, expires_at_unix)
            .finalize()
            .into_bytes();
        format!("{attach}.{epoch}.{expires_at_unix}.{}", B64URL.encode(tag))
    }

    /// Checks that `token` was issued for `call_sid` and has not expired at `now_unix`, and
    /// returns the stream number and owner epoch it was issued for.
    ///
    /// The MAC is checked (in constant time) before the expiry, so a forged token never learns
    /// anything from the answer. Nothing here allocates more than the token's fixed-size MAC.
    pub fn verify(
        &self,
        call_sid: &str,
        token: &str,
        now_unix: u64,
    ) -> Result<StreamGrant, TokenError> {
        let mut parts = token.splitn(4, '.');
        let (Some(attach), Some(epoch), Some(expiry), Some(tag)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let grant = StreamGrant {
            attach: decimal(attach, 10)?,
            epoch: decimal(epoch, 10)?,
        };
        let expiry: u64 = decimal(expiry, 20)?;
        let mut mac = [0u8; 32];
        match B64URL.decode_slice(tag.as_bytes(), &mut mac) {
            Ok(32) => {}
            _ => return Err(TokenError::Malformed),
        }
        self.tag(call_sid, grant, expiry)
            .verify_slice(&mac)
            .map_err(|_| TokenError::BadSignature)?;
        if now_unix > expiry {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    fn tag(&self, call_sid: &str, grant: StreamGrant, expiry: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN.as_bytes());
        mac.update(call_sid.as_bytes());
        mac.update(b":");
        mac.update(grant.attach.to_string().as_bytes());
        mac.update(b":");
        mac.update(grant.epoch.to_string().as_bytes());
        mac.update(b":");
        mac.update(expiry.to_string().as_bytes());
        mac
    }
}

/// A plain decimal of at most `max_digits` digits (no sign, no exponent).
fn decimal<T: std::str::FromStr>(text: &str, max_digits: usize) -> Result<T, TokenError> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    text.parse().map_err(|_| TokenError::Malformed)
}

/// Seconds since the Unix epoch (the clock tokens are checked against).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";

    const FIRST: StreamGrant = StreamGrant::FIRST;

    fn tokens() -> StreamTokens {
        StreamTokens::new(b"auth-token").unwrap()
    }

    #[test]
    fn accepts_its_own_token_until_expiry() {
        let t = tokens();
        let token = t.issue(CALL, FIRST, 1_000);
        assert!(token.starts_with("0.0.1000."));
        assert_eq!(t.verify(CALL, &token, 999), Ok(FIRST));
        assert_eq!(t.verify(CALL, &token, 1_000), Ok(FIRST));
        // Any replica with the same key accepts it.
        assert_eq!(
            StreamTokens::new(b"auth-token")
                .unwrap()
                .verify(CALL, &token, 10),
            Ok(FIRST)
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = tokens();
        let token = t.issue(CALL, FIRST, 1_000);
        assert_eq!(t.verify(CALL, &token, 1_001), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_for_another_call_is_refused() {
        let t = tokens();
        let token = t.issue("CA_other", FIRST, 1_000);
        assert_eq!(t.verify(CALL, &token, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn another_key_is_refused() {
        let token = StreamTokens::new(b"other")
            .unwrap()
            .issue(CALL, FIRST, 1_000);
        assert_eq!(
            tokens().verify(CALL, &token, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let t = tokens();
        let token = t.issue(CALL, FIRST, 1_000);
        // A later expiry, or another stream number, with the old MAC.
        let tag = token.rsplit('.').next().unwrap();
        assert_eq!(
            t.verify(CALL, &format!("0.0.9999999999.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            t.verify(CALL, &format!("1.0.1000.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        // Another owner epoch.
        assert_eq!(
            t.verify(CALL, &format!("0.1.1000.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        // One flipped MAC character.
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(t.verify(CALL, &flipped, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let t = tokens();
        for bad in [
            "",
            ".",
            "abc",
            "1000",
            "1000.",
            ".AAAA",
            "-5.AAAA",
            "+5.AAAA",
            "1e3.AAAA",
            "99999999999999999999999.AAAA",
            "1000.not base64!",
            "1000.AAAA.BBBB",
            "0.1000",
            "0.1000.",
            "x.1000.AAAA",
            "99999999999.1000.AAAA",
            "0.1000.AAAA",
        ] {
            let result = t.verify(CALL, bad, 0);
            assert!(
                matches!(
                    result,
                    Err(TokenError::Malformed | TokenError::BadSignature)
                ),
                "{bad:?} gave {result:?}"
            );
        }
        assert_eq!(t.verify(CALL, "abc", 0), Err(TokenError::Malformed));
        assert_eq!(
            t.verify(CALL, "0.0.1000.%%%", 0),
            Err(TokenError::Malformed)
        );
        // A MAC of the wrong length never reaches the comparison.
        assert_eq!(
            t.verify(CALL, "0.0.1000.AAAA", 0),
            Err(TokenError::Malformed)
        );
        let long = format!("0.0.1000.{}", "A".repeat(4096));
        assert_eq!(t.verify(CALL, &long, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn each_stream_number_is_its_own_token() {
        let t = tokens();
        let first = t.issue(CALL, FIRST, 1_000);
        let grant = StreamGrant {
            attach: 1,
            epoch: 3,
        };
        let reattach = t.issue(CALL, grant, 1_000);
        assert_ne!(first, reattach);
        assert!(reattach.starts_with("1.3.1000."));
        assert_eq!(t.verify(CALL, &reattach, 0), Ok(grant));
        assert_eq!(t.verify(CALL, &first, 0), Ok(FIRST));
        assert_eq!(
            t.verify("CA_other", &reattach, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        assert_eq!(format!("{:?}", tokens()), "StreamTokens(..)");
    }
}
