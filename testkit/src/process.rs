//! Workspace binaries run as real processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The directory holding the workspace's built binaries: `SWITCHBOARD_BIN_DIR` if set (so a
/// benchmark can run two builds with the same command), else next to the running test binary,
/// which lives in `target/<profile>/deps`, or example, in `target/<profile>/examples`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir
}

/// A workspace binary by name; fails with a hint when it was not built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace binaries first (`cargo build --workspace --bins`, \
             which scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running service process. Its stdout and stderr go to a log file; dropping it kills it.
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts binary `name` with `env` (added to a clean-ish environment: `PATH`, `HOME` and
    /// `RUST_LOG` are inherited).
    pub fn spawn(name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::spawn_with_args(name, &[], env)
    }

    /// Like [`Service::spawn`] with command-line arguments.
    pub fn spawn_with_args(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let bin = binary(name)?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&bin);
        cmd.env_clear();
        for key in ["PATH", "HOME", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        if std::env::var("RUST_LOG").is_err() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            _dir: dir,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET http://<addr>/readyz` answers 200.
    pub async fn wait_ready(&mut self, addr: &str) -> anyhow::Result<()> {
        let url = format!("http://{addr}/readyz");
        let name = self.name.clone();
        let result = crate::eventually(Duration::from_secs(20), &format!("{name} ready"), || {
            let url = url.clone();
            async move { http_status(&url).await.filter(|s| *s == 200) }
        })
        .await;
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{name} exited with {status}:\n{}", self.log());
        }
        result.map(|_| ()).with_context(|| self.log())
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {timeout:?}", self.name))?
            .map_err(Into::into)
    }

    /// Sends signal `signal` (a name `kill` knows: `KILL`, `STOP`, `CONT`, `TERM`) to the
    /// process, as an operator or the kernel would (a crash, a paused VM).
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("the process has exited")?;
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed with {status}");
        }
        Ok(())
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

/// The status code of a plain HTTP/1.1 GET, or `None` when nothing answers.
async fn http_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}
