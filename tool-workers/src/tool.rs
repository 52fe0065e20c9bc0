//! A tool: its name, what the model is told about it, and the async handler that serves it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use switchboard_proto::ToolSpec;
use switchboard_proto::subject::{InvalidToken, validate_tool_name};
use switchboard_service::redact::MaskedPhone;

/// How long a tool may run when its declaration does not say. Matches the call-worker's default
/// `TOOL_TIMEOUT_MS`, so a handler is not left running after the caller has given up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);

/// Time kept between the handler's deadline and the call-worker's: the worker gives up at
/// exactly `ToolCall.timeout_ms` after sending, so a handler stopped only then would answer too
/// late for its `timeout` (or anything else) to reach the model.
pub const TIMEOUT_MARGIN: Duration = Duration::from_millis(200);

/// How long a handler may run: the tool's own timeout, and the call's deadline (`call_timeout_ms`,
/// 0 for none) less [`TIMEOUT_MARGIN`] (at most half of it), whichever is shorter.
pub fn handler_deadline(tool_timeout: Duration, call_timeout_ms: u32) -> Duration {
    if call_timeout_ms == 0 {
        return tool_timeout;
    }
    let call = Duration::from_millis(u64::from(call_timeout_ms));
    tool_timeout.min(call - TIMEOUT_MARGIN.min(call / 2))
}

/// The `ToolError.code` values of the contract (typed once in
/// [`switchboard_proto::event::ToolErrorCode`]), as strings for handlers' [`ToolFailure::new`].
pub mod codes {
    use switchboard_proto::event::ToolErrorCode as Code;

    /// The request was not a `ToolCall`.
    pub const INVALID_REQUEST: &str = Code::InvalidRequest.as_str();
    /// The arguments were not JSON or did not match the tool's schema.
    pub const INVALID_ARGUMENTS: &str = Code::InvalidArguments.as_str();
    /// The thing the tool looked for does not exist.
    pub const NOT_FOUND: &str = Code::NotFound.as_str();
    /// The tool ran and failed.
    pub const FAILED: &str = Code::Failed.as_str();
    /// The tool did not finish within its timeout.
    pub const TIMEOUT: &str = Code::Timeout.as_str();
    /// Something the tool depends on (a database, an API) is down.
    pub const UNAVAILABLE: &str = Code::Unavailable.as_str();
    /// The handler panicked; the server caught it and kept serving.
    pub const PANICKED: &str = Code::Panicked.as_str();
}

/// Who is asking: the phone call the model is serving when it called the tool.
///
/// Everything here comes from the call, not from the model: the model only chooses the
/// arguments. A tool that reads or changes someone's records takes the person from
/// [`ToolContext::caller_number`], never from an argument, so a caller cannot talk the model
/// into acting for somebody else ("my number is ...").
///
/// Handlers get it by value; clones share the outcome slot, so a handler may hand a clone to a
/// helper task and still have [`ToolContext::set_outcome`] reach the reply. Its `Debug` masks
/// the caller's number, so logging a context does not log the number.
#[derive(Clone)]
pub struct ToolContext {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// The model's function-call id. Together with `call_sid` it identifies the invocation, so a
    /// tool with side effects can recognise a redelivered request.
    pub call_id: String,
    /// The agent running the call.
    pub agent_id: String,
    /// The caller's number as the phone network reported it to Twilio (the `From` of the
    /// signed webhook): E.164 for phone calls, `client:NAME` or text such as `anonymous`
    /// otherwise. See [`ToolContext::caller_number`].
    pub caller: String,
    outcome: Arc<OnceLock<String>>,
}

impl ToolContext {
    /// A context for the given call (the server builds these; handlers' unit tests may too).
    pub fn new(
        call_sid: impl Into<String>,
        call_id: impl Into<String>,
        agent_id: impl Into<String>,
        caller: impl Into<String>,
    ) -> Self {
        Self {
            call_sid: call_sid.into(),
            call_id: call_id.into(),
            agent_id: agent_id.into(),
            caller: caller.into(),
            outcome: Arc::default(),
        }
    }

    /// The caller's phone number in E.164 (`+` and 7 to 15 digits), or `None` when the call did
    /// not come from a phone number (a withheld number, a browser or SIP client). This is the
    /// identity to look records up by; the model cannot change it.
    pub fn caller_number(&self) -> Option<&str> {
        let number = self.caller.trim();
        let digits = number.strip_prefix('+')?;
        ((7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(number)
    }

    /// Sets the call's business outcome (e.g. `booked`), sent back in `ToolResult.outcome`.
    /// The first outcome set wins; returns whether this one was taken.
    pub fn set_outcome(&self, outcome: impl Into<String>) -> bool {
        self.outcome.set(outcome.into()).is_ok()
    }

    /// The outcome set by the handler, if any.
    pub fn outcome(&self) -> Option<&str> {
        self.outcome.get().map(String::as_str)
    }
}

impl fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("call_sid", &self.call_sid)
            .field("call_id", &self.call_id)
            .field("agent_id", &self.agent_id)
            .field("caller", &MaskedPhone(&self.caller))
            .field("outcome", &self.outcome())
            .finish()
    }
}

