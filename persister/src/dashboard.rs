//! The dashboard: static pages (embedded at build time; no front-end build step) that read the
//! JSON API, and the sign-in that gives a browser its session cookie.
//!
//! - `GET /login`, `POST /login` (form field `token`), `POST /logout`;
//! - `GET /sessions`: calls list with filters kept in the URL, a count and a CSV export, and
//!   the calls in progress (caught up from the record, then followed via `/api/live`);
//! - `GET /sessions/{call_sid}`: one call's timeline (every item at its time in the call),
//!   facts, usage, cost and turn latency; live while the call goes on;
//! - `GET /webhooks`: the webhook endpoints (a disabled one can be enabled) and the deliveries
//!   across calls, filtered by endpoint and state (`?endpoint=&state=`), each with its attempts
//!   and a re-send for failed ones (via [`crate::webhook_log`]);
//! - `GET /campaigns`: outbound campaigns (state and progress, a new campaign from a CSV of
//!   contacts, pause / resume / cancel, the do-not-call list), and `?id=` one campaign's
//!   contacts with each attempt linked to its call, filtered by `?state=`, drawn by
//!   `campaigns.js` (via [`crate::campaigns`]);
//! - `GET /analytics`: the overview of a date range and agent (via `GET /api/analytics`),
//!   charts drawn as inline SVG by `analytics.js`, and the CSV export of the range's calls;
//! - `GET /test-call`: talk to an agent with the microphone, through the gateway's
//!   `GET /web-call` ([`crate::web_call`] issues the ticket);
//! - `GET /assets/*`: the stylesheet and scripts (`labels.js` holds the words for the
//!   contract's codes, from [`crate::labels`]) (the test call's audio runs in an
//!   AudioWorklet module, `web-call-worklet.js`).
//!
//! Pages accept a session cookie or the bearer token; without either they redirect to
//! `/login`. Sessions are random ids with an expiry ([`crate::console_sessions`]); the cookie is
//! `HttpOnly` (scripts cannot read it) and `SameSite=Strict` (other sites cannot make the
//! browser send it, which is what guards `POST /logout` and the API). The pages carry no inline
//! script or style, so they work under the strict `Content-Security-Policy` of
//! [`crate::headers`].

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::{Access, Verdict};

const LOGIN_HTML: &str = include_str!("../assets/login.html");
const SESSIONS_HTML: &str = include_str!("../assets/sessions.html");
const SESSION_HTML: &str = include_str!("../assets/session.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");
const WEBHOOKS_HTML: &str = include_str!("../assets/webhooks.html");
const TEST_CALL_HTML: &str = include_str!("../assets/test-call.html");
const TEST_CALL_JS: &str = include_str!("../assets/test-call.js");
const WEB_CALL_WORKLET_JS: &str = include_str!("../assets/web-call-worklet.js");
const ANALYTICS_HTML: &str = include_str!("../assets/analytics.html");
const ANALYTICS_JS: &str = include_str!("../assets/analytics.js");
const CAMPAIGNS_HTML: &str = include_str!("../assets/campaigns.html");
const CAMPAIGNS_JS: &str = include_str!("../assets/campaigns.js");

/// The dashboard routes.
pub fn router(access: Access) -> Router {
    let pages = Router::new()
        .route("/sessions", get(|| async { page(SESSIONS_HTML) }))
        .route("/sessions/{call_sid}", get(|| async { page(SESSION_HTML) }))
        .route("/webhooks", get(|| async { page(WEBHOOKS_HTML) }))
        .route("/analytics", get(|| async { page(ANALYTICS_HTML) }))
        .route("/campaigns", get(|| async { page(CAMPAIGNS_HTML) }))
        .route("/test-call", get(|| async { page(TEST_CALL_HTML) }))
        .route_layer(middleware::from_fn_with_state(
            access.clone(),
            require_session,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/sessions") }))
        .route("/login", get(|| async { page(LOGIN_HTML) }).post(login))
        .route("/logout", axum::routing::post(logout))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/labels.js",
            get(|| async { asset("text/javascript; charset=utf-8", &crate::labels::SCRIPT) }),
        )
        .route(
            "/assets/analytics.js",
            get(|| async { asset("text/javascript; charset=utf-8", ANALYTICS_JS) }),
        )
        .route(
            "/assets/campaigns.js",
            get(|| async { asset("text/javascript; charset=utf-8", CAMPAIGNS_JS) }),
        )
        .route(
            "/assets/test-call.js",
            get(|| async { asset("text/javascript; charset=utf-8", TEST_CALL_JS) }),
        )
        .route(
            "/assets/web-call-worklet.js",
            get(|| async { asset("text/javascript; charset=utf-8", WEB_CALL_WORKLET_JS) }),
        )
        .with_state(access)
        .merge(pages)
}

fn page(html: &'static str) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The session store could not be read: say so rather than pretend the browser is signed out.
fn store_down(error: sqlx::Error) -> Response {
    tracing::warn!(%error, "console session store unavailable");
    metrics::counter!(crate::metrics::API_DB_ERRORS).increment(1);
    (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
}

async fn require_session(State(access): State<Access>, request: Request, next: Next) -> Response {
    match access.check(request.headers()).await {
        Ok(Verdict::Allowed) => next.run(request).await,
        Ok(Verdict::WrongToken | Verdict::Missing) => Redirect::to("/login").into_response(),
        Err(error) => store_down(error),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(access): State<Access>, Form(form): Form<LoginForm>) -> Response {
    if !access.token.matches(form.token.trim()) {
        metrics::counter!(crate::metrics::LOGIN_FAILURES).increment(1);
        return Redirect::to("/login?error=1").into_response();
    }
    match access.sessions.create().await {
        Ok(cookie) => with_cookie(Redirect::to("/sessions").into_response(), &cookie),
        Err(error) => store_down(error),
    }
}

async fn logout(State(access): State<Access>, headers: HeaderMap) -> Response {
    match access.sessions.revoke(&headers).await {
        Ok(cookie) => with_cookie(Redirect::to("/login").into_response(), &cookie),
        Err(error) => store_down(error),
    }
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
