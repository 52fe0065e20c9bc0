//! The test kit starts real servers: JetStream works, Postgres survives a stop/start.

use switchboard_testkit::{NatsServer, Postgres};

#[tokio::test]
async fn nats_server_has_jetstream_and_kv() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "probe".into(),
            ..Default::default()
        })
        .await?;
    kv.put("k", "v".into()).await?;
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[tokio::test]
async fn postgres_restarts_with_its_data() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let url = pg.create_database("probe").await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query("CREATE TABLE t (x int)").execute(&pool).await?;
    sqlx::query("INSERT INTO t VALUES (42)")
        .execute(&pool)
        .await?;
    pool.close().await;
    pg.stop_server().await?;
    assert!(
        sqlx::PgPool::connect(&url).await.is_err(),
        "server should be down"
    );
    pg.start_server().await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let (x,): (i32,) = sqlx::query_as("SELECT x FROM t").fetch_one(&pool).await?;
    assert_eq!(x, 42);
    Ok(())
}
