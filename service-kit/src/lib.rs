//! What every Switchboard service shares at its edges.
//!
//! - [`nats`]: the `NATS_*` settings of the contract and the connection they describe;
//! - [`events`]: the `VOICE_EVENTS` stream and a publisher that never blocks its caller;
//! - [`health`]: `/healthz`, `/readyz` (false while draining) and `/metrics`;
//! - [`telemetry`]: logging (`RUST_LOG`, `LOG_FORMAT=json`) and the Prometheus recorder;
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal every binary drains on.
#![forbid(unsafe_code)]

pub mod events;
pub mod health;
pub mod nats;
pub mod shutdown;
pub mod telemetry;

pub use health::Health;
pub use nats::NatsArgs;
