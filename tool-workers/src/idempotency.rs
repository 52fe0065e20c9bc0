//! Answering a redelivered [`ToolCall`](switchboard_proto::ToolCall) without running it twice.
//!
//! A call-worker may send the same invocation again (a retry after a timeout, a reconnect), and
//! the queue group may route the copy to another replica. Every replica shares the KV bucket
//! [`RESULTS_BUCKET`]: the first delivery *claims* the key `<tool>.<call_sid>.<call_id>` with a
//! `create` (which fails if the key exists), runs the handler and stores the encoded
//! [`ToolResult`] under the key; a later or concurrent copy finds the key, waits (bounded) for
//! the stored result and returns it. Entries expire after [`RESULT_TTL`].
//!
//! A claim carries a deadline: if the replica that claimed a call dies before storing its result,
//! a copy arriving after the deadline takes the claim over (a compare-and-set on the entry's
//! revision, so only one copy does) and runs the handler itself.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use switchboard_proto::{Message as _, ToolResult};
use tokio::time::Instant;

/// The bucket holding claims and results, shared by every replica of every tool.
pub const RESULTS_BUCKET: &str = switchboard_proto::TOOL_RESULTS_BUCKET;

/// How long a result is kept: far longer than any retry of the same call would come.
pub const RESULT_TTL: Duration = Duration::from_secs(600);

/// How often a copy looks for the result while the first delivery is still running.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Slack added to a claim's deadline beyond the handler's timeout, for storing the result.
const CLAIM_GRACE: Duration = Duration::from_secs(2);

/// Longest `call_id` given deduplication; longer ids (no model sends them) are served without it.
const MAX_ID_LEN: usize = 256;

/// Milliseconds since the Unix epoch (claim deadlines are compared across replicas).
fn now_ms() -> u64 {
    u64::try_from(switchboard_proto::now_ms()).unwrap_or_default()
}

const PENDING: u8 = b'P';
const RESULT: u8 = b'R';

