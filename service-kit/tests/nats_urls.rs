//! `NATS_URL` with several servers: a service connects to one of them and, when that server dies,
//! moves to another with its subscriptions.

use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt as _;
use switchboard_service::NatsArgs;
use switchboard_testkit::{NatsCluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_nats_url_survives_the_loss_of_the_connected_server() -> anyhow::Result<()>
{
    let mut cluster = NatsCluster::start(3, "").await?;
    let urls = cluster.urls();
    ensure!(urls.split(',').count() == 3, "{urls}");
    let client = NatsArgs::for_url(&urls).connect("gateway test").await?;
    let mut frames = client.subscribe("voice.call.CA1.out").await?;
    client.flush().await?;

    let first = client.server_info().server_name;
    let index = (0..3)
        .find(|i| cluster.name(*i) == first)
        .context("connected to a node of the cluster")?;
    ensure!(cluster.node_serving("gateway").await == Some(index));
    cluster.kill(index).await;

    // The client reconnects to a surviving node and its subscription comes along.
    let other = eventually(Duration::from_secs(10), "a reconnect elsewhere", || {
        let client = client.clone();
        let first = first.clone();
        async move {
            let now = client.server_info().server_name;
            (client.connection_state() == async_nats::connection::State::Connected && now != first)
                .then_some(now)
        }
    })
    .await?;
    let sender = NatsArgs::for_url(&cluster.urls())
        .connect("call-worker test")
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        sender.publish("voice.call.CA1.out", "frame".into()).await?;
        sender.flush().await?;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), frames.next()).await {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no frame reached the subscription after the reconnect"
        );
    }
    ensure!(other != first);
    Ok(())
}