/// Why a tool call failed: sent to the model as `ToolError { code, message }` so it can recover
/// in conversation (apologise, ask again, offer a transfer). It is the contract's
/// [`switchboard_proto::ToolError`] itself, with constructors for the common codes
/// (`ToolFailure::not_found(...)`, `invalid_arguments`, `failed`, `unavailable`, `new` for a
/// tool's own code): one type from the handler to the model and the record.
pub type ToolFailure = switchboard_proto::ToolError;

/// What a handler returns: the output JSON, or a failure for the model.
pub type ToolOutcome = Result<Value, ToolFailure>;

type BoxFuture = Pin<Box<dyn Future<Output = ToolOutcome> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(ToolContext, Value) -> BoxFuture + Send + Sync>;

/// Why a tool declaration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ToolDefinitionError {
    /// The name breaks OpenAI's function-name rule (and so is no safe subject token).
    #[error(transparent)]
    Name(#[from] InvalidToken),
    /// The model only accepts object schemas as function parameters.
    #[error("the parameters of tool `{0}` must be a JSON Schema object with \"type\": \"object\"")]
    Parameters(String),
}

/// A declared tool: what the model is told about it and the handler that serves it.
#[derive(Clone)]
pub struct Tool {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) parameters: Value,
    pub(crate) timeout: Duration,
    pub(crate) version: String,
    pub(crate) handler: Handler,
}

impl Tool {
    /// Declares a tool. `parameters` is the JSON Schema of its arguments (an object schema);
    /// requests are checked against it before `handler` runs, so handlers can rely on required
    /// fields being present with the declared types.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Result<Self, ToolDefinitionError>
    where
        F: Fn(ToolContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ToolOutcome> + Send + 'static,
    {
        let name = name.into();
        validate_tool_name(&name)?;
        if parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(ToolDefinitionError::Parameters(name));
        }
        Ok(Self {
            name,
            description: description.into(),
            parameters,
            timeout: DEFAULT_TIMEOUT,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            handler: Arc::new(move |ctx, args| Box::pin(handler(ctx, args))),
        })
    }

