//! End-to-end tests of Switchboard live in `tests/`: every service runs as its own process, wired
//! through a real nats-server and a real PostgreSQL, with `realtime-sim` as the model and
//! `callsim` as Twilio and the caller. This library is their shared harness: [`System`] starts
//! the whole system (the notifier too, with the endpoints a test gives it) and reads the
//! persister's record of a call. [`System::start_on_cluster`] runs it on a JetStream cluster of
//! several nats-servers instead of one, as k8s/ does.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use switchboard_proto::permissions::{Role, TOOL_WORKER, User, authorization_block, shipped_users};
use switchboard_proto::subject::Subjects;
use switchboard_testkit::{
    NatsCluster, NatsServer, Postgres, Service, eventually, free_port, workspace_root,
};

/// Environment of one service process.
pub type Env = Vec<(&'static str, String)>;

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The password of each service's NATS user in these tests.
pub fn nats_password(role: &Role<'_>) -> String {
    user_password(role.user())
}

fn user_password(user: &str) -> String {
    format!("e2e-{user}-password")
}

/// The tools of examples/ (Python and TypeScript), each with its own NATS user as an operator
/// would add one (`switchboard nats tool-user`).
pub const EXAMPLE_TOOL_USERS: [Role<'static>; 2] = [
    Role::Tools {
        user: "clinic-hours",
        tools: &["clinic_hours"],
    },
    Role::Tools {
        user: "clinic-directions",
        tools: &["clinic_directions"],
    },
];

/// The NATS users Switchboard ships (the grants of k8s/base/nats.yaml) and those of the example
/// tools, with test passwords.
pub fn nats_users() -> Vec<User<'static>> {
    let examples = EXAMPLE_TOOL_USERS.into_iter().map(|role| User {
        name: role.user().to_owned(),
        password: String::new(),
        role,
    });
    shipped_users()
        .into_iter()
        .chain(examples)
        .map(|user| User {
            password: format!("\"{}\"", user_password(&user.name)),
            ..user
        })
        .collect()
}

/// Starts a nats-server with exactly the users and grants k8s/ ships, so a missing or an
/// excess grant shows in the tests.
pub async fn secured_nats() -> anyhow::Result<NatsServer> {
    let config = authorization_block(&nats_users(), &Subjects::default(), 0);
    NatsServer::start_with_config(&config).await
}

/// Starts a cluster of `nodes` nats-servers joined by routes, each with exactly the users and
/// grants k8s/ ships.
pub async fn secured_nats_cluster(nodes: usize) -> anyhow::Result<NatsCluster> {
    let config = authorization_block(&nats_users(), &Subjects::default(), 0);
    NatsCluster::start(nodes, &config).await
}

/// The environment that makes a service connect as `role`'s NATS user.
pub fn nats_env(role: &Role<'_>) -> Env {
    vec![
        ("NATS_USER", role.user().to_owned()),
        ("NATS_PASSWORD", nats_password(role)),
    ]
}

/// The gateway's `POST /calls` token.
pub const CALLS_TOKEN: &str = "e2e-calls-token";
pub const AUTH_TOKEN: &str = "e2e-twilio-token";
/// The Twilio account of the gateway and the dialers.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
/// The key of web-call tickets, shared by the persister and the gateway.
pub const WEB_CALL_SECRET: &str = "e2e-web-call-secret";

/// The caller ID campaigns in the tests dial from.
pub const CAMPAIGN_FROM: &str = "+15550001111";

/// A callsim script for callees of a campaign: listen to the agent until it is done, hang up.
pub const CALLEE_LISTENS_THEN_HANGS_UP: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 500 }
[[step]]
hangup = true
"#;

/// The whole system, each service a separate process.
pub struct System {
    nats: Option<NatsServer>,
    /// The cluster the system runs on instead of `nats` ([`System::start_on_cluster`]).
    cluster: Option<NatsCluster>,
    /// The nats-server's URL, for tool processes a test starts itself.
    pub nats_url: String,
    pg: Postgres,
    services: Vec<Service>,
    /// The gateway's base URL.
    pub gateway: String,
    /// The persister's base URL.
    pub persister: String,
    /// The notifier's base URL (its delivery-log API).
    pub notifier: String,
    /// The tool-worker's base URL (its `/metrics`).
    pub tool_worker: String,
    /// The call-workers' ids (`WORKER_ID`), in start order, and their places in `services`.
    pub worker_ids: Vec<String>,
    /// Each call-worker's place in `services`, environment and port (to start it again).
    workers: Vec<(usize, Env, u16)>,
    _webhooks: tempfile::NamedTempFile,
    /// The recording store's directory (`RECORDINGS_URL` of the gateway and the persister,
    /// unless the test points them elsewhere).
    pub recordings: tempfile::TempDir,
    /// The gateway's environment, for more gateways behind the same `PUBLIC_URL`.
    gateway_env: Env,
    /// The dialers' database, once the first dialer started.
    dialer_db: Option<String>,
}

