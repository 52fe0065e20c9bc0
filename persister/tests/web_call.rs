//! Test calls from the console: `GET /api/agents`, `POST /api/web-call-ticket`, the
//! `/test-call` page and its assets, and the policy that lets the page reach the gateway.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard_service::redact::Secret;
use switchboard_service::web_call::{TicketKey, is_web_call};

const SECRET: &str = "web-call-s3cret";
const GATEWAY: &str = "https://GW.example.com";

fn demo_agents() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents/agents.toml")
}

async fn configured() -> anyhow::Result<Fixture> {
    Fixture::start_with(|config| {
        config.web_call.web_call_secret = Some(Secret::new(SECRET));
        config.web_call.web_call_url = Some(GATEWAY.into());
        config.web_call.agents_file = Some(demo_agents());
    })
    .await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_signed_in_user_gets_a_ticket_the_gateway_accepts() -> anyhow::Result<()> {
    let fx = configured().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = format!("{}/api/web-call-ticket", fx.base);

    // Anonymous: refused.
    let r = http
        .post(&url)
        .json(&json!({"agent": "front-desk"}))
        .send()
        .await?;
    assert_eq!(r.status(), 401);

    // Signed in with a session cookie.
    let r = http
        .post(format!("{}/login", fx.base))
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    let cookie = r.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = http
        .post(&url)
        .header("cookie", &cookie)
        .json(&json!({"agent": "front-desk"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await?;
    let call_sid = body["call_sid"].as_str().unwrap();
    assert!(is_web_call(call_sid));
    let ticket = body["ticket"].as_str().unwrap();
    let key = TicketKey::new(SECRET).unwrap();
    let granted = key.verify(ticket, "front-desk", unix_now())?;
    assert_eq!(granted.call_id, call_sid);
    assert!(granted.user.starts_with("console:"), "{}", granted.user);
    assert!(granted.expires <= unix_now() + 60);
    // The socket URL is on the gateway, with the agent and the ticket.
    let socket = body["url"].as_str().unwrap();
    let expected = format!(
        "wss://gw.example.com/web-call?{}",
        serde_urlencoded::to_string([("agent", "front-desk"), ("ticket", ticket)])?
    );
    assert_eq!(socket, expected);

    // The admin token works too, and counts as the admin; a second ticket is a new call.
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"agent": "front-desk"}))
        .send()
        .await?;
    let body: Value = r.json().await?;
    let granted2 = key.verify(body["ticket"].as_str().unwrap(), "front-desk", unix_now())?;
    assert_eq!(granted2.user, "admin");
    assert_ne!(granted2.call_id, granted.call_id);

    // Bad requests.
    for bad in [
        json!({}),
        json!({"agent": ""}),
        json!({"agent": "a\u{0007}"}),
    ] {
        let r = http.post(&url).bearer_auth(TOKEN).json(&bad).send().await?;
        assert_eq!(r.status(), 400, "{bad}");
    }
    fx.stop().await
}

#[tokio::test]
async fn the_page_lists_the_agents_and_may_connect_to_the_gateway() -> anyhow::Result<()> {
    let fx = configured().await?;
    let r = fx.get("/api/agents").await?;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await?;
    let ids: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"front-desk"), "{ids:?}");
    // Whether each agent records its calls (the demo's front desk does).
    let desk = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "front-desk")
        .unwrap();
    assert_eq!(desk["record"], Value::Bool(true));

    let page = fx.get("/test-call").await?;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(
        csp.contains("connect-src 'self' wss://gw.example.com;"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let html = page.text().await?;
    assert!(html.contains("/assets/test-call.js") && !html.contains("<script>"));
    for asset in ["/assets/test-call.js", "/assets/web-call-worklet.js"] {
        let r = fx.http.get(format!("{}{asset}", fx.base)).send().await?;
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            r.headers()["content-type"]
                .to_str()?
                .starts_with("text/javascript")
        );
    }
    fx.stop().await
}

#[tokio::test]
async fn without_settings_test_calls_say_what_to_set() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let r = fx
        .http
        .post(format!("{}/api/web-call-ticket", fx.base))
        .bearer_auth(TOKEN)
        .json(&json!({"agent": "front-desk"}))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await?;
    assert!(body["error"].as_str().unwrap().contains("WEB_CALL_SECRET"));
    let r = fx.get("/api/agents").await?;
    assert_eq!(r.status(), 503);
    let csp = fx.get("/test-call").await?.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    fx.stop().await
}
