//! The `persister` binary refuses to start without an admin token.

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
