//! The names of the persister's metrics, typed once (dashboards and alerts in
//! docs/operations.md use them).

/// Counter (`kind`, `result`): events applied, by event kind and outcome.
pub const EVENTS: &str = "persister_events_total";
/// Counter: events the database refused (terminated, not retried).
pub const EVENTS_REJECTED: &str = "persister_events_rejected_total";
/// Counter: messages on the event stream that are not `CallEvent`s (terminated).
pub const EVENTS_UNDECODABLE: &str = "persister_events_undecodable_total";
/// Counter (`kind`): failures opening or reading the durable consumer.
pub const CONSUMER_ERRORS: &str = "persister_consumer_errors_total";
/// Counter: writes of events that failed on the database (the events are redelivered).
pub const DB_ERRORS: &str = "persister_db_errors_total";
/// Counter: read API queries that failed on the database.
pub const API_DB_ERRORS: &str = "persister_api_db_errors_total";
/// Histogram, seconds: applying one batch of events in its transaction.
pub const BATCH_WRITE: &str = "persister_batch_write_seconds";
/// Histogram: events per applied batch.
pub const BATCH_SIZE: &str = "persister_batch_size";
/// Histogram, seconds: from an event's time to its commit.
pub const EVENT_AGE: &str = "persister_event_age_seconds";
/// Histogram, seconds: applying one event on its own.
pub const WRITE: &str = "persister_write_seconds";
/// Gauge: events on the stream the durable consumer has not been delivered yet.
pub const PENDING_EVENTS: &str = "persister_pending_events";
/// Gauge: events delivered to the durable consumer and not yet acknowledged.
pub const ACK_PENDING_EVENTS: &str = "persister_ack_pending_events";
/// Gauge: console clients following `GET /api/live`.
pub const LIVE_CLIENTS: &str = "persister_live_clients";
/// Counter: live clients cut off because they fell behind their buffer.
pub const LIVE_CLIENTS_DROPPED: &str = "persister_live_clients_dropped_total";
/// Counter: messages on the live subscription that are not `CallEvent`s (skipped).
pub const LIVE_UNDECODABLE: &str = "persister_live_undecodable_total";
/// Counter: console sign-ins with a wrong token.
pub const LOGIN_FAILURES: &str = "persister_login_failures_total";
/// Counter: recordings that could not be read from the recording store (503 to the client).
pub const RECORDING_READ_ERRORS: &str = "persister_recording_read_errors_total";
/// Counter: recordings the retention sweep deleted.
pub const RECORDINGS_DELETED: &str = "persister_recordings_deleted_total";
/// Counter: retention sweeps that failed (retried at the next sweep).
pub const RETENTION_ERRORS: &str = "persister_recording_retention_errors_total";
