-- Ingest throughput: the foreign keys from the event tables to `calls` cost a lookup and a row
-- lock of the call per inserted row (about a third of the database's work per event) and
-- guarded nothing the writers do not already guarantee: every writer inserts the `calls` row
-- first, in the same transaction as the event rows, and nothing deletes calls. Deleting a call
-- now means deleting its rows from `call_events`, `transcript_entries`, `tool_invocations` and
-- `turns` too.
ALTER TABLE call_events DROP CONSTRAINT IF EXISTS call_events_call_sid_fkey;
ALTER TABLE transcript_entries DROP CONSTRAINT IF EXISTS transcript_entries_call_sid_fkey;
ALTER TABLE tool_invocations DROP CONSTRAINT IF EXISTS tool_invocations_call_sid_fkey;
ALTER TABLE turns DROP CONSTRAINT IF EXISTS turns_call_sid_fkey;
