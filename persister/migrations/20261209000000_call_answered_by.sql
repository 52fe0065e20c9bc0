-- Twilio's answering-machine verdict on an outbound call created with asynchronous AMD
-- (`AnsweredBy`: `human`, `machine_end_beep`, `fax`, ...), from the call's `amd` event. NULL for
-- calls without detection and until the verdict.
ALTER TABLE calls ADD COLUMN answered_by text;
