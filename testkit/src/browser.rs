//! A real headless Chromium driven over the Chrome DevTools Protocol, for the console's browser
//! tests. Chromium is required (`scripts/setup` installs it); without it the tests fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Chromium binary: `CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
pub fn chromium() -> anyhow::Result<PathBuf> {
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
        "Chromium is not installed: the browser tests need it. Run scripts/setup \
         (apt-get install chromium) or set CHROMIUM to the browser binary"
    )
}

/// A headless Chromium with its own profile, killed when dropped.
pub struct Browser {
    child: tokio::process::Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless with the usual test flags plus `extra`.
    pub fn launch(extra: &[String]) -> anyhow::Result<Self> {
        let browser = chromium()?;
        let profile = tempfile::tempdir()?;
        let child = tokio::process::Command::new(&browser)
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
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", browser.display()))?;
        Ok(Self { child, profile })
    }

    /// The browser's profile directory.
    pub fn profile(&self) -> &Path {
        self.profile.path()
    }

    /// Opens a new page (1280x900) and attaches to it.
    pub async fn page(&self) -> anyhow::Result<Cdp> {
        // Chromium writes its DevTools port and browser path here once it listens.
        let port_file = self.profile.path().join("DevToolsActivePort");
        let endpoint = crate::eventually(
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
        Ok(cdp)
    }

    /// Stops the browser.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One page of the browser, over a flattened DevTools session.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    /// Calls DevTools `method` and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
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
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page, for at most `within`.
    pub async fn wait_for_within(
        &mut self,
        within: Duration,
        what: &str,
        expression: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
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

    /// Waits (up to 15 s) until `expression` is true in the page.
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> anyhow::Result<()> {
        self.wait_for_within(Duration::from_secs(15), what, expression)
            .await
    }

    /// Navigates to `url`.
    pub async fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({ "url": url })).await?;
        Ok(())
    }

    /// Records every Content-Security-Policy violation of the documents opened from now on
    /// in `window.__csp` (see [`Cdp::no_csp_violations`]).
    pub async fn record_csp_violations(&mut self) -> anyhow::Result<()> {
        self.call("Page.enable", json!({})).await?;
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', \
                (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
        )
        .await?;
        Ok(())
    }

    /// Fails naming them if the page violated its Content-Security-Policy.
    pub async fn no_csp_violations(&mut self) -> anyhow::Result<()> {
        let seen = self.eval("window.__csp").await?;
        anyhow::ensure!(
            seen == json!([]),
            "the page violated the Content-Security-Policy: {seen}"
        );
        Ok(())
    }

    /// Signs in to the console at `base` with `token`; waits for the calls list it lands on.
    pub async fn sign_in(&mut self, base: &str, token: &str) -> anyhow::Result<()> {
        self.navigate(&format!("{base}/login")).await?;
        self.wait_for("the sign-in form", "!!document.getElementById('token')")
            .await?;
        self.eval(&format!(
            "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
            json!(token)
        ))
        .await?;
        self.wait_for("the calls list", "location.pathname === '/sessions'")
            .await
    }

    /// A PNG screenshot of the page, written to `target/test-artifacts/<name>`.
    pub async fn screenshot(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("no screenshot data")?)?;
        anyhow::ensure!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = crate::workspace_root().join("target/test-artifacts");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(name);
        tokio::fs::write(&path, &png).await?;
        Ok(path)
    }
}
