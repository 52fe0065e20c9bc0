//! Web-call tickets: how a signed-in console user opens `GET /web-call` on the gateway.
//!
//! Console sessions live in the persister's database, which the gateway does not reach. So the
//! persister, for a signed-in user, issues a ticket (`POST /api/web-call-ticket`) and the
//! browser presents it in the WebSocket URL (`/web-call?agent=<id>&ticket=<ticket>`; a browser
//! cannot set headers on a WebSocket). Both services share `WEB_CALL_SECRET`, the HMAC-SHA256
//! key. A ticket names the call it opens (a `WB` call id), the agent, the user (for the per-user
//! limit) and its expiry, [`TICKET_TTL`] after issue; the gateway claims the call id once, so a
//! ticket opens one call only.
//!
//! Format: `v1.<call_id>.<expires unix s>.<user, base64url>.<tag, base64url>`, the tag over
//! everything before it plus the agent id.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a ticket may wait before the browser opens the socket with it.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// The prefix of every web call's id (Twilio's calls start with `CA`).
pub const WEB_CALL_PREFIX: &str = "WB";

const VERSION: &str = "v1";

/// Longest ticket accepted (a real one is about 150 characters).
pub const MAX_TICKET_BYTES: usize = 512;

/// A new web call id: `WB` + 32 hex digits, like Twilio's CallSids.
pub fn new_call_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{WEB_CALL_PREFIX}{hex}")
}

/// Whether `call_sid` is a web call's (no Twilio call exists for it).
pub fn is_web_call(call_sid: &str) -> bool {
    call_sid.starts_with(WEB_CALL_PREFIX)
}

/// What a valid ticket grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub call_id: String,
    pub user: String,
    pub expires: u64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("malformed web-call ticket")]
    Malformed,
    #[error("web-call ticket with a wrong signature (or for another agent)")]
    BadSignature,
    #[error("expired web-call ticket")]
    Expired,
}

/// Issues and checks tickets under one `WEB_CALL_SECRET`.
#[derive(Clone)]
pub struct TicketKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A key from the shared secret (None when it is empty: web calls are then off).
    pub fn new(secret: &str) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        HmacSha256::new_from_slice(secret.as_bytes())
            .ok()
            .map(|mac| Self { mac })
    }

    fn tag(&self, signed: &str, agent: &str) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.update(b"\n");
        mac.update(agent.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A ticket for `user` to open web call `call_id` with `agent`, valid until `expires`
    /// (unix seconds).
    pub fn issue(&self, call_id: &str, agent: &str, user: &str, expires: u64) -> String {
        let signed = format!(
            "{VERSION}.{call_id}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(user.as_bytes())
        );
        let tag = URL_SAFE_NO_PAD.encode(self.tag(&signed, agent));
        format!("{signed}.{tag}")
    }

    /// Checks `ticket` for `agent` at `now` (unix seconds).
    pub fn verify(&self, ticket: &str, agent: &str, now: u64) -> Result<Ticket, TicketError> {
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(TicketError::Malformed);
        }
        let (signed, tag) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TicketError::Malformed)?;
        if !bool::from(self.tag(signed, agent).ct_eq(&tag)) {
            return Err(TicketError::BadSignature);
        }
        let mut parts = signed.split('.');
        let (Some(VERSION), Some(call_id), Some(expires), Some(user), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TicketError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| TicketError::Malformed)?;
        let user = URL_SAFE_NO_PAD
            .decode(user)
            .ok()
            .and_then(|u| String::from_utf8(u).ok())
            .ok_or(TicketError::Malformed)?;
        if !is_web_call(call_id) {
            return Err(TicketError::Malformed);
        }
        if now > expires {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            call_id: call_id.to_owned(),
            user,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_verifies_for_its_agent_until_it_expires() {
        let key = TicketKey::new("s3cret").unwrap();
        let id = new_call_id();
        assert!(is_web_call(&id) && id.len() == 34);
        let ticket = key.issue(&id, "demo", "console:ab12", 100);
        assert_eq!(
            key.verify(&ticket, "demo", 100),
            Ok(Ticket {
                call_id: id.clone(),
                user: "console:ab12".into(),
                expires: 100
            })
        );
        assert_eq!(key.verify(&ticket, "demo", 101), Err(TicketError::Expired));
        assert_eq!(
            key.verify(&ticket, "other", 50),
            Err(TicketError::BadSignature)
        );
        let other = TicketKey::new("another").unwrap();
        assert_eq!(
            other.verify(&ticket, "demo", 50),
            Err(TicketError::BadSignature)
        );
        // Tampering with any signed part breaks the tag.
        let forged = ticket.replacen(".100.", ".999.", 1);
        assert_eq!(
            key.verify(&forged, "demo", 50),
            Err(TicketError::BadSignature)
        );
        assert_eq!(key.verify("", "demo", 0), Err(TicketError::Malformed));
        assert_eq!(
            key.verify(&"x".repeat(600), "demo", 0),
            Err(TicketError::Malformed)
        );
        assert!(TicketKey::new("").is_none());
    }

    #[test]
    fn only_web_call_ids_are_accepted() {
        let key = TicketKey::new("s3cret").unwrap();
        let ticket = key.issue("CA123", "demo", "u", 100);
        assert_eq!(key.verify(&ticket, "demo", 1), Err(TicketError::Malformed));
    }
}
