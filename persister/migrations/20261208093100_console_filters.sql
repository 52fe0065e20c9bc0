-- The console's filters compare agent and outcome case-insensitively (`Front-Desk` finds
-- `front-desk`), newest first; the analytics overview scopes by the same agent key.
CREATE INDEX calls_agent_lower_newest ON calls (lower(agent_id), first_event_at DESC, call_sid DESC);
CREATE INDEX calls_outcome_lower_newest ON calls (lower(outcome), first_event_at DESC, call_sid DESC);
-- Calls in progress (the live view's catch-up): few rows, found without a scan.
CREATE INDEX calls_in_progress ON calls (first_event_at DESC)
    WHERE ended_at IS NULL AND rejected_reason IS NULL;
-- Replaced by the case-insensitive ones; the caller number is matched by substring, which no
-- b-tree serves.
DROP INDEX IF EXISTS calls_agent_newest;
DROP INDEX IF EXISTS calls_outcome_newest;
DROP INDEX IF EXISTS calls_from_newest;
