//! One phone call through the whole system: gateway, NATS, call-worker, tool-worker, persister.
//!
//! The caller hears the greeting, asks about their account, the model looks them up with
//! `lookup_customer` (a real tool service reading Postgres), the caller interrupts the long answer,
//! asks one more thing, says goodbye and hangs up. Then the persister's API must hold the whole
//! record: both sides of the transcript in order, the interruption, the tool call with its output,
//! and the end reason.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::{CallConfig, CallerScript, EndedBy};
use serde_json::Value;
use switchboard_testkit::{NatsServer, Postgres, Service, eventually, free_port, workspace_root};

/// Environment of one service process.
type Env = Vec<(&'static str, String)>;

const ADMIN_TOKEN: &str = "e2e-admin-token";
const AUTH_TOKEN: &str = "e2e-twilio-token";

/// The whole system, each service a separate process.
struct System {
    _nats: NatsServer,
    _pg: Postgres,
    services: Vec<Service>,
    gateway: String,
    persister: String,
}

impl System {
    async fn start() -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let persister_db = pg.create_database("switchboard").await?;
        let tools_db = pg.create_database("switchboard_tools").await?;
        let root = workspace_root();
        let nats_url = nats.url().to_owned();
        let [sim, tools, persister, worker, gateway] = [(); 5].map(|_| free_port());
        let addr = |port: u16| format!("127.0.0.1:{port}");

        let mut services = Vec::new();
        let mut sim_proc = Service::spawn(
            "realtime-sim",
            &[
                ("LISTEN", addr(sim)),
                (
                    "REALTIME_SIM_SCRIPT",
                    root.join("sims/scenarios/dental.model.toml")
                        .display()
                        .to_string(),
                ),
            ],
        )?;
        wait_http(&mut sim_proc, &format!("http://{}/healthz", addr(sim))).await?;
        services.push(sim_proc);

        let specs: Vec<(&str, Env, u16)> = vec![
            ("tool-worker", vec![("DATABASE_URL", tools_db)], tools),
            (
                "persister",
                vec![
                    ("DATABASE_URL", persister_db),
                    ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
                ],
                persister,
            ),
            (
                "call-worker",
                vec![
                    (
                        "AGENTS_FILE",
                        root.join("agents/agents.toml").display().to_string(),
                    ),
                    ("REALTIME_URL", format!("ws://{}/v1/realtime", addr(sim))),
                    ("MAX_CALLS", "4".into()),
                ],
                worker,
            ),
            (
                "gateway",
                vec![
                    ("PUBLIC_URL", format!("http://{}", addr(gateway))),
                    ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                    (
                        "TWILIO_ACCOUNT_SID",
                        "AC00000000000000000000000000000000".into(),
                    ),
                    ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
                ],
                gateway,
            ),
        ];
        for (name, mut env, port) in specs {
            env.push(("LISTEN", addr(port)));
            env.push(("NATS_URL", nats_url.clone()));
            let mut service = Service::spawn(name, &env)?;
            service.wait_ready(&addr(port)).await?;
            services.push(service);
        }
        Ok(Self {
            _nats: nats,
            _pg: pg,
            services,
            gateway: format!("http://{}", addr(gateway)),
            persister: format!("http://{}", addr(persister)),
        })
    }

    fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    }
}

