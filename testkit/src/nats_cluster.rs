//! A JetStream cluster of local nats-server processes for one test: nodes joined by routes, as
//! k8s/base/nats.yaml runs them, which a test can kill one at a time.
//!
//! The cluster is read through the servers' monitoring endpoints (`/jsz`, `/connz`), so a test
//! finds a stream's leader or the node a service is connected to without NATS credentials.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::NatsServer;

/// The cluster's name in its `cluster` block.
const CLUSTER_NAME: &str = "switchboard";

/// A running cluster; every node is killed (and its store removed) on drop.
pub struct NatsCluster {
    /// `None` once killed.
    nodes: Vec<Option<NatsServer>>,
    names: Vec<String>,
}

impl NatsCluster {
    /// Starts `size` nodes, each with `config` (e.g. the `authorization` block of production)
    /// plus a `cluster` block with routes to every node, and waits until JetStream has a meta
    /// leader that every node agrees on.
    pub async fn start(size: usize, config: &str) -> anyhow::Result<Self> {
        let route_ports: Vec<u16> = (0..size).map(|_| crate::free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let names: Vec<String> = (0..size).map(|i| format!("nats-{i}")).collect();
        let starts = route_ports.iter().zip(&names).map(|(port, name)| {
            let node_config = format!(
                "{config}\ncluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{port}\n  \
                 routes: [{routes}]\n}}\n"
            );
            async move { NatsServer::spawn(&node_config, Some(name)).await }
        });
        let nodes = futures::future::try_join_all(starts).await?;
        let cluster = Self {
            nodes: nodes.into_iter().map(Some).collect(),
            names,
        };
        cluster.wait_meta_leader().await?;
        Ok(cluster)
    }

    /// The client URLs of the live nodes, comma separated (the form of `NATS_URL`).
    pub fn urls(&self) -> String {
        self.live()
            .map(|(_, node)| node.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`, if it is alive.
    pub fn node(&self, i: usize) -> Option<&NatsServer> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Node `i`'s server name (`nats-<i>`).
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Kills node `i` with SIGKILL, as a crash or a lost host would.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.stop().await;
        }
    }

    /// The live node leading `stream` (a stream's name, `KV_<bucket>` for a bucket), once one
    /// does: after a leader dies the others elect a new one within seconds.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<usize> {
        crate::eventually(
            Duration::from_secs(30),
            &format!("a leader of stream {stream}"),
            || async move {
                for (_, node) in self.live() {
                    let jsz = monitor(node, "/jsz?accounts=true&streams=true")
                        .await
                        .ok()?;
                    let leader = jsz["account_details"]
                        .as_array()?
                        .iter()
                        .filter_map(|a| a["stream_detail"].as_array())
                        .flatten()
                        .find(|s| s["name"] == stream)
                        .and_then(|s| s["cluster"]["leader"].as_str())
                        .and_then(|leader| self.index_of(leader));
                    if let Some(i) = leader.filter(|i| self.node(*i).is_some()) {
                        return Some(i);
                    }
                }
                None
            },
        )
        .await
    }

    /// The live node that a client named `name` (its first word, e.g. `call-worker`) is
    /// connected to, if any.
    pub async fn node_serving(&self, name: &str) -> Option<usize> {
        for (i, node) in self.live() {
            let Ok(connz) = monitor(node, "/connz?limit=1024").await else {
                continue;
            };
            let found = connz["connections"].as_array().is_some_and(|conns| {
                conns.iter().any(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.split_whitespace().next() == Some(name))
                })
            });
            if found {
                return Some(i);
            }
        }
        None
    }

    /// Every live node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.live()
            .map(|(i, node)| format!("----- {} -----\n{}", self.names[i], node.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn live(&self) -> impl Iterator<Item = (usize, &NatsServer)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Waits until every node knows the cluster's JetStream meta leader (before that, creating
    /// a stream fails).
    async fn wait_meta_leader(&self) -> anyhow::Result<()> {
        let size = self.nodes.len();
        crate::eventually(
            Duration::from_secs(30),
            "a JetStream meta leader known to every node",
            || async move {
                let mut leaders = Vec::new();
                for (_, node) in self.live() {
                    let jsz = monitor(node, "/jsz").await.ok()?;
                    let meta = &jsz["meta_cluster"];
                    if meta["cluster_size"].as_u64() != Some(size as u64) {
                        return None;
                    }
                    leaders.push(meta["leader"].as_str()?.to_owned());
                }
                let first = leaders.first()?;
                leaders.iter().all(|l| l == first).then_some(())
            },
        )
        .await
    }
}

/// GET `path` from `node`'s monitoring port, as JSON.
async fn monitor(node: &NatsServer, path: &str) -> anyhow::Result<Value> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", node.monitor_port())).await?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .context("monitoring endpoint timed out")??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(serde_json::from_str(body)?)
}
