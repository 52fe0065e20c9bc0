-- The call record, built from the VOICE_EVENTS stream (one row per event kind, plus the call).
--
-- Events arrive at least once and in any order. `call_events` is the dedupe ledger: an event's
-- (call_sid, seq) is inserted first in the same transaction as its effect, so a redelivery
-- changes nothing. Any event may create the `calls` row; each kind fills only its own columns.

CREATE TABLE calls (
    call_sid            text PRIMARY KEY,
    agent_id            text,
    from_number         text,
    to_number           text,
    direction           text,          -- 'inbound' | 'outbound'
    worker_id           text,
    model               text,
    started_at          timestamptz,
    ended_at            timestamptz,
    end_reason          text,
    outcome             text,
    outcome_detail      text,
    -- seq of the outcome event applied, so a late older outcome cannot replace a newer one.
    outcome_seq         bigint,
    duration_ms         bigint,
    input_tokens        bigint,
    output_tokens       bigint,
    input_audio_tokens  bigint,
    output_audio_tokens bigint,
    input_text_tokens   bigint,
    output_text_tokens  bigint,
    cached_tokens       bigint,
    rejected_reason     text,
    -- Time of the earliest event seen: the sort key of "newest first" (a rejected call has no
    -- `started_at`).
    first_event_at      timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX calls_newest ON calls (first_event_at DESC, call_sid DESC);
CREATE INDEX calls_agent_newest ON calls (agent_id, first_event_at DESC, call_sid DESC);

CREATE TABLE call_events (
    call_sid    text NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    stream_seq  bigint,               -- JetStream stream sequence of the copy that was applied
    at          timestamptz NOT NULL, -- when it happened (the event's at_ms)
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE transcript_entries (
    call_sid    text NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    role        text NOT NULL,        -- 'user' | 'assistant' | 'system'
    text        text NOT NULL,
    item_id     text,
    interrupted boolean NOT NULL DEFAULT false,
    heard_ms    bigint NOT NULL DEFAULT 0,
    offset_ms   bigint NOT NULL DEFAULT 0,
    at          timestamptz NOT NULL,
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE tool_invocations (
    call_sid      text NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    call_id       text NOT NULL,
    name          text NOT NULL,
    arguments     text NOT NULL,      -- as the model produced it (usually, not always, JSON)
    output        text,               -- JSON text, when the tool answered
    error_code    text,               -- when it failed
    error_message text,
    latency_ms    bigint NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE turns (
    call_sid    text NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    kind        text NOT NULL,        -- 'greeting' | 'response'
    latency_ms  bigint NOT NULL,
    response_id text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (call_sid, seq)
);
