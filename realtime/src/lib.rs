//! The OpenAI Realtime API (GA interface) as JSON messages over a WebSocket.
//!
//! Shared by the `call-worker` (a client of the real API) and `realtime-sim` (a server that plays
//! the API in tests and demos), so both sides serialize and parse exactly the same shapes:
//!
//! - [`client`]: events the client sends (`session.update`, `input_audio_buffer.append`, ...);
//! - [`server`]: events the server sends (`response.output_audio.delta`, `error`, ...), accepting
//!   the legacy beta spellings of renamed events so an old-shaped event is never silently lost;
//! - [`session`]: the session configuration of `session.update`;
//! - [`item`]: conversation items and their content parts;
//! - `sdk_schema` (feature `sdk-schema`, for tests): events checked field by field against the
//!   openai-python SDK's GA types.
//!
//! Unknown server events parse as [`server::ServerEvent::Unknown`] rather than failing, because
//! OpenAI adds events over time.
#![forbid(unsafe_code)]

pub mod client;
pub mod item;
#[cfg(feature = "sdk-schema")]
pub mod sdk_schema;
pub mod server;
pub mod session;

pub use client::ClientEvent;
pub use item::{ContentPart, Item};
pub use server::ServerEvent;
pub use session::Session;

/// The default Realtime endpoint.
pub const DEFAULT_URL: &str = "wss://api.openai.com/v1/realtime";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-realtime";
