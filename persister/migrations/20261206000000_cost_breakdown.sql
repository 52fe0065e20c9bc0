-- The itemised model and transcription cost of a call (pricing::CostBreakdown as JSON), computed
-- with `cost_usd` when `ended` is written.
ALTER TABLE calls ADD COLUMN cost_breakdown jsonb;
