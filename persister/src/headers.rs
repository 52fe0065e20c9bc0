//! The security headers on every response of the persister's HTTP server.
//!
//! The dashboard shows what callers said, which is text anyone who phones in controls; the
//! headers make sure that text can only ever be text:
//!
//! - `Content-Security-Policy`: scripts, styles and fetches only from this origin (the pages
//!   have no inline script or style), no plugins, no `<base>`, forms post only here, and no
//!   other site may frame the console (`frame-ancestors 'none'`, with `X-Frame-Options: DENY`
//!   for older browsers);
//! - `X-Content-Type-Options: nosniff`: a JSON answer is never run as script or styles;
//! - `Referrer-Policy: no-referrer`: call ids in console URLs do not leak to links followed;
//! - `Cache-Control: no-store` unless the handler chose otherwise: call records stay out of
//!   shared caches and the browser's disk.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;

/// The console's policy. `img-src 'self'` is for the browser's favicon request; `media-src
/// blob:` lets the call page play the recording it fetched (through `connect-src 'self'`, with
/// the session) from memory, and nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; media-src blob:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The policy served: [`CONTENT_SECURITY_POLICY`], plus the gateway's WebSocket origin in
/// `connect-src` when test calls are configured (`socket_origin`, e.g. `wss://gw.example.com`),
/// (The test-call page plays call audio through Web Audio, which `media-src` does not cover.)
pub fn policy(socket_origin: Option<&str>) -> HeaderValue {
    let policy = match socket_origin {
        Some(origin) => CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' {origin}"),
        ),
        None => CONTENT_SECURITY_POLICY.to_owned(),
    };
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY))
}

/// Adds the headers to `response` (an `axum::middleware::map_response_with_state` function;
/// the state is the policy from [`policy`]).
pub async fn secure(State(policy): State<HeaderValue>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
