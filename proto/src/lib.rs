//! The `switchboard.v1` contract: protobuf messages and NATS subject names.
//!
//! - the generated messages are re-exported at the crate root ([`CallOffer`], [`InboundFrame`],
//!   [`OutboundFrame`], [`ToolCall`], [`ToolResult`], [`ToolSpec`], [`CallEvent`], ...);
//! - [`subject`] builds every subject of the contract from the configurable prefix, so no other
//!   crate formats a subject by hand;
//! - [`event`] has the helpers every publisher and consumer of call events shares (the kind token
//!   in the subject, the `Nats-Msg-Id`);
//! - [`permissions`]: each service's NATS user and grants, the source of the k8s NATS config;
//! - [`tool_error`]: [`ToolError`], the one Rust type for a failed tool call.
//!
//! Other languages generate their code from the `.proto` files beside this crate.
#![forbid(unsafe_code)]

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
}

pub use generated::*;
pub use prost::Message;

pub mod event;
pub mod permissions;
pub mod subject;
pub mod tool_error;

/// The JetStream stream holding every call event.
pub const EVENTS_STREAM: &str = "VOICE_EVENTS";
/// The KV bucket where tool services register their [`ToolSpec`].
pub const TOOLS_BUCKET: &str = "voice-tools";
/// The KV bucket where tools keep results by `<tool>.<call_sid>.<call_id>`, so a retried call
/// runs once.
pub const TOOL_RESULTS_BUCKET: &str = "voice-tool-results";
/// The persister's durable consumer on [`EVENTS_STREAM`], shared by every replica.
pub const PERSISTER_CONSUMER: &str = "persister";
/// The notifier's durable consumer on [`EVENTS_STREAM`], shared by every replica.
pub const NOTIFIER_CONSUMER: &str = "notifier";
/// The dialer's durable consumer on [`EVENTS_STREAM`] (call results of campaign calls), shared
/// by every replica.
pub const DIALER_CONSUMER: &str = "dialer";
/// The queue group call-workers share for offers.
pub const WORKERS_QUEUE_GROUP: &str = "call-workers";

/// Milliseconds since the Unix epoch, the time unit of every timestamp in the contract.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
