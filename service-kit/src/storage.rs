//! The JetStream streams and KV buckets Switchboard creates, and how many copies of each the
//! cluster keeps.
//!
//! Every service creates what it uses at start (pods start in any order), so each stream and
//! bucket must come out the same whoever creates it. Their settings live next to their owners
//! (`VOICE_EVENTS` in [`crate::events`], `voice-tools` in [`crate::tool_registry`], the
//! gateways' and tools' buckets in their crates); what they share is here:
//!
//! - [`replicas`]: the number of copies, `NATS_REPLICAS` (1 on a single server, 3 on the
//!   3-node cluster k8s/ ships, so a call's record and the buckets survive the loss of a node).
//!   One setting for every stream and bucket of a deployment, read once per process;
//! - [`ensure_stream`] and [`ensure_bucket`]: create a stream or bucket with these settings, or
//!   bring an existing one in line with them (an update in place, never a re-create: the stored
//!   events and entries stay). Only the settings Switchboard owns are compared and changed
//!   (replicas, subjects, ages, history); an operator's other settings (limits, placement) are
//!   kept. A process whose NATS user may not update a stream says so and uses it as it is.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

/// The environment variable naming the number of replicas of every stream and bucket.
pub const REPLICAS_ENV: &str = "NATS_REPLICAS";

/// JetStream keeps at most five copies of a stream.
pub const MAX_REPLICAS: usize = 5;

static REPLICAS: OnceLock<usize> = OnceLock::new();

/// Sets the replicas of every stream and bucket this process creates or updates (from
/// [`crate::NatsArgs`], which validated it). Only the first call counts: one process, one
/// deployment.
pub fn set_replicas(replicas: usize) {
    let _ = REPLICAS.set(replicas.clamp(1, MAX_REPLICAS));
}

/// The replicas of every stream and bucket this process creates or updates: what
/// [`set_replicas`] set, else `NATS_REPLICAS` (for processes that connect without
/// [`crate::NatsArgs`], such as tool servers built on the SDK), else 1.
pub fn replicas() -> usize {
    *REPLICAS.get_or_init(|| match std::env::var(REPLICAS_ENV) {
        Err(_) => 1,
        Ok(value) => match parse_replicas(&value) {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "using 1 replica");
                1
            }
        },
    })
}

/// Reads a replica count: 1 to [`MAX_REPLICAS`].
pub fn parse_replicas(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{REPLICAS_ENV}={value:?}: expected a number of replicas from 1 to {MAX_REPLICAS}"
        )),
    }
}

/// A stream or bucket could neither be found nor created.
#[derive(Debug, thiserror::Error)]
#[error("setting up JetStream {what} `{name}`: {source}")]
pub struct SetupError {
    what: &'static str,
    name: String,
    #[source]
    source: async_nats::Error,
}

/// The settings of a stream that Switchboard owns, as they differ between `current` and
/// `wanted`: `None` when they agree.
fn owned_differences(current: &stream::Config, wanted: &stream::Config) -> Option<String> {
    let mut differ = Vec::new();
    if current.num_replicas.max(1) != wanted.num_replicas.max(1) {
        differ.push(format!(
            "replicas {} -> {}",
            current.num_replicas, wanted.num_replicas
        ));
    }
    if current.subjects != wanted.subjects {
        differ.push(format!(
            "subjects {:?} -> {:?}",
            current.subjects, wanted.subjects
        ));
    }
    if current.max_age != wanted.max_age {
        differ.push(format!(
            "max age {:?} -> {:?}",
            current.max_age, wanted.max_age
        ));
    }
    if wanted.duplicate_window != Duration::ZERO
        && current.duplicate_window != wanted.duplicate_window
    {
        differ.push(format!(
            "duplicate window {:?} -> {:?}",
            current.duplicate_window, wanted.duplicate_window
        ));
    }
    if unlimited_as_minus_one(current.max_messages_per_subject)
        != unlimited_as_minus_one(wanted.max_messages_per_subject)
    {
        differ.push(format!(
            "history {} -> {}",
            current.max_messages_per_subject, wanted.max_messages_per_subject
        ));
    }
    if wanted.allow_direct && !current.allow_direct {
        differ.push("direct get off -> on".to_owned());
    }
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// A limit as the server reports it: unset (0) reads back as unlimited (-1).
fn unlimited_as_minus_one(limit: i64) -> i64 {
    if limit <= 0 { -1 } else { limit }
}

/// `current` with Switchboard's settings of `wanted`, the rest (an operator's limits and
/// placement) kept.
fn merged(current: &stream::Config, wanted: &stream::Config) -> stream::Config {
    let mut config = current.clone();
    config.num_replicas = wanted.num_replicas;
    config.subjects = wanted.subjects.clone();
    config.max_age = wanted.max_age;
    if wanted.duplicate_window != Duration::ZERO {
        config.duplicate_window = wanted.duplicate_window;
    }
    config.max_messages_per_subject = wanted.max_messages_per_subject;
    // Switched on where a reader needs it (gateways' direct get of a call's owner), never off.
    config.allow_direct |= wanted.allow_direct;
    config
}

/// Creates stream `wanted` with [`replicas`] copies, or brings the existing stream in line with
/// it (see the module docs), and returns it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, SetupError> {
    ensure_stream_with(
        js,
        stream::Config {
            num_replicas: replicas(),
            ..wanted
        },
    )
    .await
}

