//! The dialer's metric names.

/// Calls Twilio took.
pub const CALLS_PLACED: &str = "dialer_calls_placed_total";
/// Create requests Twilio refused (the attempt failed).
pub const CALLS_REFUSED: &str = "dialer_calls_refused_total";
/// 429 / 20429 answers, each repeated.
pub const TWILIO_THROTTLED: &str = "dialer_twilio_throttled_total";
/// Attempts ended, by `result`.
pub const ATTEMPTS_FINISHED: &str = "dialer_attempts_finished_total";
/// Database errors of the dial loop and the result consumer.
pub const DB_ERRORS: &str = "dialer_db_errors_total";
