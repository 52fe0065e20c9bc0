-- Who served each part of a call: one row per `owner` event (epoch 0 took the new call, each
-- takeover or hand-over is one more). Never transcript lines. And the seq of the `ended` event
-- that decided the call's end: after a takeover the highest seq wins.
CREATE TABLE call_owners (
    call_sid            text        NOT NULL,
    seq                 bigint      NOT NULL,
    epoch               bigint      NOT NULL,
    worker_id           text        NOT NULL,
    reason              text        NOT NULL,
    previous_worker_id  text,
    gap_ms              bigint      NOT NULL,
    agent_id            text,
    at                  timestamptz NOT NULL,
    PRIMARY KEY (call_sid, seq)
);

ALTER TABLE calls ADD COLUMN ended_seq bigint;
