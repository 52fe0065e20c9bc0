//! The tool registry: each tool's [`ToolSpec`] in the KV bucket `voice-tools`, keyed by name.
//!
//! Call-workers read the bucket to tell the model which tools exist. Entries expire after
//! [`ENTRY_MAX_AGE`] unless refreshed, so a tool whose last server is gone stops being offered
//! to the model; every server re-puts its specs every [`REFRESH_EVERY`].

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use switchboard_proto::{Message as _, TOOLS_BUCKET, ToolSpec};

/// How often a server re-registers its tools.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// How long an entry lives without a refresh (several missed refreshes, so one slow NATS
/// round trip does not make a tool disappear).
pub const ENTRY_MAX_AGE: Duration = Duration::from_secs(300);

/// Why the registry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The bucket could neither be opened nor created.
    #[error("opening KV bucket `{TOOLS_BUCKET}`: {0}")]
    Bucket(String),
    /// A put failed.
    #[error("registering tool `{name}` in `{TOOLS_BUCKET}`: {source}")]
    Put { name: String, source: kv::PutError },
}

/// Opens `voice-tools`, creating it if missing. Whoever creates it first (a tool server or a
/// call-worker) decides its settings; the others use it as it is.
pub async fn open_bucket(js: &jetstream::Context) -> Result<kv::Store, RegistryError> {
    if let Ok(store) = js.get_key_value(TOOLS_BUCKET).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: TOOLS_BUCKET.to_owned(),
            description: "Switchboard tool registry: tool name -> ToolSpec".to_owned(),
            history: 1,
            max_age: ENTRY_MAX_AGE,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another instance may have created it a moment ago.
        Err(create_error) => js
            .get_key_value(TOOLS_BUCKET)
            .await
            .map_err(|_| RegistryError::Bucket(create_error.to_string())),
    }
}

/// Writes tool specs to the bucket, opening it on first use (and again after a failure).
pub(crate) struct Registry {
    js: jetstream::Context,
    store: Option<kv::Store>,
}

impl Registry {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Self { js, store: None }
    }

    /// Puts every spec (a put also restarts the entry's max-age clock).
    pub(crate) async fn register(&mut self, specs: &[ToolSpec]) -> Result<(), RegistryError> {
        let store = match &self.store {
            Some(store) => store.clone(),
            None => {
                let store = open_bucket(&self.js).await?;
                self.store = Some(store.clone());
                store
            }
        };
        for spec in specs {
            if let Err(source) = store
                .put(&spec.name, bytes::Bytes::from(spec.encode_to_vec()))
                .await
            {
                self.store = None;
                return Err(RegistryError::Put {
                    name: spec.name.clone(),
                    source,
                });
            }
        }
        Ok(())
    }
}
