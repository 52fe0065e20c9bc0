//! Per-call media stream tokens.
//!
//! The voice webhook puts a token into the TwiML `<Parameter name="token">`; Twilio hands it back
//! in the `start` frame of the media socket, which may land on any gateway replica. The token is
//! therefore stateless: `<expiry_unix>.<base64url(HMAC-SHA256(key, "switchboard-stream:" +
//! call_sid + ":" + expiry_unix))>`, keyed with the Twilio auth token every replica already has.
//! It binds the socket to the call the webhook offered, so a leaked signature on the upgrade alone
//! cannot attach a stranger's audio to (or listen to) someone else's call.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Domain separation: the same key also signs Twilio webhooks (with SHA-1), so our messages get a
/// prefix no Twilio URL starts with.
const DOMAIN: &str = "switchboard-stream:";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<digits>.<base64url>`.
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

    /// A token for `call_sid` that is valid until `expires_at_unix` (seconds since the epoch).
    pub fn issue(&self, call_sid: &str, expires_at_unix: u64) -> String {
        let tag = self.tag(call_sid, expires_at_unix).finalize().into_bytes();
        format!("{expires_at_unix}.{}", B64URL.encode(tag))
    }

    /// Checks that `token` was issued for `call_sid` and has not expired at `now_unix`.
    ///
    /// The MAC is checked (in constant time) before the expiry, so a forged token never learns
    /// anything from the answer.
    pub fn verify(&self, call_sid: &str, token: &str, now_unix: u64) -> Result<(), TokenError> {
        let (expiry, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let tag = B64URL
            .decode(tag.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        self.tag(call_sid, expiry)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        if now_unix > expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    fn tag(&self, call_sid: &str, expiry: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN.as_bytes());
        mac.update(call_sid.as_bytes());
        mac.update(b":");
        mac.update(expiry.to_string().as_bytes());
        mac
    }
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

    fn tokens() -> StreamTokens {
        StreamTokens::new(b"auth-token").unwrap()
    }

    #[test]
    fn accepts_its_own_token_until_expiry() {
        let t = tokens();
        let token = t.issue(CALL, 1_000);
        assert!(token.starts_with("1000."));
        assert_eq!(t.verify(CALL, &token, 999), Ok(()));
        assert_eq!(t.verify(CALL, &token, 1_000), Ok(()));
        // Any replica with the same key accepts it.
        assert_eq!(
            StreamTokens::new(b"auth-token")
                .unwrap()
                .verify(CALL, &token, 10),
            Ok(())
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = tokens();
        let token = t.issue(CALL, 1_000);
        assert_eq!(t.verify(CALL, &token, 1_001), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_for_another_call_is_refused() {
        let t = tokens();
        let token = t.issue("CA_other", 1_000);
        assert_eq!(t.verify(CALL, &token, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn another_key_is_refused() {
        let token = StreamTokens::new(b"other").unwrap().issue(CALL, 1_000);
        assert_eq!(
            tokens().verify(CALL, &token, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let t = tokens();
        let token = t.issue(CALL, 1_000);
        // A later expiry with the old MAC.
        let (_, tag) = token.split_once('.').unwrap();
        assert_eq!(
            t.verify(CALL, &format!("9999999999.{tag}"), 0),
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
        assert_eq!(t.verify(CALL, "1000.%%%", 0), Err(TokenError::Malformed));
    }
}
