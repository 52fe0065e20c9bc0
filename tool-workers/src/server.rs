//! [`ToolServer`]: serves declared tools on `voice.tools.<name>` and keeps them registered.
//!
//! Each tool gets one queue subscription (group `tools.<name>`), so any number of replicas share
//! the load and every request is answered once. Each request runs in its own task, and its handler
//! on that same task (a further hand-off would cost a wake-up per request), so a slow tool never
//! holds up another request; a panicking handler is caught where it is awaited and becomes an
//! error result (`panicked`) instead of taking the server down. On shutdown the
//! subscriptions are drained: requests already delivered are finished and answered, then
//! [`Serving::wait`] returns.
//!
//! Unless turned off with [`ToolServer::idempotent`], a redelivered `ToolCall` (same tool,
//! `call_sid` and `call_id`) is answered with the first delivery's result instead of running the
//! handler again, across replicas (see [`crate::idempotency`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::{FutureExt as _, StreamExt};
use serde_json::Value;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{Message as _, ToolCall, ToolResult, tool_result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::idempotency::{self, Claim};
use crate::registry::{self, REFRESH_EVERY, Registration};
use crate::schema;
use crate::tool::{Tool, ToolContext, ToolFailure, codes, handler_deadline};

/// How this SDK names itself in the replicas' heartbeats.
const SDK: &str = "rust";

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Nothing to serve.
    #[error("no tools were added to the server")]
    NoTools,
    /// Two tools with one name would share a subject.
    #[error("tool `{0}` was added twice")]
    DuplicateTool(String),
    /// The subscription could not be made.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    /// The server could not be reached to confirm the subscriptions.
    #[error("confirming subscriptions with the NATS server: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// A set of tools to serve. Build it with [`ToolServer::tool`], then [`ToolServer::serve`]
/// (or [`ToolServer::start`] to know when the subscriptions are live).
#[derive(Debug)]
pub struct ToolServer {
    tools: Vec<Tool>,
    refresh_every: Duration,
    idempotent: bool,
}

impl Default for ToolServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolServer {
    /// A server with no tools yet.
    pub fn new() -> Self {
        Self {
            tools: Vec::new(),
            refresh_every: REFRESH_EVERY,
            idempotent: true,
        }
    }

    /// Whether redelivered calls are answered from the first delivery's result (default on).
    /// Turning it off saves two KV round trips per request for tools without side effects.
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// How often the specs are re-registered (default [`REFRESH_EVERY`]).
    pub fn refresh_every(mut self, every: Duration) -> Self {
        self.refresh_every = every;
        self
    }

    /// Serves until `shutdown` is cancelled and every request already received is answered.
    pub async fn serve(
        self,
        client: async_nats::Client,
        subjects: &Subjects,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        self.start(client, subjects, shutdown).await?.wait().await;
        Ok(())
    }

    /// Subscribes every tool and registers its spec, then returns while serving goes on in the
    /// background: when this returns, requests are answered. A registry failure is logged and
    /// retried with backoff rather than failing the start, because answering requests matters
    /// more than being listed.
    pub async fn start(
        self,
        client: async_nats::Client,
        subjects: &Subjects,
        shutdown: CancellationToken,
    ) -> Result<Serving, ServeError> {
        if self.tools.is_empty() {
            return Err(ServeError::NoTools);
        }
        let mut names = HashSet::new();
        if let Some(dup) = self.tools.iter().find(|t| !names.insert(t.name.clone())) {
            return Err(ServeError::DuplicateTool(dup.name.clone()));
        }

        let mut subscriptions = Vec::with_capacity(self.tools.len());
        for tool in self.tools {
            let subject = subjects.tool(&tool.name);
            let group = format!("tools.{}", tool.name);
            let sub = client
                .queue_subscribe(subject.clone(), group)
                .await
                .map_err(|source| ServeError::Subscribe { subject, source })?;
            subscriptions.push((Arc::new(tool), sub));
        }
        // The server has seen the subscriptions once it answers a ping.
        client.flush().await?;

        let specs: Vec<_> = subscriptions.iter().map(|(t, _)| t.spec()).collect();
        let specs = registry::encoded(&specs);
        let mut registration = Registration::new(
            jetstream::new(client.clone()),
            SDK,
            env!("CARGO_PKG_VERSION"),
        );
        let registered = registry::put(&mut registration, &specs).await;
        if registered {
            tracing::info!(tools = ?names, "tools registered");
        }

        // Without the bucket requests are still served, just without deduplication.
        let results = if self.idempotent {
            match idempotency::open_bucket(&jetstream::new(client.clone())).await {
                Ok(store) => Some(store),
                Err(error) => {
                    tracing::warn!(%error, "no results bucket; redelivered calls will run again");
                    None
                }
            }
        } else {
            None
        };

        let tracker = TaskTracker::new();
        for (tool, sub) in subscriptions {
            tracker.spawn(serve_tool(
                tool,
                sub,
                client.clone(),
                results.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        tracker.spawn(registry::refresh(
            registration,
            specs,
            self.refresh_every,
            registered,
            shutdown,
        ));
        // Closed now so `wait` can finish; tasks spawned later by the loops are still tracked.
        tracker.close();
        Ok(Serving { tracker })
    }
}

/// A running server.
#[derive(Debug)]
pub struct Serving {
    tracker: TaskTracker,
}

impl Serving {
    /// Resolves once shutdown was requested and every received request has been answered.
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

/// Reads one tool's subscription until it is drained.
async fn serve_tool(
    tool: Arc<Tool>,
    mut sub: async_nats::Subscriber,
    client: async_nats::Client,
    results: Option<kv::Store>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut draining = false;
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    tracker.spawn(handle_request(
                        tool.clone(),
                        client.clone(),
                        results.clone(),
                        msg,
                    ));
                }
                None => {
                    if !draining {
                        tracing::warn!(tool = %tool.name, "subscription closed");
                    }
                    break;
                }
            },
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                tracing::info!(tool = %tool.name, "draining");
                // Drain unsubscribes and then delivers what is buffered before ending the
                // stream, so requests already routed to us are still answered.
                if let Err(error) = sub.drain().await {
                    tracing::warn!(tool = %tool.name, %error, "drain failed");
                    break;
                }
            }
        }
    }
}

