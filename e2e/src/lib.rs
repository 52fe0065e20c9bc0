//! End-to-end tests of Switchboard live in `tests/`: every service runs as its own process, wired
//! through a real nats-server and a real PostgreSQL, with `realtime-sim` as the model and
//! `callsim` as Twilio and the caller. This library is their shared harness: [`System`] starts
//! the whole system and reads the persister's record of a call.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::Value;
use switchboard_testkit::{NatsServer, Postgres, Service, eventually, free_port, workspace_root};

/// Environment of one service process.
pub type Env = Vec<(&'static str, String)>;

pub const ADMIN_TOKEN: &str = "e2e-admin-token";
pub const AUTH_TOKEN: &str = "e2e-twilio-token";

/// The whole system, each service a separate process.
pub struct System {
    _nats: NatsServer,
    /// The nats-server's URL, for tool processes a test starts itself.
    pub nats_url: String,
    _pg: Postgres,
    services: Vec<Service>,
    /// The gateway's base URL.
    pub gateway: String,
    /// The persister's base URL.
    pub persister: String,
}

impl System {
    /// Starts realtime-sim, tool-worker, persister, call-worker and gateway, each ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`System::start`], with `extra` added to every service's environment.
    pub async fn start_with(extra: &[(&'static str, String)]) -> anyhow::Result<Self> {
        let root = workspace_root();
        Self::start_custom(
            &root.join("agents/agents.toml"),
            &root.join("sims/scenarios/dental.model.toml"),
            extra,
        )
        .await
    }

    /// Like [`System::start_with`], with another agents file and model script.
    pub async fn start_custom(
        agents_file: &std::path::Path,
        model_script: &std::path::Path,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let persister_db = pg.create_database("switchboard").await?;
        let tools_db = pg.create_database("switchboard_tools").await?;
        let nats_url = nats.url().to_owned();
        let [sim, tools, persister, worker, gateway] = [(); 5].map(|_| free_port());
        let addr = |port: u16| format!("127.0.0.1:{port}");

        let mut services = Vec::new();
        let mut sim_proc = Service::spawn(
            "realtime-sim",
            &[
                ("LISTEN", addr(sim)),
                ("REALTIME_SIM_SCRIPT", model_script.display().to_string()),
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
                    ("AGENTS_FILE", agents_file.display().to_string()),
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
            env.extend(extra.iter().cloned());
            let mut service = Service::spawn(name, &env)?;
            service.wait_ready(&addr(port)).await?;
            services.push(service);
        }
        Ok(Self {
            nats_url,
            _nats: nats,
            _pg: pg,
            services,
            gateway: format!("http://{}", addr(gateway)),
            persister: format!("http://{}", addr(persister)),
        })
    }

    /// Every service's log, for failure messages.
    pub fn logs(&self) -> String {
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

/// The persister's record of `call_sid`, once the call has ended.
pub async fn get_session(persister: &str, call_sid: &str) -> anyhow::Result<Value> {
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
