//! End-to-end tests of Switchboard live in `tests/`: every service runs as its own process, wired
//! through a real nats-server and a real PostgreSQL, with `realtime-sim` as the model and
//! `callsim` as Twilio and the caller.
#![forbid(unsafe_code)]
