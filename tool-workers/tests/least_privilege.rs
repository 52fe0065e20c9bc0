//! The `tool-worker` binary under the database roles k8s/ ships: a real Postgres bootstrapped
//! with the init SQL of `k8s/base/postgres.yaml`, the migrations applied by `--migrate only` as
//! the tools database owner (the init container), and the service running with `--migrate skip`
//! as `switchboard_tool_worker`, which can serve the example tools and nothing more. Its log
//! holds the caller's number only masked, even when the database is down.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use switchboard_proto::{ToolResult, tool_result};
use switchboard_testkit::{NatsServer, Postgres, Service, eventually, free_port, workspace_root};

mod common;
use common::{invoke, output};

const CALLER: &str = "+15550001234";

/// The `postInitApplicationSQL` statements of the CloudNativePG cluster in k8s/base.
fn init_sql() -> anyhow::Result<Vec<String>> {
    let yaml = std::fs::read_to_string(workspace_root().join("k8s/base/postgres.yaml"))?;
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "postInitApplicationSQL:")
        .skip(1);
    let mut statements = Vec::new();
    for line in lines.by_ref() {
        match line.trim_start().strip_prefix("- ") {
            Some(statement) if line.starts_with("        ") => {
                statements.push(statement.trim().to_owned());
            }
            _ => break,
        }
    }
    anyhow::ensure!(
        !statements.is_empty(),
        "no postInitApplicationSQL in postgres.yaml"
    );
    Ok(statements)
}

fn url(pg: &Postgres, role: &str, db: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{}/{db}", pg.port())
}

/// A SQL statement run as `role` on `db`; the error text if it was refused.
async fn refused(pg: &Postgres, role: &str, db: &str, sql: &'static str) -> Option<String> {
    let mut conn = match PgConnection::connect(&url(pg, role, db)).await {
        Ok(conn) => conn,
        Err(error) => return Some(error.to_string()),
    };
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .err()
        .map(|e| e.to_string())
}

async fn call(
    client: &async_nats::Client,
    tool: &str,
    call_id: &str,
    arguments: Value,
) -> anyhow::Result<ToolResult> {
    invoke(client, ("CA0789", CALLER), tool, call_id, arguments, 8000).await
}