    /// Declares a tool whose arguments are the Rust type `A`: the JSON Schema the model sees is
    /// derived from `A` (see [`schema::object_schema_for`](crate::schema::object_schema_for)),
    /// and the handler gets the arguments already deserialized, so the schema and the code that
    /// reads the arguments cannot drift apart. Arguments that do not deserialize into `A` are
    /// answered with `invalid_arguments` without calling the handler.
    ///
    /// `A` must be a struct (a JSON object); doc comments on its fields become the field
    /// descriptions the model reads.
    pub fn typed<A, F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        handler: F,
    ) -> Result<Self, ToolDefinitionError>
    where
        A: schemars::JsonSchema + DeserializeOwned + Send + 'static,
        F: Fn(ToolContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ToolOutcome> + Send + 'static,
    {
        let name = name.into();
        let parameters = crate::schema::object_schema_for::<A>()
            .ok_or_else(|| ToolDefinitionError::Parameters(name.clone()))?;
        let handler = Arc::new(handler);
        let tool_name = name.clone();
        Self::new(name, description, parameters, move |ctx, args: Value| {
            let handler = handler.clone();
            let parsed = serde_json::from_value::<A>(args).map_err(|e| {
                ToolFailure::invalid_arguments(format!("invalid arguments for `{tool_name}`: {e}"))
            });
            async move { handler(ctx, parsed?).await }
        })
    }

    /// How long the handler may run; after that the caller gets a `timeout` error and the
    /// handler is cancelled. Also advertised in the [`ToolSpec`] so the worker waits as long.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The implementation version shown to operators in the registry.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON Schema of its arguments.
    pub fn parameters(&self) -> &Value {
        &self.parameters
    }

    /// Its registration in the `voice-tools` bucket.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters_schema: self.parameters.to_string(),
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
            version: self.version.clone(),
        }
    }
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn echo(_: ToolContext, args: Value) -> ToolOutcome {
        Ok(args)
    }

    #[test]
    fn names_and_schemas_are_checked() {
        let schema = json!({"type": "object"});
        assert!(Tool::new("ok_name-1", "d", schema.clone(), echo).is_ok());
        assert!(matches!(
            Tool::new("bad.name", "d", schema, echo),
            Err(ToolDefinitionError::Name(_))
        ));
        assert!(matches!(
            Tool::new("x", "d", json!({"type": "string"}), echo),
            Err(ToolDefinitionError::Parameters(_))
        ));
    }

    #[test]
    fn spec_carries_schema_and_timeout() {
        let schema = json!({"type": "object", "required": ["a"]});
        let tool = Tool::new("t", "does t", schema.clone(), echo)
            .unwrap()
            .with_timeout(Duration::from_millis(1500));
        let spec = tool.spec();
        assert_eq!(spec.name, "t");
        assert_eq!(spec.description, "does t");
        assert_eq!(spec.timeout_ms, 1500);
        let parsed: Value = serde_json::from_str(&spec.parameters_schema).unwrap();
        assert_eq!(parsed, schema);
    }

    /// When the caller would like to come in.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Preference {
        Morning,
        Afternoon,
    }

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Party {
        /// Adults in the party.
        adults: u8,
    }

    /// Books a table.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct BookArgs {
        /// Day of the visit, YYYY-MM-DD.
        date: String,
        /// Morning or afternoon, if the caller said.
        preference: Option<Preference>,
        party: Party,
        tags: Vec<String>,
    }

    fn contains_key(value: &Value, key: &str) -> bool {
        match value {
            Value::Object(map) => {
                map.contains_key(key) || map.values().any(|v| contains_key(v, key))
            }
            Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
            _ => false,
        }
    }

    #[test]
    fn typed_tools_derive_an_inline_object_schema() {
        let tool = Tool::typed("book", "books", |_ctx, args: BookArgs| async move {
            Ok(json!({"date": args.date}))
        })
        .unwrap();
        let schema = tool.parameters();
        assert_eq!(schema["type"], "object");
        for key in ["$ref", "$defs", "definitions", "$schema", "title"] {
            assert!(!contains_key(schema, key), "{key} in {schema}");
        }
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["date", "party", "tags"]);
        let props = &schema["properties"];
        assert_eq!(props["date"]["type"], "string");
        assert_eq!(
            props["date"]["description"],
            "Day of the visit, YYYY-MM-DD."
        );
        assert_eq!(props["party"]["type"], "object");
        assert_eq!(props["party"]["properties"]["adults"]["type"], "integer");
        assert!(
            props["party"]["properties"]["adults"]
                .get("format")
                .is_none()
        );
        assert_eq!(props["tags"]["items"]["type"], "string");
        let preference = props["preference"].to_string();
        assert!(
            preference.contains("morning") && preference.contains("afternoon"),
            "{preference}"
        );
        // The spec carries the same schema.
        let spec_schema: Value = serde_json::from_str(&tool.spec().parameters_schema).unwrap();
        assert_eq!(&spec_schema, schema);
    }

    #[test]
    fn typed_tools_need_object_arguments() {
        let refused = Tool::typed("n", "d", |_ctx, n: u32| async move { Ok(json!(n)) });
        assert!(matches!(refused, Err(ToolDefinitionError::Parameters(_))));
    }

    #[tokio::test]
    async fn typed_handlers_get_deserialized_arguments() {
        let tool = Tool::typed("book", "books", |_ctx, args: BookArgs| async move {
            Ok(json!({"date": args.date, "adults": args.party.adults,
                "morning": matches!(args.preference, Some(Preference::Morning))}))
        })
        .unwrap();
        let ctx = ToolContext::new("CA1", "c1", "a", "+1");
        let args = json!({"date": "2026-01-02", "preference": "morning",
            "party": {"adults": 2}, "tags": []});
        let out = (tool.handler)(ctx.clone(), args).await.unwrap();
        assert_eq!(
            out,
            json!({"date": "2026-01-02", "adults": 2, "morning": true})
        );
        let bad = json!({"date": "2026-01-02", "party": {"adults": 300}, "tags": []});
        let failure = (tool.handler)(ctx, bad).await.unwrap_err();
        assert_eq!(failure.code, codes::INVALID_ARGUMENTS);
        assert!(failure.message.contains("300"), "{}", failure.message);
    }

    #[test]
    fn the_caller_number_is_e164_or_nothing() {
        let with = |caller: &str| ToolContext::new("CA1", "c1", "a", caller);
        assert_eq!(with("+15550001234").caller_number(), Some("+15550001234"));
        assert_eq!(
            with(" +442071234567 ").caller_number(),
            Some("+442071234567")
        );
        for none in [
            "",
            "anonymous",
            "client:alice",
            "sip:bob@example.com",
            "15550001234",
            "+1",
        ] {
            assert_eq!(with(none).caller_number(), None, "{none}");
        }
        assert_eq!(with("+1234567890123456").caller_number(), None);
    }

    #[test]
    fn debug_masks_the_caller() {
        let printed = format!("{:?}", ToolContext::new("CA1", "c1", "a", "+15550001234"));
        assert!(!printed.contains("+15550001234"), "{printed}");
        assert!(printed.contains("+1********34"), "{printed}");
    }

    #[test]
    fn handlers_stop_a_margin_before_the_callers_deadline() {
        let tool = Duration::from_secs(8);
        assert_eq!(
            handler_deadline(tool, 1000),
            Duration::from_millis(1000) - TIMEOUT_MARGIN
        );
        assert_eq!(
            handler_deadline(Duration::from_millis(500), 3000),
            Duration::from_millis(500)
        );
        assert_eq!(handler_deadline(tool, 0), tool);
        assert_eq!(handler_deadline(tool, 100), Duration::from_millis(50));
    }

    #[test]
    fn first_outcome_wins_across_clones() {
        let ctx = ToolContext::new("CA1", "c1", "a", "+1");
        let other = ctx.clone();
        assert!(other.set_outcome("booked"));
        assert!(!ctx.set_outcome("cancelled"));
        assert_eq!(ctx.outcome(), Some("booked"));
    }
}
