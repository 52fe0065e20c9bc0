//! The tool registry as a call-worker sees it: whoever creates `voice-tools`, a tool whose
//! replicas all stop leaves the model's tool list at once, and one whose replicas die leaves it
//! within `ENTRY_MAX_AGE`.

use std::time::Duration;

use tokio::time::Instant;

use async_nats::jetstream::{self, kv};
use call_worker::agents::Agent;
use call_worker::tools;
use serde_json::json;
use switchboard_proto::TOOLS_BUCKET;
use switchboard_proto::subject::Subjects;
use switchboard_service::tool_registry::{ENTRY_MAX_AGE, Registration};
use switchboard_testkit::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;
use tool_workers::{Tool, ToolContext, ToolServer};

fn agent() -> Agent {
    let mut agent = Agent::new("desk", "Be helpful.");
    agent.tools = vec!["order_status".into(), "end_call".into()];
    agent
}

async fn offered(store: &kv::Store) -> Vec<String> {
    let session = tools::load(Some(store), &agent(), "CA1").await;
    session.business.into_keys().collect()
}

fn order_status() -> Tool {
    Tool::new(
        "order_status",
        "Where an order is.",
        json!({"type": "object", "properties": {"order": {"type": "string"}}}),
        |_ctx: ToolContext, _args: serde_json::Value| async move { Ok(json!({"status": "shipped"})) },
    )
    .expect("a valid tool")
}

async fn serve(url: &str) -> anyhow::Result<(CancellationToken, tool_workers::Serving)> {
    let client = async_nats::connect(url).await?;
    let stop = CancellationToken::new();
    let serving = ToolServer::new()
        .tool(order_status())
        .idempotent(false)
        .start(client, &Subjects::default(), stop.clone())
        .await?;
    Ok((stop, serving))
}

#[tokio::test]
async fn a_stopped_tool_leaves_the_tool_list_when_its_last_replica_stops() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    // The call-worker starts first and creates the bucket.
    let store = tools::open_registry(&js)
        .await
        .map_err(anyhow::Error::msg)?;

    let (stop_a, serving_a) = serve(nats.url()).await?;
    let (stop_b, serving_b) = serve(nats.url()).await?;
    assert_eq!(offered(&store).await, ["order_status"]);

    // One of two replicas stops: the other still serves, so the tool stays.
    stop_a.cancel();
    serving_a.wait().await;
    assert_eq!(offered(&store).await, ["order_status"]);

    // The last one stops: the tool is gone for the next call, without waiting for expiry.
    stop_b.cancel();
    serving_b.wait().await;
    assert!(offered(&store).await.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_dead_tool_leaves_the_tool_list_within_the_entry_max_age() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    // The call-worker creates the bucket, so its settings are the ones that count.
    let store = tools::open_registry(&js)
        .await
        .map_err(anyhow::Error::msg)?;

    // A replica registers and dies: its entries stay behind, never refreshed.
    let mut replica = Registration::new(js.clone(), "rust", "test");
    let spec = order_status().spec();
    replica
        .put(&[(
            spec.name.clone(),
            switchboard_proto::Message::encode_to_vec(&spec).into(),
        )])
        .await?;
    let registered = Instant::now();
    drop(replica);
    assert_eq!(offered(&store).await, ["order_status"]);

    eventually(
        ENTRY_MAX_AGE + Duration::from_secs(5),
        "order_status expired",
        || {
            let store = store.clone();
            async move { offered(&store).await.is_empty().then_some(()) }
        },
    )
    .await?;
    let gone_after = registered.elapsed();
    assert!(
        gone_after >= ENTRY_MAX_AGE - Duration::from_secs(1),
        "expired after {gone_after:?}, before ENTRY_MAX_AGE"
    );
    Ok(())
}

#[tokio::test]
async fn a_bucket_made_with_other_settings_is_brought_in_line() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    // As releases before the shared settings created it: no max age, so entries never expired.
    js.create_key_value(kv::Config {
        bucket: TOOLS_BUCKET.to_owned(),
        history: 1,
        ..Default::default()
    })
    .await?;
    let store = tools::open_registry(&js)
        .await
        .map_err(anyhow::Error::msg)?;
    let info = store.status().await?.info;
    assert_eq!(info.config.max_age, ENTRY_MAX_AGE);
    let reopened = js.get_key_value(TOOLS_BUCKET).await?;
    assert_eq!(reopened.status().await?.info.config.max_age, ENTRY_MAX_AGE);
    Ok(())
}

/// A tool an agent lists that nobody registered (here: misspelled) is reported when the agents
/// are loaded, not only when a call leaves it out.
#[tokio::test]
async fn listed_tools_nobody_registered_are_reported_at_load() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let store = tools::open_registry(&js)
        .await
        .map_err(anyhow::Error::msg)?;
    let (stop, serving) = serve(nats.url()).await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agents.toml");
    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions = \"x\"\n\
         tools = [\"order_status\", \"order_stauts\", \"end_call\"]\n",
    )?;
    let agents = call_worker::agents::Agents::load(&file)?;
    let missing =
        switchboard_service::tool_registry::unregistered(&store, agents.business_tools()).await?;
    assert_eq!(missing, ["order_stauts"]);

    let log_path = dir.path().join("worker.log");
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::sync::Arc::new(std::fs::File::create(&log_path)?))
        .with_ansi(false)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        call_worker::reload::warn_unregistered(Some(&store), &agents).await;
    }
    let text = std::fs::read_to_string(&log_path)?;
    assert!(
        text.contains("WARN") && text.contains("order_stauts") && text.contains("not registered"),
        "{text}"
    );
    assert!(!text.contains("tool=\"order_status\""), "{text}");
    stop.cancel();
    serving.wait().await;
    Ok(())
}
