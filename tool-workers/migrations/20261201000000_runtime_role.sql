-- What the tool-worker may do when it connects as its runtime role `switchboard_tool_worker`
-- (k8s/base/postgres.yaml creates the role; these migrations run as the database owner): read the
-- customer directory and the clinic schedule, read and add appointments, and read which
-- migrations are applied. Nothing else: no changes to customers, no DDL, no other database.
-- Where the role does not exist (a development database with one role), there is nothing to grant.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchboard_tool_worker') THEN
        GRANT SELECT ON customers, clinic_settings, clinic_hours, _sqlx_migrations
            TO switchboard_tool_worker;
        GRANT SELECT, INSERT ON appointments TO switchboard_tool_worker;
        GRANT USAGE ON SEQUENCE appointments_id_seq TO switchboard_tool_worker;
    END IF;
END
$$;
