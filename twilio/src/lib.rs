//! Twilio's side of a phone call, as Switchboard speaks it.
//!
//! Shared by the `gateway` (which faces real Twilio) and `callsim` (which plays Twilio in tests and
//! demos), so both always agree on the wire format:
//!
//! - [`media`]: the Media Streams WebSocket messages, both directions;
//! - [`mulaw`]: G.711 mu-law decoding and encoding, for measuring and synthesizing audio;
//! - [`signature`]: `X-Twilio-Signature` (HMAC-SHA1) computation and constant-time validation;
//! - [`twiml`]: the TwiML documents we answer with, and a reader for them;
//! - [`webhook`]: the form fields of the voice webhook and status callbacks.
#![forbid(unsafe_code)]

pub mod media;
pub mod mulaw;
pub mod signature;
pub mod twiml;
pub mod webhook;

/// Bytes of mu-law audio per millisecond (8 kHz, one byte per sample).
pub const BYTES_PER_MS: usize = 8;
/// Bytes in one 20 ms Twilio media frame.
pub const FRAME_BYTES: usize = 160;