async fn handle_request(
    tool: Arc<Tool>,
    client: async_nats::Client,
    results: Option<kv::Store>,
    msg: async_nats::Message,
) {
    let Some(reply) = msg.reply.clone() else {
        metrics::counter!(crate::metrics::REQUESTS, "tool" => tool.name.clone(), "result" => "no_reply")
            .increment(1);
        tracing::warn!(tool = %tool.name, "request without a reply subject dropped");
        return;
    };
    let started = Instant::now();
    // A child of the caller's `tool` span when the request carries trace context, so the
    // handler's time shows inside the call's trace.
    let span = tracing::info_span!("tool.handle", tool = %tool.name, call_sid = tracing::field::Empty,
        call_id = tracing::field::Empty);
    if let Some(headers) = &msg.headers {
        switchboard_service::trace::set_parent(&span, headers);
    }
    let result = respond(&tool, &msg.payload, results.as_ref())
        .instrument(span)
        .await;
    let label = match &result.result {
        Some(tool_result::Result::Error(e)) => e.code.clone(),
        _ => "ok".to_owned(),
    };
    metrics::counter!(crate::metrics::REQUESTS, "tool" => tool.name.clone(), "result" => label)
        .increment(1);
    metrics::histogram!(crate::metrics::REQUEST_DURATION, "tool" => tool.name.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = client
        .publish(reply, bytes::Bytes::from(result.encode_to_vec()))
        .await
    {
        tracing::warn!(tool = %tool.name, %error, "sending tool result failed");
    }
}

/// Turns one request payload into its [`ToolResult`]; every failure becomes an error result.
async fn respond(tool: &Tool, payload: &[u8], results: Option<&kv::Store>) -> ToolResult {
    let call = match ToolCall::decode(payload) {
        Ok(call) => call,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable tool request");
            return failure(ToolFailure::new(
                codes::INVALID_REQUEST,
                format!("the request is not a switchboard.v1.ToolCall: {e}"),
            ));
        }
    };
    let span = tracing::Span::current();
    span.record("call_sid", call.call_sid.as_str());
    span.record("call_id", call.call_id.as_str());
    if !call.name.is_empty() && call.name != tool.name {
        return failure(ToolFailure::new(
            codes::INVALID_REQUEST,
            format!(
                "the request names tool `{}` but was sent to `{}`",
                call.name, tool.name
            ),
        ));
    }
    let args = match parse_arguments(&call.arguments) {
        Ok(args) => args,
        Err(failure_) => return failure(failure_),
    };
    if let Err(problem) = schema::validate(&tool.parameters, &args) {
        return failure(ToolFailure::invalid_arguments(format!(
            "invalid arguments for `{}`: {problem}",
            tool.name
        )));
    }

    let timeout = handler_deadline(tool.timeout, call.timeout_ms);
    let dedupe = results.and_then(|store| {
        idempotency::key(&tool.name, &call.call_sid, &call.call_id).map(|key| (store, key))
    });
    let mut claimed = None;
    if let Some((store, key)) = dedupe {
        match idempotency::claim(store, &key, tool.timeout, timeout).await {
            Ok(Claim::Run(revision)) => claimed = Some((store, key, revision)),
            Ok(Claim::Answered(result)) => {
                tracing::info!("redelivered tool call answered with the stored result");
                return result;
            }
            Err(error) => tracing::warn!(%error, "tool call deduplication unavailable"),
        }
    }
    let ctx = ToolContext::new(call.call_sid, call.call_id, call.agent_id, call.caller);
    let result = run_handler(tool, ctx, args, timeout).await;
    if let Some((store, key, revision)) = claimed
        && let Err(error) = idempotency::finish(store, &key, revision, &result).await
    {
        tracing::warn!(%error, "storing the tool result for redeliveries failed");
    }
    result
}