impl System {
    /// Starts realtime-sim, tool-worker, persister, notifier (no endpoints), call-worker and
    /// gateway, each ready.
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
            "",
        )
        .await
    }

    /// Like [`System::start_with`], with `webhooks` as the notifier's `WEBHOOKS_FILE`.
    pub async fn start_with_webhooks(
        extra: &[(&'static str, String)],
        webhooks: &str,
    ) -> anyhow::Result<Self> {
        let root = workspace_root();
        Self::start_custom(
            &root.join("agents/agents.toml"),
            &root.join("sims/scenarios/dental.model.toml"),
            extra,
            webhooks,
        )
        .await
    }

    /// Like [`System::start_with`], on a cluster of `nodes` nats-servers (production's users and
    /// grants on each): every service's `NATS_URL` lists all of them.
    pub async fn start_on_cluster(
        nodes: usize,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let root = workspace_root();
        let cluster = secured_nats_cluster(nodes).await?;
        Self::start_on(
            Broker::Cluster(cluster),
            &root.join("agents/agents.toml"),
            &root.join("sims/scenarios/dental.model.toml"),
            extra,
            "",
            1,
            &SimSettings::default(),
        )
        .await
    }

    /// Like [`System::start_with`], with `workers` call-workers (ids `call-worker-0`, ...).
    pub async fn start_with_workers(
        workers: usize,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_with_workers_and_sim(workers, extra, &SimSettings::default()).await
    }

    /// Like [`System::start_with_workers`], with realtime-sim set up as `sim` says (for
    /// benchmarks that need a real handshake's time).
    pub async fn start_with_workers_and_sim(
        workers: usize,
        extra: &[(&'static str, String)],
        sim: &SimSettings,
    ) -> anyhow::Result<Self> {
        let root = workspace_root();
        Self::start_full(
            &root.join("agents/agents.toml"),
            &root.join("sims/scenarios/dental.model.toml"),
            extra,
            "",
            workers,
            sim,
        )
        .await
    }

    /// Like [`System::start_with_webhooks`], with another agents file and model script.
    pub async fn start_custom(
        agents_file: &std::path::Path,
        model_script: &std::path::Path,
        extra: &[(&'static str, String)],
        webhooks: &str,
    ) -> anyhow::Result<Self> {
        Self::start_full(
            agents_file,
            model_script,
            extra,
            webhooks,
            1,
            &SimSettings::default(),
        )
        .await
    }

    /// [`System::start_custom`] with `workers` call-workers (ids `call-worker-0`, ...) and no
    /// webhooks.
    pub async fn start_custom_with_workers(
        agents_file: &std::path::Path,
        model_script: &std::path::Path,
        extra: &[(&'static str, String)],
        workers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_full(
            agents_file,
            model_script,
            extra,
            "",
            workers,
            &SimSettings::default(),
        )
        .await
    }

    async fn start_full(
        agents_file: &std::path::Path,
        model_script: &std::path::Path,
        extra: &[(&'static str, String)],
        webhooks: &str,
        workers: usize,
        sim: &SimSettings,
    ) -> anyhow::Result<Self> {
        // Every end-to-end run uses the NATS users and grants of production.
        let nats = secured_nats().await?;
        Self::start_on(
            Broker::Single(nats),
            agents_file,
            model_script,
            extra,
            webhooks,
            workers,
            sim,
        )
        .await
    }

    async fn start_on(
        broker: Broker,
        agents_file: &std::path::Path,
        model_script: &std::path::Path,
        extra: &[(&'static str, String)],
        webhooks: &str,
        workers: usize,
        sim_settings: &SimSettings,
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats_url = match &broker {
            Broker::Single(nats) => nats.url().to_owned(),
            Broker::Cluster(cluster) => cluster.urls(),
        };
        let (nats, cluster) = match broker {
            Broker::Single(nats) => (Some(nats), None),
            Broker::Cluster(cluster) => (None, Some(cluster)),
        };
        let pg = Postgres::start().await?;
        let persister_db = pg.create_database("switchboard").await?;
        let tools_db = pg.create_database("switchboard_tools").await?;
        let notifier_db = pg.create_database("switchboard_notifier").await?;
        let webhooks_file = tempfile::NamedTempFile::new()?;
        std::fs::write(webhooks_file.path(), webhooks)?;
        let recordings = tempfile::tempdir()?;
        let recordings_url = recordings.path().display().to_string();
        let [sim, tools, persister, notifier, gateway] = [(); 5].map(|_| free_port());
        let addr = |port: u16| format!("127.0.0.1:{port}");

        let mut services = Vec::new();
        let mut sim_proc = Service::spawn(
            "realtime-sim",
            &[
                ("LISTEN", addr(sim)),
                ("REALTIME_SIM_SCRIPT", model_script.display().to_string()),
                (
                    "REALTIME_SIM_CONNECT_DELAY_MS",
                    sim_settings.connect_delay.as_millis().to_string(),
                ),
            ],
        )?;
        wait_http(&mut sim_proc, &format!("http://{}/healthz", addr(sim))).await?;
        services.push(sim_proc);

        let mut specs: Vec<(&str, Env, u16)> = vec![
            ("tool-worker", vec![("DATABASE_URL", tools_db)], tools),
            (
                "persister",
                vec![
                    ("DATABASE_URL", persister_db),
                    ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
                    // Test calls from the console go to this gateway.
                    ("WEB_CALL_URL", format!("http://{}", addr(gateway))),
                    ("WEB_CALL_SECRET", WEB_CALL_SECRET.into()),
                    ("AGENTS_FILE", agents_file.display().to_string()),
                    // The console shows each call's webhook deliveries from the notifier.
                    ("NOTIFIER_URL", format!("http://{}", addr(notifier))),
                    ("RECORDINGS_URL", recordings_url.clone()),
                ],
                persister,
            ),
            (
                "notifier",
                vec![
                    ("DATABASE_URL", notifier_db),
                    ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
                    ("WEBHOOKS_FILE", webhooks_file.path().display().to_string()),
                    ("PUBLIC_URL", format!("http://{}", addr(persister))),
                ],
                notifier,
            ),
            (
                "gateway",
                vec![
                    ("PUBLIC_URL", format!("http://{}", addr(gateway))),
                    ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                    ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
                    ("AGENTS_FILE", agents_file.display().to_string()),
                    ("CALLS_TOKEN", CALLS_TOKEN.into()),
                    ("CALLS_ALLOWED_TO", "+1555*".into()),
                    // The console (the persister) is on another origin than PUBLIC_URL.
                    ("CONSOLE_URL", format!("http://{}", addr(persister))),
                    ("WEB_CALL_SECRET", WEB_CALL_SECRET.into()),
                    ("RECORDINGS_URL", recordings_url),
                ],
                gateway,
            ),
        ];
        let mut gateway_env = Env::new();
        let worker_ids: Vec<String> = (0..workers.max(1))
            .map(|i| format!("call-worker-{i}"))
            .collect();
        // Call-workers before the gateway, as the list above has them.
        let gateway_spec = specs.pop().context("the gateway's spec")?;
        for id in &worker_ids {
            specs.push((
                "call-worker",
                vec![
                    ("AGENTS_FILE", agents_file.display().to_string()),
                    ("REALTIME_URL", format!("ws://{}/v1/realtime", addr(sim))),
                    ("MAX_CALLS", "4".into()),
                    ("WORKER_ID", id.clone()),
                ],
                free_port(),
            ));
        }
        specs.push(gateway_spec);
        let mut worker_services = Vec::new();
        for (name, mut env, port) in specs {
            let role = match name {
                "tool-worker" => TOOL_WORKER,
                "persister" => Role::Persister,
                "notifier" => Role::Notifier,
                "call-worker" => Role::CallWorker,
                _ => Role::Gateway,
            };
            env.extend(nats_env(&role));
            env.push(("LISTEN", addr(port)));
            env.push(("NATS_URL", nats_url.clone()));
            env.extend(extra.iter().cloned());
            if name == "gateway" {
                gateway_env = env.clone();
            }
            let mut service = Service::spawn(name, &env)?;
            service.wait_ready(&addr(port)).await?;
            if name == "call-worker" {
                worker_services.push((services.len(), env.clone(), port));
            }
            services.push(service);
        }
        Ok(Self {
            nats_url,
            nats,
            cluster,
            pg,
            services,
            gateway: format!("http://{}", addr(gateway)),
            persister: format!("http://{}", addr(persister)),
            notifier: format!("http://{}", addr(notifier)),
            tool_worker: format!("http://{}", addr(tools)),
            worker_ids,
            workers: worker_services,
            _webhooks: webhooks_file,
            recordings,
            gateway_env,
            dialer_db: None,
        })
    }

    /// Starts another gateway behind the same `PUBLIC_URL` as the first (as replicas behind
    /// one load balancer), with `gateway_id`; returns its base URL once it is ready.
    pub async fn start_gateway(&mut self, gateway_id: &str) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env: Env = self
            .gateway_env
            .iter()
            .filter(|(k, _)| !matches!(*k, "LISTEN" | "GATEWAY_ID"))
            .cloned()
            .collect();
        env.push(("LISTEN", addr.clone()));
        env.push(("GATEWAY_ID", gateway_id.to_owned()));
        let mut service = Service::spawn("gateway", &env)?;
        service.wait_ready(&addr).await?;
        self.services.push(service);
        Ok(format!("http://{addr}"))
    }

    /// Starts a dialer replica (all of them share one database) that places calls through the
    /// Twilio REST API at `twilio_api_base` for the gateway's `PUBLIC_URL`, with `extra` in its
    /// environment; returns its base URL once it is ready.
    pub async fn start_dialer(
        &mut self,
        twilio_api_base: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        self.start_dialer_at(&addr, twilio_api_base, extra).await
    }

    /// Like [`System::start_dialer`], listening on `addr` (one the persister's `DIALER_URL`
    /// already names).
    pub async fn start_dialer_at(
        &mut self,
        addr: &str,
        twilio_api_base: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<String> {
        let db = match &self.dialer_db {
            Some(db) => db.clone(),
            None => {
                let db = self.pg.create_database("switchboard_dialer").await?;
                self.dialer_db = Some(db.clone());
                db
            }
        };
        let mut env: Env = vec![
            ("LISTEN", addr.to_owned()),
            ("NATS_URL", self.nats_url.clone()),
            ("DATABASE_URL", db),
            ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("PUBLIC_URL", self.gateway.clone()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
            ("TWILIO_API_BASE", twilio_api_base.to_owned()),
        ];
        env.extend(nats_env(&Role::Dialer));
        env.extend(extra.iter().cloned());
        let mut service = Service::spawn("dialer", &env)?;
        service.wait_ready(addr).await?;
        self.services.push(service);
        Ok(format!("http://{addr}"))
    }

    /// `kill -9` of the first gateway: its sockets die with it, nothing is drained.
    pub fn kill_gateway(&mut self) -> anyhow::Result<()> {
        let pid = self
            .services
            .iter()
            .find(|s| s.name() == "gateway")
            .and_then(Service::pid)
            .context("no gateway process")?;
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -KILL {pid}: {status}");
        Ok(())
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to the call-worker with id `worker_id`.
    pub async fn signal_worker(&self, worker_id: &str, signal: &str) -> anyhow::Result<()> {
        let index = self
            .worker_ids
            .iter()
            .position(|id| id == worker_id)
            .with_context(|| format!("no call-worker {worker_id}"))?;
        self.services[self.workers[index].0].signal(signal).await
    }

    /// Starts the call-worker with id `worker_id` again (after a kill), as it was configured,
    /// and waits until it is ready.
    pub async fn restart_worker(&mut self, worker_id: &str) -> anyhow::Result<()> {
        let index = self
            .worker_ids
            .iter()
            .position(|id| id == worker_id)
            .with_context(|| format!("no call-worker {worker_id}"))?;
        let (place, env, port) = self.workers[index].clone();
        let mut service = Service::spawn("call-worker", &env)?;
        service.wait_ready(&format!("127.0.0.1:{port}")).await?;
        self.services[place] = service;
        Ok(())
    }

    /// A NATS connection as `role`'s user (as the service itself connects: its own inbox).
    pub async fn connect_as(&self, role: &Role<'_>) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::ConnectOptions::new()
            .user_and_password(role.user().to_owned(), nats_password(role))
            .custom_inbox_prefix(switchboard_proto::permissions::inbox_prefix(role.user()))
            .connect(self.nats_url.split(',').collect::<Vec<_>>())
            .await?)
    }

    /// A fresh database on the system's Postgres (for outside subscribers), as a URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.pg.create_database(name).await
    }

    /// How often the tool-worker ran `tool`'s handler: its requests less those answered from
    /// the stored result of an earlier one (duplicates, a call sent again), with the metrics
    /// read (for failure messages).
    pub async fn tool_runs(&self, tool: &str) -> anyhow::Result<(f64, String)> {
        let metrics = reqwest::get(format!("{}/metrics", self.tool_worker))
            .await?
            .error_for_status()?
            .text()
            .await?;
        let requests = metric_sum(&metrics, "tool_requests_total", &format!("tool=\"{tool}\""));
        let duplicates = metric_sum(&metrics, "tool_duplicate_requests_total", "");
        Ok((requests - duplicates, metrics))
    }

    /// The nats-server's client URL.
    pub fn nats_url(&self) -> Option<String> {
        self.nats.as_ref().map(|n| n.url().to_owned())
    }

    /// Stops the nats-server: every service loses its broker.
    pub async fn stop_nats(&mut self) {
        if let Some(nats) = self.nats.take() {
            nats.stop().await;
        }
    }

    /// Sends SIGTERM to every service at once and waits for each to exit, for at most `within`
    /// each: per service, its name, its exit status (None if it did not exit in time), and how
    /// long it took.
    pub async fn terminate_all(
        &mut self,
        within: Duration,
    ) -> Vec<(String, Option<std::process::ExitStatus>, Duration)> {
        let waits = self.services.iter_mut().map(|service| async move {
            let began = tokio::time::Instant::now();
            let status = service.terminate(within).await.ok();
            (service.name().to_owned(), status, began.elapsed())
        });
        futures::future::join_all(waits).await
    }

    /// The nats-server's log, or the cluster's live nodes' (permission violations show there).
    pub fn nats_log(&self) -> String {
        match (&self.nats, &self.cluster) {
            (Some(nats), _) => nats.log(),
            (None, Some(cluster)) => cluster.logs(),
            (None, None) => String::new(),
        }
    }

    /// The cluster the system runs on ([`System::start_on_cluster`]).
    pub fn cluster(&self) -> Option<&NatsCluster> {
        self.cluster.as_ref()
    }

    /// Kills node `i` of the cluster the system runs on (SIGKILL: a crash or a lost host).
    pub async fn kill_nats_node(&mut self, i: usize) {
        if let Some(cluster) = &mut self.cluster {
            cluster.kill(i).await;
        }
    }

    /// The log of the service run from binary `name` (the first one, if several), if any.
    pub fn service_log(&self, name: &str) -> Option<String> {
        self.services
            .iter()
            .find(|s| s.name() == name)
            .map(Service::log)
    }

    /// The process id of the last started service run from binary `name`, if any.
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .rev()
            .find(|s| s.name() == name)
            .and_then(Service::pid)
    }

    /// Every service's log, for failure messages.
    pub fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n-----\n")
            + "\n----- nats-server -----\n"
            + &self.nats_log()
    }
}

/// How a [`System`]'s realtime-sim behaves beyond its script. Service processes start with an
/// empty environment, so a setting reaches the sim only through here.
#[derive(Debug, Clone, Default)]
pub struct SimSettings {
    /// How long each WebSocket upgrade takes (`REALTIME_SIM_CONNECT_DELAY_MS`): a real
    /// Realtime handshake's time; zero opens sessions at once.
    pub connect_delay: Duration,
}

/// What a [`System`] runs on.
enum Broker {
    Single(NatsServer),
    Cluster(NatsCluster),
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

/// Places the dental scenario's phone call (sims/scenarios/dental.caller.toml, from +15550001234
/// to the front desk) and returns callsim's report of it, however the call went.
pub async fn place_dental_call(system: &System) -> anyhow::Result<callsim::CallReport> {
    let mut cfg = callsim::CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.from = "+15550001234".into();
    cfg.to = "+15550001111".into();
    let script = callsim::CallerScript::from_file(
        workspace_root().join("sims/scenarios/dental.caller.toml"),
    )?;
    callsim::place_call(&cfg, &script)
        .await
        .with_context(|| system.logs())
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

/// The sum of a Prometheus counter's samples whose labels contain `label`.
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
