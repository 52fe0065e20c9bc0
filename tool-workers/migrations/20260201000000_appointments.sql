-- The demo clinic's schedule and bookings, behind `check_availability` and `book_appointment`.

-- One row: the clinic's time zone (opening hours and spoken times are local) and slot length.
CREATE TABLE clinic_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    timezone     text NOT NULL,
    slot_minutes integer NOT NULL CHECK (slot_minutes BETWEEN 5 AND 240)
);
INSERT INTO clinic_settings (timezone, slot_minutes) VALUES ('America/New_York', 30);

-- Weekly opening hours; a weekday without a row is closed. 0 = Sunday, as EXTRACT(DOW ...).
CREATE TABLE clinic_hours (
    weekday smallint PRIMARY KEY CHECK (weekday BETWEEN 0 AND 6),
    opens   time NOT NULL,
    closes  time NOT NULL CHECK (closes > opens)
);
INSERT INTO clinic_hours (weekday, opens, closes) VALUES
    (1, '09:00', '17:00'),
    (2, '09:00', '17:00'),
    (3, '09:00', '19:00'),
    (4, '09:00', '17:00'),
    (5, '09:00', '17:00'),
    (6, '09:00', '13:00');

CREATE TABLE appointments (
    id         bigserial PRIMARY KEY,
    starts_at  timestamptz NOT NULL,
    phone      text NOT NULL CHECK (phone ~ '^\+[0-9]{6,15}$'),
    name       text,
    -- The invocation that booked it (NULL when booked without one), so a redelivered
    -- `book_appointment` finds its booking instead of booking again.
    call_sid   text,
    call_id    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- One patient per slot: a second booking fails with this constraint (`slot_taken`).
    CONSTRAINT appointments_slot_taken UNIQUE (starts_at),
    CONSTRAINT appointments_invocation UNIQUE (call_sid, call_id)
);
