//! The admin token guarding the read API and the dashboard.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of the configured token leaks through response timing. A signed-in browser holds a
//! session cookie whose value is derived from the token (a hash of it under a fixed label), never
//! the token itself, so a leaked cookie does not reveal the token, and changing the token signs
//! everyone out.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured `ADMIN_TOKEN`, kept only as its digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
    session: String,
}

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "sb_session";

impl AdminToken {
    /// `None` for an empty token: an empty secret would let anyone in.
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let mut session = Sha256::new();
            session.update(b"switchboard-dashboard-session-v1\0");
            session.update(digest);
            let session = session
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Self { digest, session }
        })
    }

    /// The session cookie's value for this token.
    pub fn session_value(&self) -> &str {
        &self.session
    }

    /// Whether a `Cookie` header value carries a valid session cookie.
    pub fn accepts_cookie(&self, cookie_header: &str) -> bool {
        let expected: [u8; 32] = Sha256::digest(self.session.as_bytes()).into();
        cookie_header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .any(|(_, value)| {
                let presented: [u8; 32] = Sha256::digest(value.trim().as_bytes()).into();
                presented.ct_eq(&expected).into()
            })
    }

    /// Whether a submitted token (the sign-in form) is the admin token.
    pub fn matches(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`; the
    /// scheme is case-insensitive as HTTP says).
    pub fn accepts(&self, authorization: &str) -> bool {
        let Some((scheme, presented)) = authorization.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::AdminToken;

    #[test]
    fn bearer_tokens() {
        let t = AdminToken::new("s3cret").unwrap();
        assert!(t.accepts("Bearer s3cret"));
        assert!(t.accepts("bearer s3cret "));
        assert!(!t.accepts("Bearer s3cre"));
        assert!(!t.accepts("Bearer s3cret2"));
        assert!(!t.accepts("Basic s3cret"));
        assert!(!t.accepts("s3cret"));
        assert!(!t.accepts("Bearer "));
        assert!(AdminToken::new("").is_none());
    }

    #[test]
    fn session_cookies_are_derived_not_the_token() {
        let t = AdminToken::new("s3cret").unwrap();
        let v = t.session_value().to_owned();
        assert_eq!(v.len(), 64);
        assert!(!v.contains("s3cret"));
        assert!(t.accepts_cookie(&format!("a=1; sb_session={v}; b=2")));
        assert!(!t.accepts_cookie("sb_session=s3cret"));
        assert!(!t.accepts_cookie(&format!("other={v}")));
        assert!(
            !AdminToken::new("other")
                .unwrap()
                .accepts_cookie(&format!("sb_session={v}"))
        );
        assert!(t.matches("s3cret") && !t.matches("s3cre"));
    }
}
