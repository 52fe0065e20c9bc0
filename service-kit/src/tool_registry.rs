//! The tool registry, the KV bucket `voice-tools`: one set of settings whoever opens it first.
//!
//! Tool servers (in any language), call-workers and the `switchboard` CLI all open the bucket
//! through [`open`], so the bucket has the same settings ([`bucket_config`]) no matter which
//! process creates it, and a bucket made with other settings (by an older release) is brought in
//! line. Two kinds of entries live in it:
//!
//! - `<tool>`: the tool's [`ToolSpec`](switchboard_proto::ToolSpec), the contract call-workers
//!   read when they offer tools to the model;
//! - `<tool>.<instance>`: one serving replica's heartbeat ([`Instance`], JSON), so operators see
//!   who serves each tool and a stopping replica knows whether it is the last one.
//!
//! Every replica re-puts both every [`REFRESH_EVERY`]; entries expire [`ENTRY_MAX_AGE`] after
//! their last put. So a tool leaves the model's tool list at once when its last replica stops
//! cleanly (it deletes its entries), and within [`ENTRY_MAX_AGE`] when its replicas die or lose
//! NATS (the heartbeat lapses).

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use switchboard_proto::TOOLS_BUCKET;

/// How often a serving replica re-puts its spec and heartbeat.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// How long an entry lives after its last put: three refreshes, so one slow NATS round trip does
/// not make a tool disappear, while a dead tool leaves the model's list within this bound.
pub const ENTRY_MAX_AGE: Duration = Duration::from_secs(15);

/// Why the registry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The bucket could neither be opened nor created.
    #[error("opening KV bucket `{TOOLS_BUCKET}`: {0}")]
    Bucket(String),
    /// Reading or writing an entry failed.
    #[error("{what} in KV bucket `{TOOLS_BUCKET}`: {message}")]
    Entry { what: String, message: String },
}

/// The settings of `voice-tools`: history 1 (only the current spec matters) and entries that
/// expire [`ENTRY_MAX_AGE`] after their last put.
pub fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: TOOLS_BUCKET.to_owned(),
        description:
            "Switchboard tool registry: <tool> -> ToolSpec, <tool>.<instance> -> heartbeat"
                .to_owned(),
        history: 1,
        max_age: ENTRY_MAX_AGE,
        ..Default::default()
    }
}

/// Opens `voice-tools`, creating it with [`bucket_config`] if missing. A bucket that exists with
/// another history, max age (made by an older release, whose entries never expired) or number of
/// replicas is updated to these settings ([`crate::storage::ensure_bucket`]); if this process may
/// not update it, it says so and uses it as is.
pub async fn open(js: &jetstream::Context) -> Result<kv::Store, RegistryError> {
    crate::storage::ensure_bucket(js, bucket_config())
        .await
        .map_err(|e| RegistryError::Bucket(e.to_string()))
}

/// The key of one replica's heartbeat for `tool`.
pub fn instance_key(tool: &str, instance: &str) -> String {
    format!("{tool}.{instance}")
}

/// What a key of the bucket names: a tool's spec, or one replica's heartbeat for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `<tool>`: the [`ToolSpec`](switchboard_proto::ToolSpec).
    Spec(&'a str),
    /// `<tool>.<instance>`: an [`Instance`].
    Instance { tool: &'a str, instance: &'a str },
}

impl<'a> Key<'a> {
    /// Reads a key (tool names have no `.`, so the first `.` separates the instance).
    pub fn parse(key: &'a str) -> Self {
        match key.split_once('.') {
            Some((tool, instance)) => Self::Instance { tool, instance },
            None => Self::Spec(key),
        }
    }
}

/// One serving replica, as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Random id of the replica (a process serving several tools uses one id for all).
    pub instance: String,
    /// The host (pod) name.
    #[serde(default)]
    pub host: String,
    /// The process id.
    #[serde(default)]
    pub pid: u32,
    /// Which SDK serves it: `rust`, `python`, `typescript`.
    #[serde(default)]
    pub sdk: String,
    /// The version of the SDK serving it.
    #[serde(default)]
    pub version: String,
    /// When the replica started serving, ms since the Unix epoch.
    #[serde(default)]
    pub started_ms: i64,
}

impl Instance {
    /// This process's description, with a fresh random id.
    pub fn this_process(sdk: &str, version: &str) -> Self {
        Self {
            instance: random_id(),
            host: std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .unwrap_or_default(),
            pid: std::process::id(),
            sdk: sdk.to_owned(),
            version: version.to_owned(),
            started_ms: switchboard_proto::now_ms(),
        }
    }
}

