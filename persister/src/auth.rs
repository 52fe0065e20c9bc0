//! The admin bearer token guarding the read API.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of the configured token leaks through response timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured `ADMIN_TOKEN`, kept only as its digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// `None` for an empty token: an empty secret would let anyone in.
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
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
}
