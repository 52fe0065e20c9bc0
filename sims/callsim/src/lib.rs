//! callsim: plays Twilio against a Switchboard gateway, for tests, demos and load.
//!
//! It does what Twilio does on an inbound call: signs and posts the voice webhook, follows the
//! TwiML, opens the signed Media Streams socket, streams the caller's mu-law audio in real time
//! (a 20 ms frame every 20 ms, paced against absolute deadlines), plays the gateway's audio
//! through a real-time playback buffer, echoes marks only once their audio has played, obeys
//! `clear`, and records what the caller heard. Many calls at once make a load generator.
//!
//! Modules:
//! - [`config`]: who calls whom and which gateway answers; mapping TwiML stream URLs onto it;
//! - [`script`]: the caller script (TOML steps: listen, say, barge in, dtmf, pause, hang up);
//! - [`call`]: one call end to end ([`place_call`]) and its media loop;
//! - [`caller`]: the caller's decisions, one 20 ms tick at a time;
//! - [`playback`]: Twilio's outbound play queue: marks, clears, what was heard and when;
//! - [`inspect`]: checks the gateway's frames the way Twilio does;
//! - [`voice`]: synthetic caller speech;
//! - [`report`]: the per-call report and the errors that prevent a call;
//! - [`load`]: many calls at once with latency percentiles ([`run_load`]);
//! - [`twilio_rest`]: a fake of Twilio's REST API that places outbound calls ([`twilio_rest::FakeTwilio`]);
//! - [`twilio_dialing`]: what that fake does with bulk dialing: outcomes per number, AMD verdicts,
//!   the account's calls-per-second queue, 20429s.
#![forbid(unsafe_code)]

pub mod call;
pub mod caller;
pub mod config;
pub mod dial;
pub mod inspect;
pub mod load;
pub mod playback;
pub mod report;
pub mod script;
pub mod twilio_dialing;
pub mod twilio_rest;
pub mod voice;

pub use call::{place_call, place_call_until};
pub use config::CallConfig;
pub use load::{LoadOptions, LoadReport, Percentiles, run_load, run_load_with};
pub use report::{CallError, CallReport, EndedBy, Segment};
pub use script::{CallerScript, ScriptError, Step};
