//! The admin token guarding the read API and the dashboard.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of the configured token leaks through response timing. The token also keys the
//! dashboard's session store ([`ConsoleSessions`](crate::console_sessions::ConsoleSessions)), so
//! changing it signs every browser out.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::console_sessions::ConsoleSessions;

/// Who may read: the bearer of the admin token, or a browser signed in with it.
#[derive(Clone, Debug)]
pub struct Access {
    pub token: Arc<AdminToken>,
    pub sessions: ConsoleSessions,
}

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The admin token, or a live session cookie.
    Allowed,
    /// An `Authorization` header that is not the admin token (a cookie does not rescue it).
    WrongToken,
    /// Neither a bearer token nor a live session.
    Missing,
}

impl Access {
    /// Checks the request's `Authorization` header, then its session cookie. Errs only when the
    /// session store cannot be read.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Verdict, sqlx::Error> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let ok = authorization
                .to_str()
                .is_ok_and(|value| self.token.accepts(value));
            return Ok(if ok {
                Verdict::Allowed
            } else {
                Verdict::WrongToken
            });
        }
        Ok(if self.sessions.is_signed_in(headers).await? {
            Verdict::Allowed
        } else {
            Verdict::Missing
        })
    }
}

/// Who a request's credentials name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bearer of the admin token.
    Admin,
    /// A signed-in browser, labelled by its session (see
    /// [`ConsoleSessions::signed_in_as`]).
    Console(String),
}

impl Caller {
    /// The label per-user limits count against.
    pub fn user(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::Console(label) => label,
        }
    }
}

impl Access {
    /// Who the request comes from, if it is allowed at all (as [`Access::check`]).
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Option<Caller>, sqlx::Error> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let ok = authorization
                .to_str()
                .is_ok_and(|value| self.token.accepts(value));
            return Ok(ok.then_some(Caller::Admin));
        }
        Ok(self
            .sessions
            .signed_in_as(headers)
            .await?
            .map(Caller::Console))
    }
}

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

    /// The key the session store hashes session ids with: derived from the token under a fixed
    /// label, so it is not the token's digest itself.
    pub fn session_key(&self) -> [u8; 32] {
        let mut key = Sha256::new();
        key.update(b"switchboard-console-session-v2\0");
        key.update(self.digest);
        key.finalize().into()
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
        self.matches(presented.trim())
    }

    /// The 401 answer (JSON `{"error": ...}`) to a request whose `Authorization` header does not
    /// carry this token, or `None` when it does: the one bearer check of every service's admin
    /// API that has no console session (the notifier's, the dialer's).
    pub fn refusal(&self, headers: &HeaderMap) -> Option<axum::response::Response> {
        use axum::response::IntoResponse as _;
        let carried = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|value| self.accepts(value));
        (!carried).then(|| {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "a valid bearer token (ADMIN_TOKEN) is required"
                })),
            )
                .into_response()
        })
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
        assert!(t.matches("s3cret") && !t.matches("s3cre"));
    }

    #[test]
    fn the_session_key_depends_on_the_token_and_is_not_its_digest() {
        let a = AdminToken::new("s3cret").unwrap();
        assert_eq!(
            a.session_key(),
            AdminToken::new("s3cret").unwrap().session_key()
        );
        assert_ne!(
            a.session_key(),
            AdminToken::new("other").unwrap().session_key()
        );
        assert_ne!(a.session_key(), a.digest);
    }
}