async fn wait_http(service: &mut Service, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let found = eventually(Duration::from_secs(20), url, || {
        let req = client.get(url).send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    if let Some(status) = service.try_exit_status() {
        anyhow::bail!("exited with {status}: {}", service.log());
    }
    found.map(|_| ())
}

async fn get_session(persister: &str, call_sid: &str) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let url = format!("{persister}/api/sessions/{call_sid}");
    eventually(
        Duration::from_secs(20),
        "the call's record with ended_at",
        || {
            let req = client.get(&url).bearer_auth(ADMIN_TOKEN).send();
            async move {
                let body: Value = req.await.ok()?.error_for_status().ok()?.json().await.ok()?;
                (!body["ended_at"].is_null()).then_some(body)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_call_is_answered_uses_a_tool_survives_barge_in_and_is_recorded()
-> anyhow::Result<()> {
    let system = System::start().await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script =
        CallerScript::from_file(workspace_root().join("sims/scenarios/dental.caller.toml"))?;

    let report = callsim::place_call(&cfg, &script)
        .await
        .with_context(|| system.logs())?;
    let context = || format!("{report:#?}\n{}", system.logs());

    // What the caller experienced.
    ensure!(report.connected, "stream never connected: {}", context());
    ensure!(report.ended_by == EndedBy::Caller, "{}", context());
    ensure!(report.step_errors.is_empty(), "{}", context());
    ensure!(report.protocol_errors.is_empty(), "{}", context());
    ensure!(
        report.greeting_latency_ms.is_some(),
        "no greeting audio: {}",
        context()
    );
    ensure!(
        report.clears == 1,
        "expected exactly one barge-in clear: {}",
        context()
    );
    // Greeting (~3.5 s) + the interrupted answer (2 s heard) + two short answers.
    ensure!(report.heard_ms > 6_000, "{}", context());
    // The interrupted answer is ~15 s of audio; the caller must not have heard most of it.
    ensure!(
        report.audio_received_ms > report.heard_ms + 5_000,
        "clear did not drop the rest of the answer: {}",
        context()
    );

    // What the record says.
    let session = get_session(&system.persister, &report.call_sid)
        .await
        .with_context(context)?;
    let ctx = || format!("{session:#}\n{}", context());
    ensure!(session["agent_id"] == "front-desk", "{}", ctx());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    ensure!(session["from"] == "+15550001234", "{}", ctx());

    let transcript = session["transcript"].as_array().context("transcript")?;
    let lines: Vec<(&str, &str, bool)> = transcript
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default(),
                t["text"].as_str().unwrap_or_default(),
                t["interrupted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let expected: [(&str, &str, bool); 7] = [
        ("assistant", "Thanks for calling Acme Dental", false),
        ("user", "Can you look up my account?", false),
        ("assistant", "I found your account, Maria Garcia.", true),
        ("user", "never mind", false),
        (
            "assistant",
            "No problem. Yes, we are open on Saturdays",
            false,
        ),
        ("user", "Great, thank you. Bye!", false),
        ("assistant", "have a great day", false),
    ];
    ensure!(
        lines.len() == expected.len(),
        "transcript {lines:#?}\n{}",
        ctx()
    );
    for ((role, text, interrupted), (want_role, want_text, want_cut)) in
        lines.iter().zip(expected.iter())
    {
        ensure!(
            role == want_role && text.contains(want_text) && interrupted == want_cut,
            "transcript line {role}: {text:?} (interrupted {interrupted}) should be \
             {want_role}: ..{want_text:?}.. (interrupted {want_cut})\n{lines:#?}"
        );
    }
    let cut = &transcript[2];
    let heard = cut["heard_ms"].as_u64().unwrap_or_default();
    ensure!(
        (1_500..=4_000).contains(&heard),
        "the interrupted answer should record ~2 s heard, got {heard}"
    );

    let tools = session["tools"].as_array().context("tools")?;
    ensure!(tools.len() == 1, "{}", ctx());
    ensure!(tools[0]["name"] == "lookup_customer", "{}", ctx());
    ensure!(
        tools[0]["arguments"]["phone"] == "+15550001234",
        "{}",
        ctx()
    );
    ensure!(tools[0]["output"]["name"] == "Maria Garcia", "{}", ctx());
    ensure!(tools[0]["error"].is_null(), "{}", ctx());

    ensure!(
        session["usage"]["output_tokens"]
            .as_u64()
            .unwrap_or_default()
            > 0,
        "{}",
        ctx()
    );
    let greeting_turn = session["turns"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "greeting"));
    ensure!(greeting_turn.is_some(), "no greeting latency: {}", ctx());

    // The list shows it too, and nothing is visible without the token.
    let client = reqwest::Client::new();
    let list: Value = client
        .get(format!("{}/api/sessions", system.persister))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        list["sessions"][0]["call_sid"] == report.call_sid.as_str(),
        "{list:#}"
    );
    let denied = client
        .get(format!("{}/api/sessions", system.persister))
        .send()
        .await?;
    ensure!(denied.status() == 401);
    Ok(())
}
