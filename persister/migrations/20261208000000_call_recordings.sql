-- A call's recording: where the gateway stored its WAV (a location inside the recording store
-- `RECORDINGS_URL` names), how long it is and how many channels it has. One per call: a call
-- re-attached after its gateway died is recorded again from its new stream, and the newest
-- stream's recording is the one kept. The retention sweep deletes rows with their objects.
CREATE TABLE call_recordings (
    call_sid     text        PRIMARY KEY,
    stream       bigint      NOT NULL,
    location     text        NOT NULL,
    duration_ms  bigint      NOT NULL,
    channels     integer     NOT NULL,
    bytes        bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL
);
