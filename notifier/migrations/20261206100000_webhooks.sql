-- Webhook delivery state: what is owed to which endpoint, every attempt, and which endpoints
-- answered 410 Gone.

-- Call events as JSON, kept so the end-of-call report can be built from the events alone.
CREATE TABLE notifier_call_events (
    call_sid TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    data JSONB NOT NULL,
    kept_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (call_sid, seq)
);
CREATE INDEX notifier_call_events_kept ON notifier_call_events (kept_at);

-- One row per (endpoint, event): the webhook-id is derived from both, so a redelivered event
-- finds its row and the body, once written, never changes.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_url TEXT NOT NULL,
    event_type TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    -- NULL until the end-of-call report is built (at its first attempt).
    body TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status INT,
    last_error TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_url, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_url, created_at DESC);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt INT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    webhook_timestamp BIGINT NOT NULL,
    status INT,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE webhook_endpoints (
    url TEXT PRIMARY KEY,
    disabled_at TIMESTAMPTZ,
    disabled_reason TEXT
);
