//! Signed-in dashboard browsers: random session ids with an expiry, kept in Postgres.
//!
//! Signing in with the admin token creates a session: 32 random bytes, sent to the browser as
//! the `sb_session` cookie (`HttpOnly; SameSite=Strict; Path=/`, and `Secure` when the console is
//! served over https). The table `console_sessions` holds only a keyed hash of the id, so a
//! database dump holds no usable cookie, and the key is derived from the admin token, so
//! rotating `ADMIN_TOKEN` signs every browser out. Every replica reads the same table: a
//! sign-in on one replica works on all, and signing out deletes the row, which revokes the
//! cookie everywhere at once. Expiry is checked against the database clock (`now()`), the one
//! clock all replicas share; expired rows are swept at each sign-in.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::auth::AdminToken;

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "sb_session";

/// How long a session lasts unless `SESSION_TTL_SECONDS` says otherwise: a working day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// Random bytes in a session id (hex in the cookie).
const ID_BYTES: usize = 32;

/// Cookies named `sb_session` looked at per request: a browser sends one; a request with many is
/// not worth a database query each.
const MAX_PRESENTED: usize = 2;

/// The session store of the console.
#[derive(Clone)]
pub struct ConsoleSessions {
    pool: PgPool,
    key: [u8; 32],
    ttl: Duration,
    secure: bool,
}

impl std::fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessions")
            .field("ttl", &self.ttl)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl ConsoleSessions {
    /// Sessions over `pool` for the admin `token`, lasting `ttl`; `secure` marks the cookie
    /// `Secure` (the console's public URL is https).
    pub fn new(pool: PgPool, token: &AdminToken, ttl: Duration, secure: bool) -> Self {
        Self {
            pool,
            key: token.session_key(),
            ttl,
            secure,
        }
    }

    /// Starts a session; returns the `Set-Cookie` value that gives it to the browser.
    pub async fn create(&self) -> Result<String, sqlx::Error> {
        let mut bytes = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex(&bytes);
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= now()")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, expires_at) \
             VALUES ($1, now() + make_interval(secs => $2))",
        )
        .bind(self.hash(&id).as_slice())
        .bind(self.ttl.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(self.cookie(&id, self.ttl.as_secs()))
    }

    /// Whether the request carries the cookie of a live (not expired, not revoked) session.
    pub async fn is_signed_in(&self, headers: &HeaderMap) -> Result<bool, sqlx::Error> {
        Ok(self.signed_in_as(headers).await?.is_some())
    }

    /// The live session the request's cookie names, as a user label for per-user limits
    /// (`console:` and the start of its stored hash, which says nothing about the cookie).
    pub async fn signed_in_as(&self, headers: &HeaderMap) -> Result<Option<String>, sqlx::Error> {
        for id in presented(headers).take(MAX_PRESENTED) {
            let live: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM console_sessions WHERE id_hash = $1 AND expires_at > now()",
            )
            .bind(self.hash(id).as_slice())
            .fetch_optional(&self.pool)
            .await?;
            if live.is_some() {
                return Ok(Some(format!("console:{}", &hex(&self.hash(id))[..12])));
            }
        }
        Ok(None)
    }

    /// Ends the sessions of the request's cookies (sign-out); returns the `Set-Cookie` value
    /// that clears the cookie.
    pub async fn revoke(&self, headers: &HeaderMap) -> Result<String, sqlx::Error> {
        for id in presented(headers).take(MAX_PRESENTED) {
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(self.hash(id).as_slice())
                .execute(&self.pool)
                .await?;
        }
        Ok(self.cookie("", 0))
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        )
    }

    /// What the table stores for `id`: SHA-256 under the key derived from the admin token.
    fn hash(&self, id: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(id.as_bytes());
        h.finalize().into()
    }
}

/// The well-formed `sb_session` values among the request's cookies.
fn presented(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| value.len() == 2 * ID_BYTES && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_well_formed_session_cookies_are_looked_up() {
        let id = "ab".repeat(ID_BYTES);
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; sb_session=short; sb_session={id}")).unwrap(),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("sb_session=zz; other=1"),
        );
        assert_eq!(presented(&headers).collect::<Vec<_>>(), [id.as_str()]);
    }

    #[tokio::test]
    async fn cookies_are_strict_httponly_and_secure_over_https() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/unused")
            .unwrap();
        let token = AdminToken::new("t").unwrap();
        let plain = ConsoleSessions::new(pool.clone(), &token, DEFAULT_TTL, false);
        assert_eq!(
            plain.cookie("x", 60),
            "sb_session=x; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        let secure = ConsoleSessions::new(pool, &token, DEFAULT_TTL, true);
        assert!(secure.cookie("x", 60).ends_with("; Secure"));
        // A different admin token stores a different hash for the same id.
        let other = ConsoleSessions::new(
            plain.pool.clone(),
            &AdminToken::new("u").unwrap(),
            DEFAULT_TTL,
            false,
        );
        assert_ne!(plain.hash("x"), other.hash("x"));
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
