//! Real infrastructure for Switchboard's tests: no mocks of our own parts.
//!
//! - [`nats::NatsServer`]: a nats-server (>= 2.10, JetStream on) on a random port, found through
//!   its ports file so tests run in parallel without port races;
//! - [`nats_cluster::NatsCluster`]: a JetStream cluster of such servers joined by routes, whose
//!   nodes a test can kill, with the stream leaders and client connections of each node;
//! - [`postgres::Postgres`]: a throwaway PostgreSQL cluster in a temp dir (as the `postgres` user
//!   when run as root), which tests can stop and start to simulate an outage;
//! - [`process::Service`]: one of the workspace's binaries run as a real process, with its log
//!   kept in a file and printed when a test fails;
//! - [`s3::S3Server`]: an S3-compatible server (moto's server mode) with one bucket, for
//!   the recording store;
//! - [`otlp::Collector`]: an in-process OTLP/gRPC trace collector that services export to;
//! - [`browser::Browser`]: a headless Chromium driven over the DevTools Protocol (console tests);
//! - [`in_process::InProcess`]: a service run in the test process as its binary runs it, stopped
//!   like SIGTERM would and required to exit cleanly in time;
//! - [`events::call_events`]: a call's events as JetStream stored them;
//! - [`eventually`]: retry an assertion until it holds or a deadline passes.
#![forbid(unsafe_code)]

pub mod browser;
pub mod events;
pub mod in_process;
pub mod nats;
pub mod nats_cluster;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod s3;

pub use nats::NatsServer;
pub use nats_cluster::NatsCluster;
pub use postgres::Postgres;
pub use process::Service;

use std::future::Future;
use std::time::Duration;

/// Retries `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.pop();
    dir
}
