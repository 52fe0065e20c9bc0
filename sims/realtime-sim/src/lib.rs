//! A WebSocket server that plays the OpenAI Realtime API (GA interface) from a script, so the
//! call-worker can be tested, and the system demonstrated, without the real model.
//!
//! It speaks the same JSON as the real service (the `switchboard_realtime` types), including
//! its errors and timing-relevant behaviour: server VAD on the caller's mu-law audio, paced
//! audio responses that barge-in cancels, function calls, truncation, session expiry.
//!
//! Modules:
//! - [`script`]: the TOML script (what the model hears and answers) and its loading errors;
//! - `server`: the listener, `/healthz`, the upgrade checks and the [`SimServer`] handle;
//! - `session`: the per-connection actor owning a session's whole state;
//! - `validate`: `session.update` checked field by field as the real server does, with its error
//!   shapes (docs/realtime.md lists what is strict and what is not simulated);
//! - `response`: the state machine of one response being streamed;
//! - `conversation`: a session's items and the latest function output;
//! - `audio`: the synthesized voice and the voice activity detector;
//! - `registry`: the actor keeping a [`SessionRecord`] per connection for tests;
//! - `ids`: OpenAI-style ids.
#![forbid(unsafe_code)]

mod audio;
mod conversation;
mod ids;
mod registry;
mod response;
pub mod script;
mod server;
mod session;
mod validate;

pub use registry::SessionRecord;
pub use script::{Script, ScriptError};
pub use server::{SimOptions, SimServer};

/// Serves `script` on `listen` until `shutdown` resolves (the binary's whole life). Sessions
/// are not recorded, so memory stays flat however long it runs.
pub async fn run(
    listen: &str,
    script: Script,
    connect_delay: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let options = SimOptions {
        record: false,
        connect_delay,
    };
    let sim = SimServer::start_with(listen, script, options).await?;
    tracing::info!(url = %sim.url(), "realtime-sim listening");
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}
