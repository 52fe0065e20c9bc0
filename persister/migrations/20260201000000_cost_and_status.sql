-- The estimated cost of a call (from its usage, at the prices configured when `ended` was
-- written) and the latest Twilio status callback.
ALTER TABLE calls
    ADD COLUMN cost_usd                double precision,
    ADD COLUMN twilio_status           text,
    -- Twilio's SequenceNumber of the status applied, so a late older callback cannot win.
    ADD COLUMN twilio_status_seq       bigint,
    ADD COLUMN twilio_duration_seconds bigint,
    ADD COLUMN twilio_sip_response_code integer;

CREATE INDEX calls_from_newest ON calls (from_number, first_event_at DESC, call_sid DESC);
CREATE INDEX calls_outcome_newest ON calls (outcome, first_event_at DESC, call_sid DESC);
