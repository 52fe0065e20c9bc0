//! The `persister` configuration: it refuses to start without an admin token or with an unusable
//! `PUBLIC_URL`, and its `Debug` output holds no credential.

use std::time::Duration;

use switchboard_testkit::{Service, eventually, free_port};

#[tokio::test]
async fn refuses_to_start_without_admin_token() -> anyhow::Result<()> {
    for token in [None, Some("")] {
        let mut env = vec![
            ("LISTEN", format!("127.0.0.1:{}", free_port())),
            ("DATABASE_URL", "postgres://127.0.0.1:1/none".to_owned()),
        ];
        if let Some(token) = token {
            env.push(("ADMIN_TOKEN", token.to_owned()));
        }
        let mut persister = Service::spawn("persister", &env)?;
        let status = eventually(Duration::from_secs(10), "persister exit", || {
            let status = persister.try_exit_status();
            async move { status }
        })
        .await?;
        assert!(!status.success());
        let log = persister.log();
        assert!(log.contains("ADMIN_TOKEN is not set"), "{log}");
    }
    Ok(())
}

#[test]
fn debug_output_holds_no_credential() -> anyhow::Result<()> {
    use clap::Parser;
    let config = persister::Config::try_parse_from([
        "persister",
        "--database-url",
        "postgres://persister:db-pa55word@db:5432/switchboard",
        "--admin-token",
        "admin-t0ken-value",
        "--nats-user",
        "persister",
        "--nats-password",
        "nats-pa55word",
    ])?;
    assert_eq!(
        config.database_url.expose(),
        "postgres://persister:db-pa55word@db:5432/switchboard"
    );
    let printed = format!("{config:?} {config:#?}");
    for secret in ["db-pa55word", "admin-t0ken-value", "nats-pa55word"] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    // Everything else is still there to debug with.
    assert!(printed.contains("0.0.0.0:8083"), "{printed}");
    Ok(())
}

#[tokio::test]
async fn refuses_a_public_url_that_is_not_http() -> anyhow::Result<()> {
    for url in [
        "console.example.com",
        "ftp://console.example.com",
        "https://",
    ] {
        let env = vec![
            ("LISTEN", format!("127.0.0.1:{}", free_port())),
            ("DATABASE_URL", "postgres://127.0.0.1:1/none".to_owned()),
            ("ADMIN_TOKEN", "t".to_owned()),
            ("PUBLIC_URL", url.to_owned()),
        ];
        let mut persister = Service::spawn("persister", &env)?;
        let status = eventually(Duration::from_secs(10), "persister exit", || {
            let status = persister.try_exit_status();
            async move { status }
        })
        .await?;
        assert!(!status.success(), "{url}");
        let log = persister.log();
        assert!(log.contains("PUBLIC_URL must be"), "{url}: {log}");
    }
    Ok(())
}