/// 12 hex digits from the std hasher's random keys: unique enough to tell replicas apart, and a
/// valid KV key token.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// A replica's registration of its tools: puts specs and heartbeats, and takes them out again
/// when it stops.
#[derive(Debug)]
pub struct Registration {
    js: jetstream::Context,
    store: Option<kv::Store>,
    instance: Instance,
}

impl Registration {
    /// A registration for this process.
    pub fn new(js: jetstream::Context, sdk: &str, version: &str) -> Self {
        Self {
            js,
            store: None,
            instance: Instance::this_process(sdk, version),
        }
    }

    /// This replica.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    async fn store(&mut self) -> Result<kv::Store, RegistryError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let store = open(&self.js).await?;
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Puts each `(tool, encoded ToolSpec)` and this replica's heartbeat for it (a put also
    /// restarts the entry's max-age clock).
    pub async fn put(&mut self, specs: &[(String, bytes::Bytes)]) -> Result<(), RegistryError> {
        let store = self.store().await?;
        let heartbeat = bytes::Bytes::from(serde_json::to_vec(&self.instance).unwrap_or_default());
        for (tool, spec) in specs {
            let puts = [
                (tool.clone(), spec.clone()),
                (
                    instance_key(tool, &self.instance.instance),
                    heartbeat.clone(),
                ),
            ];
            for (key, value) in puts {
                if let Err(e) = store.put(&key, value).await {
                    self.store = None;
                    return Err(RegistryError::Entry {
                        what: format!("putting `{key}`"),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes this replica out: deletes its heartbeats, and the spec of every tool no other
    /// replica serves any more, so the tool leaves the model's list at once. A replica that
    /// starts meanwhile puts the spec back on its next refresh.
    pub async fn withdraw(&mut self, tools: &[String]) -> Result<(), RegistryError> {
        let store = self.store().await?;
        for tool in tools {
            let key = instance_key(tool, &self.instance.instance);
            store
                .delete(&key)
                .await
                .map_err(|e| entry_error(format!("deleting `{key}`"), e))?;
        }
        let others = serving(&store).await?;
        for tool in tools {
            if !others.iter().any(|t| t == tool) {
                store
                    .delete(tool)
                    .await
                    .map_err(|e| entry_error(format!("deleting `{tool}`"), e))?;
            }
        }
        Ok(())
    }
}

/// Which of `names` have no spec in the registry (never registered, withdrawn, or expired):
/// tools an agent lists but the model would not get.
pub async fn unregistered<'a>(
    store: &kv::Store,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<&'a str>, RegistryError> {
    let mut missing = Vec::new();
    for name in names {
        let found = store
            .get(name)
            .await
            .map_err(|e| entry_error(format!("reading `{name}`"), e))?;
        if found.is_none() {
            missing.push(name);
        }
    }
    Ok(missing)
}

fn entry_error(what: String, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Entry {
        what,
        message: e.to_string(),
    }
}

/// The tools some replica still has a live heartbeat for.
pub async fn serving(store: &kv::Store) -> Result<Vec<String>, RegistryError> {
    use futures::TryStreamExt as _;
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|e| entry_error("listing keys".into(), e))?
        .try_collect()
        .await
        .map_err(|e| entry_error("listing keys".into(), e))?;
    Ok(keys
        .iter()
        .filter_map(|k| match Key::parse(k) {
            Key::Instance { tool, .. } => Some(tool.to_owned()),
            Key::Spec(_) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_specs_and_instances() {
        assert_eq!(Key::parse("book"), Key::Spec("book"));
        assert_eq!(
            Key::parse(&instance_key("book", "0a1b2c")),
            Key::Instance {
                tool: "book",
                instance: "0a1b2c"
            }
        );
    }

    #[test]
    fn instance_ids_are_key_tokens_and_differ() {
        let a = Instance::this_process("rust", "1");
        let b = Instance::this_process("rust", "1");
        assert_eq!(a.instance.len(), 12);
        assert!(a.instance.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.instance, b.instance);
    }

    #[test]
    fn entries_outlive_missed_refreshes() {
        assert!(ENTRY_MAX_AGE >= REFRESH_EVERY * 3);
        let config = bucket_config();
        assert_eq!((config.history, config.max_age), (1, ENTRY_MAX_AGE));
    }
}
