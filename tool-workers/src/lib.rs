//! Switchboard tools: an SDK for writing tools as NATS services, and the `tool-worker` service.
//!
//! A tool is business logic the model calls during a call (look up a customer, book a slot). It
//! runs as a NATS request/reply service on `voice.tools.<name>`, in any number of replicas that
//! share a queue group, and registers its [`ToolSpec`](switchboard_proto::ToolSpec) in the KV
//! bucket `voice-tools` so call-workers can offer it to the model.
//!
//! - [`tool`]: declaring a tool ([`Tool::new`] with a JSON Schema, or [`Tool::typed`] deriving
//!   it from a Rust type), what its handler gets ([`ToolContext`]) and returns
//!   ([`ToolFailure`], the error codes in [`tool::codes`]);
//! - [`schema`]: checks arguments against the tool's JSON Schema before the handler runs;
//! - [`server`]: [`ToolServer`] subscribes, dispatches each request to its own task, catches
//!   panics and timeouts, and drains on shutdown;
//! - [`idempotency`]: answers a redelivered call with the first delivery's stored result;
//! - [`registry`]: the `voice-tools` bucket and the periodic re-registration;
//! - [`metrics`]: the names of the tool-worker's metrics;
//! - [`customers`]: the `lookup_customer` example tool over Postgres;
//! - [`appointments`]: the `check_availability` and `book_appointment` example tools over the
//!   clinic schedule in Postgres;
//! - [`app`]: the `tool-worker` binary's configuration and run loop.
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use tool_workers::{Tool, ToolContext, ToolServer};
//!
//! let greet = Tool::new(
//!     "greet",
//!     "Greets the caller by name.",
//!     json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
//!     |_ctx: ToolContext, args: serde_json::Value| async move {
//!         Ok(json!({"greeting": format!("Hello, {}!", args["name"].as_str().unwrap_or("there"))}))
//!     },
//! )?;
//! let subjects = switchboard_proto::subject::Subjects::default();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! ToolServer::new().tool(greet).serve(client, &subjects, shutdown).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod appointments;
pub mod customers;
pub mod idempotency;
pub mod metrics;
pub mod registry;
pub mod schema;
pub mod server;
pub mod tool;

pub use server::{ServeError, Serving, ToolServer};
pub use tool::{
    TIMEOUT_MARGIN, Tool, ToolContext, ToolDefinitionError, ToolFailure, ToolOutcome,
    handler_deadline,
};
