//! The notifier's metric names, typed once.

/// Counter, by `kind`: call events the consumer kept and scheduled deliveries for.
pub const EVENTS: &str = "notifier_events_total";
/// Counter: messages on `VOICE_EVENTS` that were not a `CallEvent` (terminated, not retried).
pub const EVENTS_UNDECODABLE: &str = "notifier_events_undecodable_total";
/// Counter: database errors of the consumer (the message is redelivered).
pub const DB_ERRORS: &str = "notifier_db_errors_total";
/// Counter, by `result`: delivery attempts.
pub const ATTEMPTS: &str = "notifier_attempts_total";
/// Histogram: seconds per delivery attempt.
pub const ATTEMPT_SECONDS: &str = "notifier_attempt_seconds";
