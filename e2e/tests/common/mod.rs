//! The outside consumers the end-to-end tests run next to the system: the example subscriber
//! (examples/crm-sync, TypeScript) under an outside NATS user, and a webhook receiver that
//! verifies every delivery with the official Standard Webhooks library (Python).
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use switchboard_e2e::{System, get_session, nats_password};
use switchboard_proto::permissions::OUTSIDE;
use switchboard_testkit::{free_port, workspace_root};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::ChildStdout;

/// The secret of the receiver's endpoint.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Places the dental scenario's phone call; the persister's record of it once it ended.
pub async fn place_call(system: &System) -> anyhow::Result<Value> {
    let report = switchboard_e2e::place_dental_call(system).await?;
    get_session(&system.persister, &report.call_sid)
        .await
        .with_context(|| system.logs())
}

/// examples/crm-sync under the shipped `outside` user.
pub struct Subscriber(tokio::process::Child);

impl Subscriber {
    pub fn start(system: &System, database_url: &str) -> anyhow::Result<Self> {
        let dir = workspace_root().join("examples/crm-sync");
        ensure!(
            dir.join("generated/switchboard.js").exists(),
            "examples/crm-sync is not set up; run scripts/setup"
        );
        let child = tokio::process::Command::new(dir.join("node_modules/.bin/tsx"))
            .arg("src/main.ts")
            .current_dir(&dir)
            .env("NATS_URL", system.nats_url().context("nats")?)
            .env("NATS_USER", OUTSIDE.user())
            .env("NATS_PASSWORD", nats_password(&OUTSIDE))
            .env("DATABASE_URL", database_url)
            .kill_on_drop(true)
            .spawn()
            .context("starting examples/crm-sync")?;
        Ok(Self(child))
    }

    /// SIGTERM, and the subscriber exits cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.0.id().context("pid")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(Duration::from_secs(10), self.0.wait()).await??;
        ensure!(status.success(), "crm-sync exited with {status}");
        Ok(())
    }
}

/// `notifier/tests/receiver.py`: verifies each delivery with the `standardwebhooks` library and
/// reports it as a JSON line.
pub struct WebhookReceiver {
    _child: tokio::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Where it listens.
    pub url: String,
}

impl WebhookReceiver {
    pub fn start() -> anyhow::Result<Self> {
        let root = workspace_root();
        let port = free_port();
        let mut child = tokio::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("notifier/tests/receiver.py"))
            .arg(port.to_string())
            .arg(SECRET)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("the Python receiver (run scripts/setup)")?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self {
            _child: child,
            lines,
            url: format!("http://127.0.0.1:{port}/hooks"),
        })
    }

    /// The `WEBHOOKS_FILE` of one endpoint, this receiver, asking for `events`.
    pub fn webhooks_file(&self, events: &[&str]) -> String {
        let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        format!(
            "[[endpoint]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [{}]\n\
             allow_private_network = true\n",
            self.url,
            events.join(", ")
        )
    }

    /// The next delivery's type and body; fails on a signature the library refused.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<(String, Value)> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .context("no webhook in time")??
            .context("the receiver exited")?;
        let got: Value = serde_json::from_str(&line)?;
        ensure!(got["verified"] == true, "signature refused: {got}");
        let body: Value = serde_json::from_str(got["body"].as_str().unwrap_or_default())?;
        Ok((got["type"].as_str().unwrap_or_default().to_owned(), body))
    }
}
