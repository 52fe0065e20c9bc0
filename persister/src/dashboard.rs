//! The dashboard: static pages (embedded at build time; no front-end build step) that read the
//! JSON API, and the sign-in that gives a browser its session cookie.
//!
//! - `GET /login`, `POST /login` (form field `token`), `POST /logout`;
//! - `GET /sessions`: calls list with search, filters and calls in progress (via `/api/live`);
//! - `GET /sessions/{call_sid}`: one call's timeline, facts, usage, cost and turn latency;
//! - `GET /assets/*`: the stylesheet and script.
//!
//! Pages accept the session cookie or the bearer token; without either they redirect to
//! `/login`. The cookie is `HttpOnly` (scripts cannot read it) and `SameSite=Strict` (other
//! sites cannot make the browser send it, which is what guards `POST /logout` and the API).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::{AdminToken, SESSION_COOKIE};

const LOGIN_HTML: &str = include_str!("../assets/login.html");
const SESSIONS_HTML: &str = include_str!("../assets/sessions.html");
const SESSION_HTML: &str = include_str!("../assets/session.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");

/// The dashboard routes.
pub fn router(token: Arc<AdminToken>) -> Router {
    let pages = Router::new()
        .route("/sessions", get(|| async { page(SESSIONS_HTML) }))
        .route("/sessions/{call_sid}", get(|| async { page(SESSION_HTML) }))
        .route_layer(middleware::from_fn_with_state(
            token.clone(),
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
        .with_state(token)
        .merge(pages)
}

/// Whether the request carries a valid session cookie.
pub fn has_session(token: &AdminToken, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| token.accepts_cookie(v))
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(html),
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn require_session(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| token.accepts(v));
    if bearer || has_session(&token, request.headers()) {
        next.run(request).await
    } else {
        Redirect::to("/login").into_response()
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(token): State<Arc<AdminToken>>, Form(form): Form<LoginForm>) -> Response {
    if !token.matches(form.token.trim()) {
        metrics::counter!("persister_login_failures_total").increment(1);
        return Redirect::to("/login?error=1").into_response();
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
        token.session_value()
    );
    with_cookie(Redirect::to("/sessions").into_response(), &cookie)
}

async fn logout() -> Response {
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    with_cookie(Redirect::to("/login").into_response(), &cookie)
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
