//! Streams and buckets on a 3-node cluster: created with the deployment's replicas, brought from
//! one replica to three in place (their messages kept), and still written and read after their
//! leader dies.

use std::time::Duration;

use anyhow::ensure;
use async_nats::jetstream::{self, kv, stream};
use switchboard_service::storage::{ensure_bucket_with, ensure_stream_with};
use switchboard_testkit::NatsCluster;

fn events_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["ev.>".into()],
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_goes_from_one_replica_to_three_in_place_and_outlives_its_leader()
-> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3, "").await?;
    let client = async_nats::connect(cluster.urls().split(',').collect::<Vec<_>>()).await?;
    let js = jetstream::new(client);

    // An older release made it with one replica and an operator set a byte limit.
    let mut stream = ensure_stream_with(&js, events_config(1)).await?;
    ensure!(stream.info().await?.config.num_replicas == 1);
    let mut limited = stream.cached_info().config.clone();
    limited.max_bytes = 1 << 30;
    js.update_stream(limited).await?;
    for n in 0..10 {
        js.publish(format!("ev.{n}"), "before".into())
            .await?
            .await?;
    }

    let mut stream = ensure_stream_with(&js, events_config(3)).await?;
    let info = stream.info().await?.clone();
    ensure!(info.config.num_replicas == 3, "{info:?}");
    ensure!(
        info.config.max_bytes == 1 << 30,
        "an operator's limit was reset"
    );
    ensure!(
        info.state.messages == 10,
        "messages lost in the update: {info:?}"
    );
    // Brought in line once: the same settings again change nothing.
    ensure_stream_with(&js, events_config(3)).await?;

    // Replicas catch up, then the leader dies: a new one is elected and nothing is lost.
    let leader = cluster.stream_leader("EVENTS").await?;
    switchboard_testkit::eventually(Duration::from_secs(20), "replicas current", || {
        let mut stream = stream.clone();
        async move {
            let info = stream.info().await.ok()?;
            let replicas = info.cluster.as_ref()?.replicas.clone();
            (replicas.len() == 2 && replicas.iter().all(|r| r.current)).then_some(())
        }
    })
    .await?;
    let killed = tokio::time::Instant::now();
    cluster.kill(leader).await;
    let ack = switchboard_testkit::eventually(
        Duration::from_secs(30),
        "a publish acknowledged by the new leader",
        || {
            let js = js.clone();
            async move {
                js.publish("ev.after", "after".into())
                    .await
                    .ok()?
                    .await
                    .ok()
            }
        },
    )
    .await?;
    // What a leader's death costs a publisher: the time until a new leader acknowledges.
    eprintln!(
        "stream leader nats-{leader} killed; first publish acknowledged after {} ms",
        killed.elapsed().as_millis()
    );
    let new_leader = cluster.stream_leader("EVENTS").await?;
    ensure!(new_leader != leader);
    ensure!(ack.sequence == 11, "{ack:?}");
    let info = stream.info().await?;
    ensure!(info.state.messages == 11, "{info:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_goes_from_one_replica_to_three_keeping_its_entries() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3, "").await?;
    let client = async_nats::connect(cluster.urls().split(',').collect::<Vec<_>>()).await?;
    let js = jetstream::new(client);
    let config = |replicas| kv::Config {
        bucket: "claims".into(),
        history: 1,
        max_age: Duration::from_secs(600),
        num_replicas: replicas,
        ..Default::default()
    };
    let store = ensure_bucket_with(&js, config(1)).await?;
    store.put("call", "offered".into()).await?;

    let store = ensure_bucket_with(&js, config(3)).await?;
    let info = js.get_stream("KV_claims").await?.cached_info().clone();
    ensure!(info.config.num_replicas == 3, "{info:?}");
    ensure!(info.config.max_age == Duration::from_secs(600));
    ensure!(store.get("call").await?.as_deref() == Some(&b"offered"[..]));
    Ok(())
}
