//! An S3-compatible server for tests: moto's server mode (`moto_server`, from PyPI through
//! `requirements-dev.txt`), on a random port, with one bucket, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// The moto server binary: `MOTO_SERVER_BIN`, else the workspace's `.venv/bin/moto_server`,
/// else `moto_server` on `PATH`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER_BIN") {
        return p.into();
    }
    let venv = crate::workspace_root().join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

/// A running S3-compatible server holding one bucket.
pub struct S3Server {
    child: Child,
    port: u16,
    bucket: String,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        let port = crate::free_port();
        let bin = binary();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (run scripts/setup)", bin.display()))?;
        let server = Self {
            child,
            port,
            bucket: bucket.to_owned(),
        };
        // CreateBucket: moto takes unsigned requests.
        let create = format!("/{bucket}");
        crate::eventually(
            Duration::from_secs(30),
            "S3 server up, bucket created",
            || server.request("PUT", &create),
        )
        .await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment that points the `AWS_*` settings of a service at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The keys under `prefix` in the bucket (ListObjectsV2, unsigned).
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let body = self
            .request(
                "GET",
                &format!("/{}?list-type=2&prefix={prefix}", self.bucket),
            )
            .await
            .context("listing the bucket")?;
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect())
    }

    /// One plain HTTP/1.1 request; the body of a 2xx answer.
    async fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        let status = answer.split(' ').nth(1)?;
        status.starts_with('2').then(|| {
            answer
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default()
        })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