/// Runs the handler with `timeout`, turning panics and timeouts into error results.
async fn run_handler(tool: &Tool, ctx: ToolContext, args: Value, timeout: Duration) -> ToolResult {
    // Run on this request's task, not a spawned one: a hand-off to another task costs a wake-up
    // per request, which is most of what the tool path adds. A panic is caught at this await
    // instead of unwinding through the server; a timeout drops (cancels) the handler.
    let handler = std::panic::AssertUnwindSafe((tool.handler)(ctx.clone(), args)).catch_unwind();
    let outcome = match tokio::time::timeout(timeout, handler).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(payload)) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(tool = %tool.name, panic = %what, "tool handler panicked");
            Err(ToolFailure::new(
                codes::PANICKED,
                format!("`{}` crashed while handling the request", tool.name),
            ))
        }
        Err(_elapsed) => {
            tracing::warn!(tool = %tool.name, ?timeout, "tool handler timed out");
            Err(ToolFailure::new(
                codes::TIMEOUT,
                format!(
                    "`{}` did not finish within {} ms",
                    tool.name,
                    timeout.as_millis()
                ),
            ))
        }
    };
    let result = match outcome {
        Ok(value) => tool_result::Result::Output(value.to_string()),
        Err(f) => tool_result::Result::Error(f),
    };
    ToolResult {
        result: Some(result),
        outcome: ctx.outcome().unwrap_or_default().to_owned(),
    }
}

/// Parses the model's argument text. Models send an empty string for a function without
/// parameters, which means `{}`.
fn parse_arguments(text: &str) -> Result<Value, ToolFailure> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| {
        ToolFailure::invalid_arguments(format!("the arguments are not valid JSON ({e})"))
    })
}

fn failure(f: ToolFailure) -> ToolResult {
    ToolResult {
        result: Some(tool_result::Result::Error(f)),
        outcome: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool() -> Tool {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
            "required": ["n"]});
        Tool::new(
            "double",
            "doubles n",
            schema,
            |ctx: ToolContext, args: Value| async move {
                let n = args["n"].as_i64().unwrap_or_default();
                if n < 0 {
                    panic!("negative");
                }
                if n == 7 {
                    ctx.set_outcome("lucky");
                }
                if n == 99 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(json!({"doubled": n * 2}))
            },
        )
        .unwrap()
        .with_timeout(Duration::from_secs(5))
    }

    fn request(arguments: &str) -> Vec<u8> {
        ToolCall {
            call_sid: "CA1".into(),
            call_id: "call_1".into(),
            name: "double".into(),
            arguments: arguments.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn error_of(r: &ToolResult) -> Option<(&str, &str)> {
        match &r.result {
            Some(tool_result::Result::Error(e)) => Some((e.code.as_str(), e.message.as_str())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn output_and_outcome() {
        let r = respond(&tool(), &request(r#"{"n": 7}"#), None).await;
        assert_eq!(
            r.result,
            Some(tool_result::Result::Output(r#"{"doubled":14}"#.into()))
        );
        assert_eq!(r.outcome, "lucky");
    }

    #[tokio::test]
    async fn bad_requests_become_error_results() {
        let t = tool();
        let r = respond(&t, &[0xff; 8], None).await;
        assert_eq!(error_of(&r).map(|e| e.0), Some(codes::INVALID_REQUEST));
        let r = respond(&t, &request("{n:"), None).await;
        assert_eq!(error_of(&r).map(|e| e.0), Some(codes::INVALID_ARGUMENTS));
        let r = respond(&t, &request(""), None).await;
        let (code, message) = error_of(&r).unwrap();
        assert_eq!(code, codes::INVALID_ARGUMENTS);
        assert!(message.contains("`n`"), "{message}");
        let r = respond(&t, &request(r#"{"n": -1}"#), None).await;
        assert_eq!(error_of(&r).map(|e| e.0), Some(codes::PANICKED));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_handlers_time_out_before_the_callers_deadline() {
        let mut call = ToolCall::decode(request(r#"{"n": 99}"#).as_slice()).unwrap();
        call.timeout_ms = 1000;
        let started = Instant::now();
        let r = respond(&tool(), &call.encode_to_vec(), None).await;
        assert_eq!(error_of(&r).map(|e| e.0), Some(codes::TIMEOUT));
        // Answered before the worker, which gives up at exactly `timeout_ms`, stops waiting.
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(1000) - crate::tool::TIMEOUT_MARGIN
        );
    }
}
