//! The dashboard in a real headless Chromium, driven over the Chrome DevTools Protocol: sign in
//! through the form, find a seeded call in the list, open it, read its transcript, and keep a
//! screenshot (`target/test-artifacts/dashboard.png`). Every page must work under the console's
//! Content-Security-Policy without a single violation, and the policy must block inline script.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard_testkit::browser::Browser;

const T0: i64 = 1_767_225_600_000;

#[tokio::test]
async fn the_dashboard_in_a_real_browser() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000B01";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(sid, events.len() as i64).await?;

    let browser = Browser::launch(&[])?;
    let result = drive(&fx, sid, &browser).await;
    browser.kill().await;
    result?;
    fx.stop().await
}

async fn drive(fx: &Fixture, sid: &str, browser: &Browser) -> anyhow::Result<()> {
    let mut cdp = browser.page().await?;

    record_csp_violations(&mut cdp).await?;

    // Signed out, the dashboard sends the browser to the sign-in form.
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}/sessions", fx.base)}),
    )
    .await?;
    cdp.wait_for(
        "the sign-in form",
        "location.pathname === '/login' && !!document.getElementById('token')",
    )
    .await?;
    no_violations(&mut cdp, "the sign-in form").await?;
    // The policy is enforced: a script injected inline does not run, and is reported.
    let ran = cdp
        .eval(
            "(() => { const s = document.createElement('script'); \
             s.textContent = 'window.__inline = true'; document.body.append(s); \
             return window.__inline === true; })()",
        )
        .await?;
    assert_eq!(ran, Value::Bool(false), "inline script ran despite the CSP");
    cdp.wait_for(
        "the blocked inline script reported",
        "window.__csp.length > 0",
    )
    .await?;
    // The sign-in error is shown by the page's script (no inline script any more).
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}/login?error=1", fx.base)}),
    )
    .await?;
    cdp.wait_for(
        "the sign-in error",
        "location.search === '?error=1' && document.getElementById('error') \
         && !document.getElementById('error').hidden",
    )
    .await?;
    no_violations(&mut cdp, "the sign-in form with an error").await?;
    submit_token(&mut cdp).await?;

    // The list, with the seeded call.
    let row = format!("tr[data-call-sid=\"{sid}\"]");
    cdp.wait_for(
        "the seeded call in the list",
        &format!(
            "location.pathname === '/sessions' && !!document.querySelector({})",
            json!(row)
        ),
    )
    .await?;
    let cookie_visible_to_scripts = cdp.eval("document.cookie.includes('sb_session')").await?;
    assert_eq!(
        cookie_visible_to_scripts,
        Value::Bool(false),
        "the cookie must be HttpOnly"
    );

    no_violations(&mut cdp, "the calls list").await?;

    // Open the call: its transcript, tool call and outcome are on the page.
    cdp.eval(&format!(
        "document.querySelector({}).click(); true",
        json!(format!("{row} a"))
    ))
    .await?;
    cdp.wait_for(
        "the call's transcript",
        "document.body.innerText.includes('I found your account, Maria Garcia')",
    )
    .await?;
    let text = cdp.eval("document.body.innerText").await?;
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains(sid), "{text}");
    assert!(
        text.contains("Call from +15550001234 to front-desk"),
        "{text}"
    );
    assert!(text.contains("lookup_customer"), "{text}");
    assert!(text.contains("interrupted after"), "{text}");
    assert!(text.contains("resolved"), "{text}");
    // The cost breakdown: the usage of an older worker (no model named) is priced as
    // gpt-realtime, whose prices are placeholders, and says so; Twilio minutes are unpriced.
    assert!(text.contains("audio input, cached"), "{text}");
    assert!(text.contains("gpt-realtime"), "{text}");
    assert!(text.contains("placeholder price"), "{text}");
    assert!(text.contains("minutes (call duration)"), "{text}");

    no_violations(&mut cdp, "the call page").await?;

    cdp.screenshot("dashboard.png").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}
