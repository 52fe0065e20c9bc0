-- The console's sign-in sessions, shared by every persister replica. A row is a signed-in
-- browser; its cookie holds a random id, and only a hash of that id keyed by the admin token is
-- stored here, so this table holds no usable cookie. Sign-out deletes the row.
CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Sign-in sweeps the expired rows.
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
