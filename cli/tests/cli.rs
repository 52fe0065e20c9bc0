//! The `switchboard` binary against a real nats-server and a tool served by the Rust SDK.

use std::process::Output;

use serde_json::{Value, json};
use switchboard_proto::subject::Subjects;
use switchboard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;
use tool_workers::{Tool, ToolContext, ToolFailure, ToolServer};

async fn switchboard(nats: &NatsServer, args: &[&str]) -> anyhow::Result<Output> {
    Ok(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env("NATS_URL", nats.url())
            .output()
            .await?,
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn serve_order_status(
    nats: &NatsServer,
) -> anyhow::Result<(CancellationToken, tool_workers::Serving)> {
    let tool = Tool::new(
        "order_status",
        "Where an order is.",
        json!({"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}),
        |ctx: ToolContext, args: Value| async move {
            match args["order"].as_str() {
                Some("A1") => {
                    ctx.set_outcome("status_given");
                    Ok(json!({"status": "shipped", "agent": ctx.agent_id}))
                }
                _ => Err(ToolFailure::not_found("No such order.")),
            }
        },
    )?
    .with_timeout(std::time::Duration::from_millis(1500))
    .with_version("2.0.1");
    let stop = CancellationToken::new();
    let client = async_nats::connect(nats.url()).await?;
    let serving = ToolServer::new()
        .tool(tool)
        .start(client, &Subjects::default(), stop.clone())
        .await?;
    Ok((stop, serving))
}

#[tokio::test]
async fn tools_ls_lists_tools_and_who_serves_them() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let empty = switchboard(&nats, &["tools", "ls"]).await?;
    assert!(empty.status.success());
    assert!(
        stdout(&empty).contains("no tools registered"),
        "{}",
        stdout(&empty)
    );

    let (stop, serving) = serve_order_status(&nats).await?;
    let table = switchboard(&nats, &["tools", "ls"]).await?;
    assert!(table.status.success());
    let text = stdout(&table);
    let line = text
        .lines()
        .find(|l| l.starts_with("order_status"))
        .unwrap_or_default();
    assert!(
        line.contains("1500 ms") && line.contains("2.0.1") && line.contains("rust@"),
        "{text}"
    );

    let listed = switchboard(&nats, &["tools", "ls", "--json"]).await?;
    let v: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(v[0]["name"], "order_status");
    assert_eq!(v[0]["replicas"].as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["replicas"][0]["pid"], std::process::id());
    assert_eq!(v[0]["parameters"]["required"], json!(["order"]));

    stop.cancel();
    serving.wait().await;
    let after = switchboard(&nats, &["tools", "ls"]).await?;
    assert!(
        stdout(&after).contains("no tools registered"),
        "{}",
        stdout(&after)
    );
    Ok(())
}

#[tokio::test]
async fn tools_call_sends_a_tool_call_and_prints_result_and_latency() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (stop, serving) = serve_order_status(&nats).await?;

    let ok = switchboard(
        &nats,
        &[
            "tools",
            "call",
            "order_status",
            r#"{"order":"A1"}"#,
            "--agent",
            "desk",
        ],
    )
    .await?;
    assert!(ok.status.success(), "{ok:?}");
    let text = stdout(&ok);
    assert!(
        text.contains(r#""status": "shipped""#) && text.contains(r#""agent": "desk""#),
        "{text}"
    );
    assert!(text.contains("outcome: status_given"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("latency: ") && l.ends_with(" ms")),
        "{text}"
    );

    // Errors are printed as the model would see them, and the exit status says so.
    let missing = switchboard(
        &nats,
        &["tools", "call", "order_status", r#"{"order":"B2"}"#],
    )
    .await?;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stdout(&missing).contains(r#""code": "not_found""#),
        "{}",
        stdout(&missing)
    );
    let bad = switchboard(&nats, &["tools", "call", "order_status", "{}"]).await?;
    assert!(
        stdout(&bad).contains("invalid_arguments") && stdout(&bad).contains("order"),
        "{}",
        stdout(&bad)
    );

    stop.cancel();
    serving.wait().await;
    // Nobody serves it any more: the worker's `unavailable`.
    let gone = switchboard(
        &nats,
        &["tools", "call", "order_status", r#"{"order":"A1"}"#],
    )
    .await?;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stdout(&gone).contains(r#""code": "unavailable""#),
        "{}",
        stdout(&gone)
    );
    Ok(())
}

#[tokio::test]
async fn agents_check_validates_and_reports_unregistered_tools() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (stop, serving) = serve_order_status(&nats).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agents.toml");
    let path = file.to_str().unwrap_or_default();

    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions = \"x\"\ntools = [\"order_status\", \"end_call\"]\n",
    )?;
    let good = switchboard(&nats, &["agents", "check", path]).await?;
    assert!(good.status.success(), "{}", stdout(&good));
    assert!(stdout(&good).contains("all 1 listed tool(s) are registered"));

    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions = \"x\"\ntools = [\"order_stauts\"]\n",
    )?;
    let typo = switchboard(&nats, &["agents", "check", path]).await?;
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        stdout(&typo).contains("not registered: `order_stauts` (listed by desk)"),
        "{}",
        stdout(&typo)
    );
    let offline = switchboard(&nats, &["agents", "check", "--offline", path]).await?;
    assert!(offline.status.success());

    // Departments, the ring timeout and the keypad tool are built in, not registered tools.
    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions = \"x\"\n\
         tools = [\"transfer_call\", \"send_dtmf\"]\ntransfer_timeout_seconds = 15\nwarm_transfer = true\n\
         transfer_to = { sales = \"+15550002222\", billing = \"+15550003333\" }\n",
    )?;
    let departments = switchboard(&nats, &["agents", "check", path]).await?;
    assert!(departments.status.success(), "{}", stdout(&departments));
    assert!(
        !stdout(&departments).contains("not registered"),
        "{}",
        stdout(&departments)
    );
    std::fs::write(
        &file,
        "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\ninstructions = \"x\"\n\
         transfer_to = { sales = \"555 0002\" }\n",
    )?;
    let bad_number = switchboard(&nats, &["agents", "check", "--offline", path]).await?;
    assert_eq!(bad_number.status.code(), Some(1));
    assert!(
        stdout(&bad_number).contains("transfer_to.sales"),
        "{}",
        stdout(&bad_number)
    );

    std::fs::write(&file, "[[agent]]\nid = \"desk\"\nnumbers = [\"*\"]\n")?;
    let broken = switchboard(&nats, &["agents", "check", path]).await?;
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stdout(&broken).contains("error:") && stdout(&broken).contains("instructions"),
        "{}",
        stdout(&broken)
    );

    stop.cancel();
    serving.wait().await;
    Ok(())
}

/// docs/operations.md shows the generated user of a tool, not a hand-written copy.
#[test]
fn the_documented_tool_user_is_the_generated_one() -> anyhow::Result<()> {
    let path = switchboard_testkit::workspace_root().join("docs/operations.md");
    let doc = std::fs::read_to_string(&path)?;
    let begin = "<!-- BEGIN GENERATED TOOL USER order-status order_status -->\n```\n";
    let end = "```\n<!-- END GENERATED TOOL USER -->";
    let start = doc.find(begin).expect("BEGIN marker") + begin.len();
    let stop = doc.find(end).expect("END marker");
    let generated = switchboard_cli::nats::tool_user_block(
        &switchboard_proto::subject::Subjects::default(),
        "order-status",
        &["order_status"],
    );
    if doc[start..stop] != generated {
        if std::env::var_os("UPDATE_MANIFESTS").is_some() {
            std::fs::write(
                &path,
                format!("{}{generated}{}", &doc[..start], &doc[stop..]),
            )?;
            return Ok(());
        }
        anyhow::bail!(
            "docs/operations.md's tool user differs; run with UPDATE_MANIFESTS=1:\n{generated}"
        );
    }
    Ok(())
}