/// Opens the results bucket, creating it if missing (or bringing its settings and replicas in
/// line: [`switchboard_service::storage::ensure_bucket`]).
pub async fn open_bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    switchboard_service::storage::ensure_bucket(
        js,
        kv::Config {
            bucket: RESULTS_BUCKET.to_owned(),
            description: "Switchboard tool results by (tool, call_sid, call_id), for retries"
                .to_owned(),
            history: 1,
            max_age: RESULT_TTL,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// The KV key of one invocation, or `None` when the call cannot be identified (an empty or
/// absurdly long id). KV keys allow `[-/_=.A-Za-z0-9]`; each part is escaped so only
/// `[-_A-Za-z0-9]` stays as is and every other byte becomes `=XX` (hex), which keeps the parts
/// unambiguous (`.` separates them) and different ids distinct.
pub fn key(tool: &str, call_sid: &str, call_id: &str) -> Option<String> {
    if call_sid.is_empty() || call_id.is_empty() || call_id.len() > MAX_ID_LEN {
        return None;
    }
    Some(format!(
        "{}.{}.{}",
        escape(tool),
        escape(call_sid),
        escape(call_id)
    ))
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// What [`claim`] found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// This delivery runs the handler and must [`finish`] with the entry's revision.
    Run(u64),
    /// Another delivery of the same invocation already answered (or gave up waiting): reply this.
    Answered(ToolResult),
}

/// Why the bucket could not be used; the caller serves the request without deduplication.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DedupeError(String);

fn pending(deadline_ms: u64) -> Bytes {
    let mut value = vec![PENDING];
    value.extend_from_slice(deadline_ms.to_string().as_bytes());
    Bytes::from(value)
}

enum Stored {
    Pending { deadline_ms: u64 },
    Done(ToolResult),
}

fn decode(value: &[u8]) -> Option<Stored> {
    match value.split_first()? {
        (&PENDING, rest) => std::str::from_utf8(rest)
            .ok()?
            .parse()
            .ok()
            .map(|deadline_ms| Stored::Pending { deadline_ms }),
        (&RESULT, rest) => ToolResult::decode(rest).ok().map(Stored::Done),
        _ => None,
    }
}

/// Claims `key` for this delivery, or waits up to `wait` for the result of the delivery that
/// holds it. `run_for` is how long the handler may take, which bounds the claim.
pub(crate) async fn claim(
    store: &kv::Store,
    key: &str,
    run_for: Duration,
    wait: Duration,
) -> Result<Claim, DedupeError> {
    let claim_ms = u64::try_from((run_for + CLAIM_GRACE).as_millis()).unwrap_or(u64::MAX);
    let give_up = Instant::now() + wait;
    loop {
        match store
            .create(key, pending(now_ms().saturating_add(claim_ms)))
            .await
        {
            Ok(revision) => return Ok(Claim::Run(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(DedupeError(format!("claiming {key}: {e}"))),
        }
        metrics::counter!(crate::metrics::DUPLICATE_REQUESTS).increment(1);
        // Someone holds the key: wait for their result.
        loop {
            let entry = store
                .entry(key)
                .await
                .map_err(|e| DedupeError(format!("reading {key}: {e}")))?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                // Expired or deleted meanwhile: claim it afresh.
                break;
            };
            match decode(&entry.value) {
                Some(Stored::Done(result)) => return Ok(Claim::Answered(result)),
                Some(Stored::Pending { deadline_ms }) if now_ms() <= deadline_ms => {}
                // The holder is gone (or the entry is garbage): take the claim over, unless
                // another copy does so first.
                _ => {
                    let takeover = store
                        .update(
                            key,
                            pending(now_ms().saturating_add(claim_ms)),
                            entry.revision,
                        )
                        .await;
                    if let Ok(revision) = takeover {
                        tracing::warn!(key, "took over an abandoned tool call");
                        return Ok(Claim::Run(revision));
                    }
                }
            }
            if Instant::now() >= give_up {
                return Ok(Claim::Answered(ToolResult {
                    result: Some(switchboard_proto::tool_result::Result::Error(
                        switchboard_proto::ToolError {
                            code: crate::tool::codes::TIMEOUT.to_owned(),
                            message: "an earlier delivery of this tool call is still running"
                                .to_owned(),
                        },
                    )),
                    outcome: String::new(),
                }));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// Stores the result of a claimed delivery so copies return it.
pub(crate) async fn finish(
    store: &kv::Store,
    key: &str,
    revision: u64,
    result: &ToolResult,
) -> Result<(), DedupeError> {
    let mut value = vec![RESULT];
    result
        .encode(&mut value)
        .map_err(|e| DedupeError(format!("encoding the result: {e}")))?;
    store
        .update(key, Bytes::from(value), revision)
        .await
        .map(|_| ())
        .map_err(|e| DedupeError(format!("storing the result under {key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        assert_eq!(
            key("book", "CA123", "call_abc-1").as_deref(),
            Some("book.CA123.call_abc-1")
        );
        let odd = key("book", "CA1", "a.b c/=é*>").unwrap();
        assert!(
            odd.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)),
            "{odd}"
        );
        assert_eq!(odd.matches('.').count(), 2, "{odd}");
        assert_ne!(key("t", "CA1", "a.b"), key("t", "CA1", "a=2Eb"));
        assert_eq!(key("t", "CA1", ""), None);
        assert_eq!(key("t", "", "c"), None);
        assert_eq!(key("t", "CA1", &"x".repeat(300)), None);
    }

    #[test]
    fn stored_values_round_trip() {
        assert!(matches!(
            decode(&pending(42)),
            Some(Stored::Pending { deadline_ms: 42 })
        ));
        let result = ToolResult {
            result: Some(switchboard_proto::tool_result::Result::Output("{}".into())),
            outcome: "booked".into(),
        };
        let mut value = vec![RESULT];
        result.encode(&mut value).unwrap();
        assert!(matches!(decode(&value), Some(Stored::Done(r)) if r == result));
        assert!(decode(b"").is_none());
        assert!(decode(b"Pxyz").is_none());
    }
}
