-- Outbound campaigns: what to dial, who, how fast, and every attempt's result.

CREATE TABLE campaigns (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    agent_id TEXT NOT NULL,
    -- The caller ID (a Twilio number of the account).
    from_number TEXT NOT NULL,
    calls_per_second DOUBLE PRECISION NOT NULL,
    max_concurrent INT NOT NULL,
    -- running, paused, cancelled, completed.
    state TEXT NOT NULL,
    -- {"busy": {"max_attempts", "delay_seconds"}, "no_answer": ..., "voicemail": ..., "failed": ...}
    retry JSONB NOT NULL,
    -- Calling hours in each contact's local time; NULL = any time. end < start spans midnight.
    hours_start TIME,
    hours_end TIME,
    time_zone TEXT NOT NULL DEFAULT 'UTC',
    -- The pacer shared by every dialer replica: the earliest moment the next call may be placed.
    next_dial_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE campaign_contacts (
    id BIGSERIAL PRIMARY KEY,
    campaign_id UUID NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    position INT NOT NULL,
    to_number TEXT NOT NULL,
    vars JSONB NOT NULL DEFAULT '{}',
    -- NULL = the campaign's.
    time_zone TEXT,
    -- pending, dialing, done, dnc, cancelled.
    state TEXT NOT NULL DEFAULT 'pending',
    -- The last attempt's result (answered, busy, no_answer, voicemail, failed).
    result TEXT,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, position)
);
CREATE INDEX campaign_contacts_due ON campaign_contacts (campaign_id, next_attempt_at)
    WHERE state = 'pending';

CREATE TABLE campaign_attempts (
    id BIGSERIAL PRIMARY KEY,
    contact_id BIGINT NOT NULL REFERENCES campaign_contacts (id) ON DELETE CASCADE,
    campaign_id UUID NOT NULL,
    -- NULL until Twilio answered the create request.
    call_sid TEXT UNIQUE,
    -- The moment the pacer gave this attempt.
    dial_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Twilio's AnsweredBy, once the answering-machine verdict came.
    answered_by TEXT,
    result TEXT,
    error TEXT,
    finished_at TIMESTAMPTZ
);
CREATE INDEX campaign_attempts_open ON campaign_attempts (campaign_id) WHERE finished_at IS NULL;

-- Numbers never to call, checked when a contact is about to be dialed.
CREATE TABLE do_not_call (
    number TEXT PRIMARY KEY,
    reason TEXT NOT NULL DEFAULT '',
    added_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The account's calls-per-second cap, shared by every campaign and every dialer replica: the
-- earliest moment the account's next call may be placed.
CREATE TABLE dial_pacers (
    account TEXT PRIMARY KEY,
    next_dial_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
