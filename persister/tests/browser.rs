//! The dashboard in a real headless Chromium, driven over the Chrome DevTools Protocol: sign in
//! through the form, find a seeded call in the list, open it, read its transcript, and keep a
//! screenshot (`target/test-artifacts/dashboard.png`). Every page must work under the console's
//! Content-Security-Policy without a single violation, and the policy must block inline script.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const T0: i64 = 1_767_225_600_000;

fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    anyhow::bail!(
        "Chromium is not installed: the dashboard browser test needs it. Run scripts/setup \
         (apt-get install chromium) or set CHROMIUM to the browser binary"
    )
}

/// One page of the browser, over a flattened DevTools session.
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            msg["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(msg.to_string())).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .with_context(|| format!("no answer to {method}"))?
                .context("DevTools connection closed")??;
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    anyhow::bail!("{method}: {error}");
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, what: &str, expression: &str) -> anyhow::Result<()> {
        for _ in 0..150 {
            if self.eval(expression).await.ok() == Some(Value::Bool(true)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.eval("location.href").await.unwrap_or_default();
        let text = self
            .eval("document.body ? document.body.innerText : ''")
            .await
            .unwrap_or_default();
        anyhow::bail!("timed out waiting for {what} (at {url}; page text: {text})")
    }
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() -> anyhow::Result<()> {
    let browser = chromium()?;
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000B01";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(sid, events.len() as i64).await?;

    let profile = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", browser.display()))?;

    let result = drive(&fx, sid, profile.path()).await;
    let _ = child.kill().await;
    result?;
    fx.stop().await
}

/// Fails if the current page saw any Content-Security-Policy violation.
async fn no_violations(cdp: &mut Cdp, page: &str) -> anyhow::Result<()> {
    let seen = cdp.eval("window.__csp").await?;
    anyhow::ensure!(
        seen == json!([]),
        "{page} violated the Content-Security-Policy: {seen}"
    );
    Ok(())
}

async fn drive(fx: &Fixture, sid: &str, profile: &std::path::Path) -> anyhow::Result<()> {
    // Chromium writes its DevTools port and browser path here once it listens.
    let port_file = profile.join("DevToolsActivePort");
    let endpoint = switchboard_testkit::eventually(
        Duration::from_secs(30),
        "Chromium's DevToolsActivePort",
        || {
            let port_file = port_file.clone();
            async move {
                let text = tokio::fs::read_to_string(&port_file).await.ok()?;
                let mut lines = text.lines();
                let port = lines.next()?.trim().to_owned();
                let path = lines.next()?.trim().to_owned();
                Some(format!("ws://127.0.0.1:{port}{path}"))
            }
        },
    )
    .await?;
    let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await?;
    let mut cdp = Cdp {
        ws,
        next_id: 0,
        session: None,
    };
    let target = cdp
        .call("Target.createTarget", json!({"url": "about:blank"}))
        .await?;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await?;
    cdp.session = attached["sessionId"].as_str().map(str::to_owned);
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await?;

    // Every document records the Content-Security-Policy violations it sees.
    cdp.call("Page.enable", json!({})).await?;
    cdp.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', \
            (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
    )
    .await?;

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
    cdp.eval(&format!(
        "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
        json!(TOKEN)
    ))
    .await?;

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
    assert!(text.contains(&format!("Call {sid}")), "{text}");
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

    let shot = cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().context("no screenshot data")?)?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = switchboard_testkit::workspace_root().join("target/test-artifacts");
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::write(dir.join("dashboard.png"), &png).await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}
