//! `callsim`: place simulated Twilio calls against a Switchboard gateway.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript, EndedBy, LoadOptions};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Plays Twilio: signed webhook, TwiML, Media Streams audio in real time.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Place one call. Exit code: 0 clean, 1 failed, 3 rejected (busy TwiML).
    Call {
        #[command(flatten)]
        call: CallArgs,
        /// The caller id to use (default: a random CA... sid).
        #[arg(long)]
        call_sid: Option<String>,
    },
    /// Place many calls with bounded concurrency and print latency percentiles.
    Load {
        #[command(flatten)]
        call: CallArgs,
        /// Calls to place in total.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        calls: u64,
        /// Calls in progress at once, at most.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
        /// Stop after this many seconds (running calls hang up).
        #[arg(long)]
        duration_s: Option<u64>,
        /// A process under load, as NAME=PID (repeatable): the report gives its CPU-seconds per
        /// call-minute over the run (`utime + stime` from /proc).
        #[arg(long = "cpu-pid", value_parser = parse_cpu_pid)]
        cpu_pids: Vec<(String, u32)>,
        /// Spread the first calls' starts evenly over this many seconds instead of starting
        /// them all at once.
        #[arg(long)]
        ramp_s: Option<f64>,
    },
    /// Serve a fake Twilio REST API for outbound calls: point the gateway's TWILIO_API_BASE at
    /// it, then every call created with `POST /calls` is placed back onto the gateway and
    /// plays the caller script. Runs until Ctrl-C, then lists the calls.
    Outbound {
        #[command(flatten)]
        call: CallArgs,
        /// Where the fake API listens.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Args)]
struct CallArgs {
    /// Base URL of the gateway to call.
    #[arg(long, env = "CALLSIM_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The PUBLIC_URL the gateway validates signatures against (default: --gateway).
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// The Twilio auth token the gateway was given.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
    /// The account sid (default: a random AC... sid).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    account_sid: Option<String>,
    #[arg(long, default_value = "+15550001234")]
    from: String,
    #[arg(long, default_value = "+15550001111")]
    to: String,
    /// Caller script (TOML); default: a short built-in conversation.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Drop pending marks on `clear` instead of echoing them (Twilio echoes them).
    #[arg(long)]
    drop_marks_on_clear: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl CallArgs {
    fn config(&self) -> CallConfig {
        let mut cfg = CallConfig::new(&self.gateway, &self.auth_token);
        cfg.public_url.clone_from(&self.public_url);
        if let Some(sid) = &self.account_sid {
            cfg.account_sid.clone_from(sid);
        }
        cfg.from.clone_from(&self.from);
        cfg.to.clone_from(&self.to);
        cfg.echo_marks_on_clear = !self.drop_marks_on_clear;
        cfg
    }

    fn script(&self) -> anyhow::Result<CallerScript> {
        Ok(match &self.script {
            Some(path) => CallerScript::from_file(path)?,
            None => CallerScript::demo(),
        })
    }
}

/// `NAME=PID` of `--cpu-pid`.
fn parse_cpu_pid(arg: &str) -> Result<(String, u32), String> {
    let (name, pid) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {arg:?}"))?;
    let pid = pid
        .parse()
        .map_err(|e| format!("the pid in {arg:?} is not a number: {e}"))?;
    Ok((name.to_owned(), pid))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let _telemetry = switchboard_service::telemetry::init_logging("callsim");
    // Ctrl-C / SIGTERM: running calls hang up properly instead of vanishing.
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            switchboard_service::shutdown::signal().await;
            cancel.cancel();
        }
    });
    match cli.command {
        Command::Call { call, call_sid } => {
            let mut cfg = call.config();
            cfg.call_sid = call_sid;
            let script = call.script()?;
            let report = callsim::place_call_until(&cfg, &script, &cancel)
                .await
                .context("the call could not be placed")?;
            if call.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.ended_by == EndedBy::Rejected {
                ExitCode::from(3)
            } else if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Load {
            call,
            calls,
            concurrency,
            duration_s,
            cpu_pids,
            ramp_s,
        } => {
            let cfg = call.config();
            let script = call.script()?;
            let opts = LoadOptions {
                calls: usize::try_from(calls)?,
                concurrency: usize::try_from(concurrency)?,
                duration: duration_s.map(Duration::from_secs),
                cpu_pids,
                ramp: ramp_s
                    .map(Duration::try_from_secs_f64)
                    .transpose()
                    .context("--ramp-s must be a number of seconds")?,
            };
            let report = callsim::run_load_with(&cfg, &script, &opts, &cancel).await;
            if call.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Outbound { call, listen } => {
            let fake = FakeTwilio::start_on(listen, call.config(), call.script()?).await?;
            println!("fake Twilio API on {} (TWILIO_API_BASE)", fake.base_url());
            cancel.cancelled().await;
            for (sid, placed) in fake.calls().await {
                let ended = placed
                    .report
                    .as_ref()
                    .map(|r| format!("{:?}", r.ended_by))
                    .or(placed.error)
                    .unwrap_or_default();
                println!(
                    "{sid} {} transferred_to={} {ended}",
                    placed.status,
                    placed.transferred_to.as_deref().unwrap_or("-")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
