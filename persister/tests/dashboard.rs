//! The dashboard's sign-in and pages over HTTP: random session cookies with an expiry, shared by
//! replicas and revoked on sign-out, `Secure` over https, and the security headers.

mod common;

use common::*;
use serde_json::Value;

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Signs in at `base`; returns the `Set-Cookie` header and the `name=value` pair.
async fn sign_in(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    let r = http
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_redirection(), "sign-in: {}", r.status());
    anyhow::ensure!(r.headers()["location"] == "/sessions");
    let set_cookie = r.headers()["set-cookie"].to_str()?.to_owned();
    let pair = set_cookie
        .split(';')
        .next()
        .expect("a cookie pair")
        .to_owned();
    Ok((set_cookie, pair))
}

async fn status(http: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<u16> {
    Ok(http
        .get(url)
        .header("cookie", cookie)
        .send()
        .await?
        .status()
        .as_u16())
}

#[tokio::test]
async fn sign_in_gives_a_random_httponly_session_that_opens_pages_and_api() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let http = client()?;
    let url = |p: &str| format!("{}{p}", fx.base);

    // Signed out: pages redirect to the sign-in form, the API answers 401.
    for path in ["/sessions", "/sessions/CA123", "/webhooks", "/analytics"] {
        let r = http.get(url(path)).send().await?;
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(r.headers()["location"], "/login");
    }
    let r = http.get(url("/login")).send().await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains(r#"name="token""#));
    assert_eq!(http.get(url("/assets/app.js")).send().await?.status(), 200);

    // A wrong token: back to the form with an error, no cookie, no session.
    let r = http
        .post(url("/login"))
        .form(&[("token", "wrong")])
        .send()
        .await?;
    assert_eq!(r.headers()["location"], "/login?error=1");
    assert!(r.headers().get("set-cookie").is_none());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&fx.pool)
        .await?;
    assert_eq!(rows, 0);

    let (set_cookie, cookie) = sign_in(&http, &fx.base).await?;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    // Served over plain http (no PUBLIC_URL): not `Secure`, or the browser would drop it.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the raw token is in the cookie"
    );
    // A random id, different at every sign-in; the table holds neither it nor the token.
    let id = cookie.strip_prefix("sb_session=").expect("sb_session");
    assert_eq!(id.len(), 64, "{id}");
    let (_, second) = sign_in(&http, &fx.base).await?;
    assert_ne!(second, cookie);
    let stored: Vec<(Vec<u8>, f64)> = sqlx::query_as(
        "SELECT id_hash, EXTRACT(EPOCH FROM expires_at - created_at)::float8 \
         FROM console_sessions",
    )
    .fetch_all(&fx.pool)
    .await?;
    assert_eq!(stored.len(), 2);
    for (hash, lifetime) in &stored {
        assert_ne!(hash.as_slice(), id.as_bytes());
        assert!((lifetime - 43_200.0).abs() < 5.0, "lifetime {lifetime}");
    }

    // Signed in: pages and the API.
    let r = http
        .get(url("/sessions"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains("Live calls"));
    assert_eq!(status(&http, &url("/sessions/CA123"), &cookie).await?, 200);
    let r = http
        .get(url("/api/sessions"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await?;
    assert!(page["sessions"].is_array());
    // The bearer token opens pages too; a forged or made-up cookie opens nothing.
    let r = http.get(url("/sessions")).bearer_auth(TOKEN).send().await?;
    assert_eq!(r.status(), 200);
    for forged in [
        format!("sb_session={TOKEN}"),
        format!("sb_session={}", "0".repeat(64)),
        format!("sb_session={}", id.to_uppercase()),
    ] {
        assert_eq!(status(&http, &url("/api/sessions"), &forged).await?, 401);
        assert_eq!(status(&http, &url("/sessions"), &forged).await?, 303);
    }

    // Sign-out clears the cookie and revokes the session: replaying the old cookie fails.
    let r = http
        .post(url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.headers()["location"], "/login");
    assert!(r.headers()["set-cookie"].to_str()?.contains("Max-Age=0"));
    assert_eq!(status(&http, &url("/api/sessions"), &cookie).await?, 401);
    assert_eq!(status(&http, &url("/sessions"), &cookie).await?, 303);
    // The other browser's session is untouched.
    assert_eq!(status(&http, &url("/api/sessions"), &second).await?, 200);
    fx.stop().await
}

#[tokio::test]
async fn sessions_expire_are_shared_by_replicas_and_secure_over_https() -> anyhow::Result<()> {
    let fx = Fixture::start_with(|config| {
        config.public_url = Some("https://console.example.com".to_owned());
        config.session_ttl_seconds = 600;
    })
    .await?;
    let http = client()?;
    let (set_cookie, cookie) = sign_in(&http, &fx.base).await?;
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=600"), "{set_cookie}");
    let api = format!("{}/api/sessions", fx.base);
    assert_eq!(status(&http, &api, &cookie).await?, 200);
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM expires_at - created_at)::float8 FROM console_sessions",
    )
    .fetch_one(&fx.pool)
    .await?;
    assert!((lifetime - 600.0).abs() < 5.0, "lifetime {lifetime}");

    // A second replica on the same database honours the session and its revocation.
    let replica = persister_on(&fx).await?;
    let replica_api = format!("{}/api/sessions", replica.base);
    assert_eq!(status(&http, &replica_api, &cookie).await?, 200);

    // Time passes (the database clock decides): the session has expired everywhere.
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&fx.pool)
        .await?;
    assert_eq!(status(&http, &api, &cookie).await?, 401);
    assert_eq!(status(&http, &replica_api, &cookie).await?, 401);
    let page = format!("{}/sessions", fx.base);
    assert_eq!(status(&http, &page, &cookie).await?, 303);
    // The next sign-in sweeps the expired row.
    let (_, fresh) = sign_in(&http, &replica.base).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&fx.pool)
        .await?;
    assert_eq!(rows, 1);
    assert_eq!(status(&http, &api, &fresh).await?, 200);
    // Signing out on one replica signs out on the other.
    http.post(format!("{}/logout", replica.base))
        .header("cookie", &fresh)
        .send()
        .await?;
    assert_eq!(status(&http, &api, &fresh).await?, 401);
    replica.stop().await?;
    fx.stop().await
}

