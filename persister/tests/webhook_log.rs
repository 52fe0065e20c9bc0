//! The console's view of the notifier's delivery log when there is none to read: not
//! configured (503 naming `NOTIFIER_URL`), unreachable (502 saying why), or configured wrongly
//! (refused at start). The working path runs in `notifier/tests/console.rs`.

mod common;

use common::*;
use serde_json::Value;
use switchboard_testkit::free_port;

async fn answer(fx: &Fixture, path: &str, post: bool) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}{path}", fx.base);
    let request = if post {
        fx.http.post(url)
    } else {
        fx.http.get(url)
    };
    let response = request.bearer_auth(TOKEN).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Every route of the console's delivery log (path, whether it is a POST).
const ROUTES: [(&str, bool); 5] = [
    ("/api/sessions/CA1/webhooks", false),
    (
        "/api/webhooks/deliveries?endpoint=http%3A%2F%2Fcrm%2Fhook&state=failed",
        false,
    ),
    ("/api/webhooks/endpoints", false),
    ("/api/webhooks/deliveries/msg_1/resend", true),
    (
        "/api/webhooks/endpoints/enable?endpoint=http%3A%2F%2Fcrm%2Fhook",
        true,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifier_url_the_log_is_not_configured() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let (status, body) = answer(&fx, "/api/sessions/CA1/webhooks", false).await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("NOTIFIER_URL"),
        "{body}"
    );
    for (path, post) in ROUTES {
        let (status, body) = answer(&fx, path, post).await?;
        assert_eq!(status, 503, "{path}: {body}");
        let url = format!("{}{path}", fx.base);
        let unsigned = if post {
            fx.http.post(url)
        } else {
            fx.http.get(url)
        };
        assert_eq!(unsigned.send().await?.status(), 401, "{path}");
    }
    fx.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notifier_is_a_bad_gateway_saying_why() -> anyhow::Result<()> {
    let port = free_port();
    let fx = Fixture::start_with(|c| {
        c.webhook_log.notifier_url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await?;
    for (path, post) in ROUTES {
        let (status, body) = answer(&fx, path, post).await?;
        assert_eq!(status, 502, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains("unavailable") && error.contains("refused"),
            "{body}"
        );
    }
    fx.stop().await
}

#[tokio::test]
async fn a_notifier_url_that_is_not_an_http_base_is_refused() -> anyhow::Result<()> {
    let token = switchboard_service::redact::Secret::new(TOKEN);
    for url in ["ftp://notifier", "notifier:8084", "http://"] {
        let args = persister::webhook_log::WebhookLogArgs {
            notifier_url: Some(url.into()),
        };
        let refused = persister::webhook_log::WebhookLog::new(&args, &token);
        assert!(
            matches!(
                refused,
                Err(persister::webhook_log::WebhookLogConfigError::Url(_))
            ),
            "{url}: {refused:?}"
        );
    }
    Ok(())
}
