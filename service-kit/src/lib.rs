//! What every Switchboard service shares at its edges.
//!
//! - [`backoff`]: the one jittered exponential backoff every retry loop uses;
//! - [`drain`]: the shutdown sequence under one deadline, every step bounded;
//! - [`nats`]: the `NATS_*` settings of the contract and the connection they describe;
//! - [`storage`]: the replicas (`NATS_REPLICAS`) of every stream and KV bucket, and creating
//!   them or bringing existing ones in line in place;
//! - [`events`]: the `VOICE_EVENTS` stream and a publisher that never blocks its caller;
//! - [`health`]: `/healthz`, `/readyz` (false while draining) and `/metrics`;
//! - [`telemetry`]: logging (`RUST_LOG`, `LOG_FORMAT=json`), OTLP span export
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT`) and the Prometheus recorder;
//! - [`trace`]: W3C trace context in NATS headers, so a call is one trace across services;
//! - [`recordings`]: the call recording store (`RECORDINGS_URL`: a directory or S3), the
//!   recordings' names, their WAV format and the retention sweep;
//! - [`redact`]: masked phone numbers for logs and spans, and `Secret` for credentials in configs;
//! - [`tool_registry`]: the `voice-tools` bucket's one set of settings, tool specs and the
//!   replicas' heartbeats;
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal every binary drains on;
//! - [`tasks`]: the tracked tasks a service spawns for itself (its HTTP server, the stop
//!   signal's watcher);
//! - [`web_call`]: the signed, short-lived ticket with which the console opens a web call on
//!   the gateway (issued by the persister, checked by the gateway).
#![forbid(unsafe_code)]

pub mod backoff;
pub mod drain;
pub mod events;
pub mod health;
pub mod nats;
pub mod pii;
pub mod recordings;
pub mod redact;
pub mod shutdown;
pub mod storage;
pub mod tasks;
pub mod telemetry;
pub mod tool_registry;
pub mod trace;
pub mod web_call;

pub use health::Health;
pub use nats::NatsArgs;