#[tokio::test]
async fn the_tool_worker_runs_as_a_role_with_only_the_tools_grants() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let pg = Postgres::start().await?;

    // What CloudNativePG does before the init SQL: the application role owns `switchboard`.
    let mut admin = PgConnection::connect(&pg.url("postgres")).await?;
    for statement in [
        "CREATE ROLE switchboard LOGIN",
        "CREATE DATABASE switchboard OWNER switchboard",
    ] {
        sqlx::raw_sql(statement).execute(&mut admin).await?;
    }
    admin.close().await?;
    let mut admin = PgConnection::connect(&pg.url("switchboard")).await?;
    for statement in init_sql()? {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut admin)
            .await
            .with_context(|| statement)?;
    }
    admin.close().await?;

    let runtime_url = url(&pg, "switchboard_tool_worker", "switchboard_tools");
    let listen = format!("127.0.0.1:{}", free_port());
    let runtime_env = |listen: &str| {
        vec![
            ("LISTEN", listen.to_owned()),
            ("DATABASE_URL", runtime_url.clone()),
            ("NATS_URL", nats.url().to_owned()),
            ("MIGRATE", "skip".to_owned()),
            ("RUST_LOG", "info,tool_workers=debug".to_owned()),
        ]
    };

    // Before the init container has run, the runtime role cannot serve: it says why and exits.
    let mut early = Service::spawn("tool-worker", &runtime_env(&listen))?;
    let status = exited(&mut early).await?;
    assert!(!status.success());
    assert!(early.log().contains("lacks migrations"), "{}", early.log());
    // Nor can it apply the migrations itself.
    let mut own = Service::spawn(
        "tool-worker",
        &[
            ("LISTEN", format!("127.0.0.1:{}", free_port())),
            ("DATABASE_URL", runtime_url.clone()),
            ("MIGRATE", "only".to_owned()),
        ],
    )?;
    let status = exited(&mut own).await?;
    assert!(!status.success(), "the runtime role ran DDL: {}", own.log());

    // The init container: the owner applies the migrations (twice is harmless) and exits 0.
    for _ in 0..2 {
        let mut migrate = Service::spawn(
            "tool-worker",
            &[
                ("LISTEN", format!("127.0.0.1:{}", free_port())),
                (
                    "DATABASE_URL",
                    url(&pg, "switchboard_tools", "switchboard_tools"),
                ),
                ("MIGRATE", "only".to_owned()),
            ],
        )?;
        let status = exited(&mut migrate).await?;
        assert!(status.success(), "migrate: {}", migrate.log());
    }

    // The service as the runtime role: every example tool works.
    let mut worker = Service::spawn("tool-worker", &runtime_env(&listen))?;
    worker.wait_ready(&listen).await?;
    let client = async_nats::connect(nats.url()).await?;
    let found = output(&call(&client, "lookup_customer", "c1", json!({})).await?)?;
    assert_eq!(found["name"], "Maria Garcia", "{found}");
    let day = output(
        &call(
            &client,
            "check_availability",
            "c2",
            json!({"date": "2030-06-03"}),
        )
        .await?,
    )?;
    assert_eq!(day["open"], true, "{day}");
    let booked = call(
        &client,
        "book_appointment",
        "c3",
        json!({"date": "2030-06-03", "time": "09:00"}),
    )
    .await?;
    assert_eq!(output(&booked)?["phone"], CALLER);
    assert_eq!(booked.outcome, "booked");

    // ... and nothing beyond them.
    let as_runtime = |sql| refused(&pg, "switchboard_tool_worker", "switchboard_tools", sql);
    for sql in [
        "UPDATE customers SET notes = 'x'",
        "DELETE FROM customers",
        "INSERT INTO customers (phone, name) VALUES ('+15550000000', 'x')",
        "UPDATE appointments SET phone = '+15550005678'",
        "DELETE FROM appointments",
        "UPDATE clinic_hours SET closes = '23:00'",
        "CREATE TABLE stolen (x int)",
        "DROP TABLE appointments",
        "DELETE FROM _sqlx_migrations",
    ] {
        let error = as_runtime(sql).await;
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("permission denied") || e.contains("must be owner")),
            "{sql}: {error:?}"
        );
    }
    assert_eq!(as_runtime("SELECT count(*) FROM appointments").await, None);
    // No role reaches the other service's database.
    for (role, db) in [
        ("switchboard_tool_worker", "switchboard"),
        ("switchboard_tools", "switchboard"),
        ("switchboard", "switchboard_tools"),
    ] {
        let error = refused(&pg, role, db, "SELECT 1").await;
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("permission denied")),
            "{role} on {db}: {error:?}"
        );
    }

    // The database goes away: the lookup fails clearly, and the log masks the caller.
    pg.stop_server().await?;
    let down = call(&client, "lookup_customer", "c4", json!({})).await?;
    match &down.result {
        Some(tool_result::Result::Error(e)) => assert_eq!(e.code, "unavailable", "{e:?}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let status = worker.terminate(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status {status}");
    let log = worker.log();
    assert!(log.contains("customer lookup failed"), "{log}");
    assert!(log.contains("+1********34"), "{log}");
    assert!(
        !log.contains(CALLER),
        "the caller's number is in the log: {log}"
    );
    Ok(())
}

/// Waits for a process that exits on its own; its exit status.
async fn exited(service: &mut Service) -> anyhow::Result<std::process::ExitStatus> {
    eventually(Duration::from_secs(20), "process exit", || {
        let status = service.try_exit_status();
        async move { status }
    })
    .await
}