#[tokio::test]
async fn every_response_carries_the_security_headers() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let http = client()?;
    let (_, cookie) = sign_in(&http, &fx.base).await?;
    for path in [
        "/login",
        "/sessions",
        "/sessions/CA123",
        "/webhooks",
        "/analytics",
        "/api/sessions",
        "/api/sessions/CA_missing",
        "/api/analytics",
        "/api/sessions.csv",
        "/assets/app.js",
        "/assets/app.css",
    ] {
        let r = http
            .get(format!("{}{path}", fx.base))
            .header("cookie", &cookie)
            .send()
            .await?;
        let h = r.headers();
        let csp = h["content-security-policy"].to_str()?;
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
    // Also on refusals and sign-in redirects.
    let r = http.get(format!("{}/api/sessions", fx.base)).send().await?;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http.get(format!("{}/sessions", fx.base)).send().await?;
    assert!(r.headers().contains_key("content-security-policy"));
    // API answers stay out of caches.
    let r = http
        .get(format!("{}/api/sessions", fx.base))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.headers()["cache-control"], "no-store");

    // The pages run no inline script: every <script> has a src.
    for page in [
        include_str!("../assets/login.html"),
        include_str!("../assets/sessions.html"),
        include_str!("../assets/session.html"),
        include_str!("../assets/analytics.html"),
    ] {
        for tag in page.split("<script").skip(1) {
            assert!(tag.trim_start().starts_with("src="), "inline script: {tag}");
        }
        assert!(!page.contains("style="), "inline style in a page");
        let handler = page.split(" on").skip(1).any(|rest| {
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler in a page");
    }
    fx.stop().await
}
