//! The dashboard's sign-in and pages over HTTP: the cookie, redirects, and the API with the cookie.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn sign_in_gives_a_derived_httponly_cookie_that_opens_pages_and_api() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = |p: &str| format!("{}{p}", fx.base);

    // Signed out: pages redirect to the sign-in form, the API answers 401.
    for path in ["/sessions", "/sessions/CA123"] {
        let r = http.get(url(path)).send().await?;
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(r.headers()["location"], "/login");
    }
    let r = http.get(url("/login")).send().await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains(r#"name="token""#));
    assert_eq!(http.get(url("/assets/app.js")).send().await?.status(), 200);

    // A wrong token: back to the form with an error, no cookie.
    let r = http
        .post(url("/login"))
        .form(&[("token", "wrong")])
        .send()
        .await?;
    assert_eq!(r.headers()["location"], "/login?error=1");
    assert!(r.headers().get("set-cookie").is_none());

    let r = http
        .post(url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/sessions");
    let set_cookie = r.headers()["set-cookie"].to_str()?.to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the raw token is in the cookie"
    );
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("a cookie pair")
        .to_owned();

    // Signed in: pages and the API.
    let r = http
        .get(url("/sessions"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains("Live calls"));
    let r = http
        .get(url("/sessions/CA123"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let r = http
        .get(url("/api/sessions"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await?;
    assert!(page["sessions"].is_array());
    // The bearer token opens pages too; a forged cookie opens nothing.
    let r = http.get(url("/sessions")).bearer_auth(TOKEN).send().await?;
    assert_eq!(r.status(), 200);
    let r = http
        .get(url("/api/sessions"))
        .header("cookie", format!("sb_session={TOKEN}"))
        .send()
        .await?;
    assert_eq!(r.status(), 401);

    // Sign-out clears the cookie.
    let r = http
        .post(url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(r.headers()["location"], "/login");
    assert!(r.headers()["set-cookie"].to_str()?.contains("Max-Age=0"));
    fx.stop().await
}
