//! Switchboard's call-worker: one actor per phone call, owning that call's OpenAI Realtime
//! session, bridged to the Twilio media stream held by a gateway over NATS.
//!
//! Modules, and what each owns:
//! - [`config`]: the flags and environment variables of the process;
//! - [`agents`]: the agents file (the `switchboard-agents` crate, shared with the gateway): which
//!   agent answers which number, validated with precise errors;
//! - [`reload`]: re-reading the agents file on change or SIGHUP, for new calls only;
//! - [`offers`]: answering `voice.calls.offer`: capacity (a hard `MAX_CALLS` cap), routing, drain;
//! - [`call`]: the call actor (I/O) and [`call::machine`], the decisions of a call without I/O
//!   (barge-in, responses, tool rounds, transcripts, timers, endings), with
//!   [`call::arbiter`] (which response answers which request, by `response.metadata`) and
//!   [`call::session_check`] (whether `session.updated` shows the configuration sent);
//! - [`realtime`]: the WebSocket connection to the Realtime API, with a writer that never blocks
//!   the call and drops stale caller audio first;
//! - [`replay`]: the conversation so far, rebuilt from call events for a new Realtime session;
//! - [`playback`]: marks and mark echoes: how much assistant audio the caller actually heard;
//! - [`tools`]: the tool registry (KV `voice-tools` plus built-in call-control tools) and
//!   business-tool dispatch over NATS with structured errors for the model;
//! - [`events`]: per-call event numbering for the `VOICE_EVENTS` stream;
//! - [`usage`]: the Realtime usage reports summed into the call's `Usage` (priced by the
//!   persister);
//! - [`worker`]: process wiring, `/healthz` `/readyz` `/metrics`, and graceful drain.
#![forbid(unsafe_code)]

pub use switchboard_agents as agents;
pub mod call;
pub mod config;
pub mod events;
pub mod metrics;
pub mod offers;
pub mod ownership;
pub mod playback;
pub mod realtime;
pub mod reload;
pub mod replay;
pub mod takeover;
pub mod tools;
pub mod usage;
pub mod worker;

pub use config::Config;
pub use worker::{Worker, WorkerError, run};
