//! The names of the tool-worker's metrics, typed once (dashboards and alerts in
//! docs/operations.md use them).

/// Counter (`tool`, `result`): requests answered, by the `ToolError.code` sent (`ok` for an
/// output, `no_reply` for a request without a reply subject).
pub const REQUESTS: &str = "tool_requests_total";
/// Histogram (`tool`), seconds: from receiving a request to its reply being ready.
pub const REQUEST_DURATION: &str = "tool_request_duration_seconds";
/// Counter: re-registrations of the tools' specs in the registry that failed.
pub const REGISTRY_ERRORS: &str = "tool_registry_errors_total";
/// Counter: redelivered requests answered with the first delivery's result.
pub const DUPLICATE_REQUESTS: &str = "tool_duplicate_requests_total";