/// [`ensure_stream`] with the replicas `wanted` names (tests of several deployments in one
/// process).
pub async fn ensure_stream_with(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, SetupError> {
    let error = |source: async_nats::Error| SetupError {
        what: "stream",
        name: wanted.name.clone(),
        source,
    };
    let stream = match js.get_stream(&wanted.name).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(wanted.clone()).await {
            Ok(stream) => return Ok(stream),
            // Another process may have created it a moment ago: then it is brought in line.
            Err(create) => js
                .get_stream(&wanted.name)
                .await
                .map_err(|_| error(create.into()))?,
        },
    };
    let current = stream.cached_info().config.clone();
    match owned_differences(&current, &wanted) {
        None => Ok(stream),
        Some(differ) => update(js, stream, merged(&current, &wanted), &differ).await,
    }
}

/// Updates `stream` to `config` in place; if this process may not, it warns and returns the
/// stream as it is (it still works, with its old settings).
async fn update(
    js: &jetstream::Context,
    stream: stream::Stream,
    config: stream::Config,
    differ: &str,
) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    match js.update_stream(config).await {
        Ok(_) => {
            tracing::info!(stream = %name, %differ, "JetStream stream settings updated");
            js.get_stream(&name).await.map_err(|source| SetupError {
                what: "stream",
                name,
                source: source.into(),
            })
        }
        Err(error) => {
            tracing::warn!(stream = %name, %differ, %error,
                "JetStream stream has other settings and cannot be updated from here; \
                 using it as it is");
            Ok(stream)
        }
    }
}

/// Opens KV bucket `wanted` with [`replicas`] copies, creating it or bringing an existing one in
/// line (see the module docs).
pub async fn ensure_bucket(
    js: &jetstream::Context,
    wanted: kv::Config,
) -> Result<kv::Store, SetupError> {
    ensure_bucket_with(
        js,
        kv::Config {
            num_replicas: replicas(),
            ..wanted
        },
    )
    .await
}

/// [`ensure_bucket`] with the replicas `wanted` names.
pub async fn ensure_bucket_with(
    js: &jetstream::Context,
    wanted: kv::Config,
) -> Result<kv::Store, SetupError> {
    let bucket = wanted.bucket.clone();
    let error = |source: async_nats::Error| SetupError {
        what: "KV bucket",
        name: bucket.clone(),
        source,
    };
    let store = match js.get_key_value(&bucket).await {
        Ok(store) => store,
        Err(_) => match js.create_key_value(wanted.clone()).await {
            Ok(store) => return Ok(store),
            // Another process may have created it a moment ago.
            Err(create) => js
                .get_key_value(&bucket)
                .await
                .map_err(|_| error(create.into()))?,
        },
    };
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| error(e.into()))?;
    let current = stream.cached_info().config.clone();
    // The bucket's settings as stream settings: what `create_key_value` would have made.
    let wanted_stream = stream::Config {
        num_replicas: wanted.num_replicas,
        subjects: current.subjects.clone(),
        max_age: wanted.max_age,
        duplicate_window: current.duplicate_window,
        max_messages_per_subject: wanted.history.max(1),
        ..Default::default()
    };
    let Some(differ) = owned_differences(&current, &wanted_stream) else {
        return Ok(store);
    };
    if current.max_age != wanted.max_age || current.max_messages_per_subject != wanted.history {
        // Ages and history go through the KV API, which keeps the duplicate window within
        // the max age.
        return match js.update_key_value(wanted).await {
            Ok(store) => {
                tracing::info!(%bucket, %differ, "KV bucket settings updated");
                Ok(store)
            }
            Err(e) => {
                tracing::warn!(%bucket, %differ, error = %e,
                    "KV bucket has other settings and cannot be updated from here; \
                     using it as it is");
                Ok(store)
            }
        };
    }
    update(js, stream, merged(&current, &wanted_stream), &differ).await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_one_to_five() {
        assert_eq!(parse_replicas("3"), Ok(3));
        assert_eq!(parse_replicas(" 1 "), Ok(1));
        assert!(parse_replicas("0").is_err());
        assert!(parse_replicas("6").is_err());
        assert!(parse_replicas("three").is_err());
    }

    #[test]
    fn only_owned_settings_are_compared_and_changed() {
        let current = stream::Config {
            name: "S".into(),
            subjects: vec!["a.>".into()],
            num_replicas: 1,
            max_age: Duration::from_secs(60),
            max_bytes: 1 << 30,
            ..Default::default()
        };
        let wanted = stream::Config {
            num_replicas: 3,
            max_bytes: -1,
            ..current.clone()
        };
        assert_eq!(
            owned_differences(&current, &wanted).as_deref(),
            Some("replicas 1 -> 3")
        );
        let config = merged(&current, &wanted);
        assert_eq!(config.num_replicas, 3);
        // An operator's byte limit stays.
        assert_eq!(config.max_bytes, 1 << 30);
        assert_eq!(owned_differences(&config, &wanted), None);
        // The server reports an unset history as unlimited: no difference.
        let reported = stream::Config {
            max_messages_per_subject: -1,
            ..config
        };
        assert_eq!(owned_differences(&reported, &wanted), None);
    }
}
