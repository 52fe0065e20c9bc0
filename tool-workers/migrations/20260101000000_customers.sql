-- The demo customer directory behind `lookup_customer`.
CREATE TABLE customers (
    -- E.164, the form `lookup_customer` normalizes to.
    phone      text PRIMARY KEY CHECK (phone ~ '^\+[0-9]{6,15}$'),
    name       text NOT NULL,
    tier       text NOT NULL DEFAULT 'standard',
    notes      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customers (phone, name, tier, notes) VALUES
    ('+15550001234', 'Maria Garcia', 'gold', 'Prefers morning appointments'),
    ('+15550005678', 'James Chen', 'silver', 'Hygiene visit every six months'),
    ('+15550009876', 'Aisha Khan', 'standard', 'New patient; referred by Maria Garcia'),
    ('+442071234567', 'Oliver Smith', 'gold', 'Calls from London; prefers afternoon slots');
