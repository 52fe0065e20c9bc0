//! The console's campaigns routes when there is no dialer to pass them to: not configured (503
//! naming `DIALER_URL`), unreachable (502 saying why), configured wrongly (refused at start),
//! and always behind the console's sign-in. The working path, against a real dialer, runs in
//! `e2e/tests/campaigns_console.rs`.

mod common;

use common::*;
use serde_json::Value;
use switchboard_testkit::free_port;

/// Every kind of campaigns route the console passes on (method, path).
const ROUTES: [(&str, &str); 8] = [
    ("GET", "/api/campaigns"),
    ("POST", "/api/campaigns"),
    ("GET", "/api/campaigns/0190f0f0-0000-7000-8000-000000000000"),
    (
        "POST",
        "/api/campaigns/0190f0f0-0000-7000-8000-000000000000/pause",
    ),
    (
        "GET",
        "/api/campaigns/0190f0f0-0000-7000-8000-000000000000/contacts.csv",
    ),
    ("GET", "/api/dnc"),
    ("POST", "/api/dnc"),
    ("DELETE", "/api/dnc/%2B15550001111"),
];

async fn answer(
    fx: &Fixture,
    method: &str,
    path: &str,
    token: bool,
) -> anyhow::Result<(u16, Value)> {
    let mut request = fx
        .http
        .request(method.parse()?, format!("{}{path}", fx.base))
        .header("content-type", "application/json")
        .body("{}");
    if token {
        request = request.bearer_auth(TOKEN);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dialer_url_campaigns_are_not_configured() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    for (method, path) in ROUTES {
        let (status, body) = answer(&fx, method, path, true).await?;
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("DIALER_URL"),
            "{body}"
        );
        let (status, body) = answer(&fx, method, path, false).await?;
        assert_eq!(status, 401, "{method} {path} signed out: {body}");
    }
    // The page itself is behind the sign-in too.
    let page = fx.http.get(format!("{}/campaigns", fx.base)).send().await?;
    assert!(
        page.status() == 303 || page.url().path() == "/login",
        "{} {}",
        page.status(),
        page.url()
    );
    fx.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_dialer_is_a_bad_gateway_saying_why() -> anyhow::Result<()> {
    let port = free_port();
    let fx = Fixture::start_with(|c| {
        c.dialer.dialer_url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await?;
    for (method, path) in ROUTES {
        let (status, body) = answer(&fx, method, path, true).await?;
        assert_eq!(status, 502, "{method} {path}: {body}");
        let error = body["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains("dialer is unavailable") && error.contains("refused"),
            "{body}"
        );
        let (status, _) = answer(&fx, method, path, false).await?;
        assert_eq!(status, 401, "{method} {path} signed out");
    }
    fx.stop().await
}

#[tokio::test]
async fn a_dialer_url_that_is_not_an_http_base_stops_the_persister() -> anyhow::Result<()> {
    use persister::campaigns::{Dialer, DialerArgs, DialerConfigError};
    let token = switchboard_service::redact::Secret::new(TOKEN);
    for url in [
        "ftp://dialer",
        "dialer:8085",
        "http://",
        "http://dialer?x=1",
    ] {
        let args = DialerArgs {
            dialer_url: Some(url.into()),
        };
        let refused = Dialer::new(&args, &token);
        assert!(
            matches!(refused, Err(DialerConfigError::Url(_))),
            "{url}: {refused:?}"
        );
    }
    // And the process refuses to start with it, before it reaches for anything else.
    let mut config = <persister::Config as clap::Parser>::try_parse_from([
        "persister",
        "--database-url",
        "postgres://switchboard@127.0.0.1:1/switchboard",
        "--admin-token",
        TOKEN,
        "--nats-url",
        "nats://127.0.0.1:1",
    ])?;
    config.dialer.dialer_url = Some("dialer:8085".into());
    let stopped = persister::run(config, std::future::pending()).await;
    assert!(
        matches!(stopped, Err(persister::RunError::Dialer(_))),
        "{stopped:?}"
    );
    assert!(
        stopped
            .err()
            .is_some_and(|e| e.to_string().contains("DIALER_URL")),
    );
    Ok(())
}
