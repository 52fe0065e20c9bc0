//! A phone call in which the model calls a tool written with the Python SDK
//! (examples/python-tool/clinic_hours.py) and one written with the TypeScript SDK
//! (examples/typescript-tool, built by scripts/setup), each running as its own process.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript, EndedBy};
use switchboard_e2e::{AUTH_TOKEN, EXAMPLE_TOOL_USERS, System, get_session, nats_env};
use switchboard_proto::TOOLS_BUCKET;
use switchboard_proto::permissions::Role;
use switchboard_testkit::{eventually, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_calls_a_python_tool_and_a_typescript_tool() -> anyhow::Result<()> {
    let root = workspace_root();
    let system = System::start_custom(
        &root.join("examples/agents.toml"),
        &root.join("sims/scenarios/clinic-info.model.toml"),
        &[],
        "",
    )
    .await?;

    let python = root.join(".venv/bin/python");
    let ts_tool = root.join("examples/typescript-tool/dist/clinic_directions.js");
    ensure!(
        python.exists() && ts_tool.exists(),
        "run scripts/setup first"
    );
    let mut tools = Vec::new();
    // Each tool connects as its own NATS user, with exactly the generated grants.
    for ((program, script), role) in [
        (
            python.clone(),
            root.join("examples/python-tool/clinic_hours.py"),
        ),
        ("node".into(), ts_tool),
    ]
    .into_iter()
    .zip(EXAMPLE_TOOL_USERS)
    {
        tools.push(
            tokio::process::Command::new(program)
                .arg(script)
                .env("NATS_URL", &system.nats_url)
                .envs(nats_env(&role))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let js = async_nats::jetstream::new(system.connect_as(&Role::CallWorker).await?);
    eventually(Duration::from_secs(30), "both tools registered", || {
        let js = js.clone();
        async move {
            let kv = js.get_key_value(TOOLS_BUCKET).await.ok()?;
            let hours = kv.get("clinic_hours").await.ok()??;
            let directions = kv.get("clinic_directions").await.ok()??;
            Some((hours, directions))
        }
    })
    .await?;

    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script = CallerScript::from_file(root.join("sims/scenarios/clinic-info.caller.toml"))?;
    let report = callsim::place_call(&cfg, &script)
        .await
        .with_context(|| system.logs())?;
    let context = || format!("{report:#?}\n{}", system.logs());
    ensure!(report.connected, "{}", context());
    ensure!(report.ended_by == EndedBy::Caller, "{}", context());

    let session = get_session(&system.persister, &report.call_sid)
        .await
        .with_context(context)?;
    let ctx = || format!("{session:#}\n{}", context());
    let calls = session["tools"].as_array().context("tools")?;
    ensure!(calls.len() == 2, "{}", ctx());
    ensure!(calls[0]["name"] == "clinic_hours", "{}", ctx());
    ensure!(calls[0]["output"]["opens"] == "09:00", "{}", ctx());
    ensure!(calls[0]["output"]["closes"] == "13:00", "{}", ctx());
    ensure!(calls[1]["name"] == "clinic_directions", "{}", ctx());
    ensure!(
        calls[1]["output"]["address"] == "120 Elm Street, Springfield",
        "{}",
        ctx()
    );
    let said: Vec<&str> = session["transcript"]
        .as_array()
        .context("transcript")?
        .iter()
        .filter(|t| t["role"] == "assistant")
        .filter_map(|t| t["text"].as_str())
        .collect();
    ensure!(
        said.iter().any(|t| t.contains("open from 09:00 to 13:00")),
        "{}",
        ctx()
    );
    ensure!(
        said.iter()
            .any(|t| t.contains("120 Elm Street") && t.contains("Route 9")),
        "{}",
        ctx()
    );
    // The tools and the services ran under exactly their generated NATS grants.
    let nats_log = system.nats_log();
    ensure!(
        !nats_log.contains("Violation"),
        "a process lacks a NATS grant:\n{nats_log}"
    );
    for mut tool in tools {
        tool.kill().await?;
    }
    Ok(())
}
