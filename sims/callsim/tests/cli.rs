//! The `callsim` binary against a fake gateway: exit codes and JSON output.

mod fake;

use std::time::Duration;

use fake::{Action, FakeGateway, PUBLIC_URL, TOKEN};
use serde_json::Value;

const SCRIPT: &str = r#"
[[step]]
listen = { max_ms = 3000, silence_ms = 200 }
[[step]]
hangup = true
"#;

async fn callsim(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_callsim"))
            .args(args)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("callsim finishes")
    .expect("callsim runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_and_load_report_as_json_and_exit_codes_tell_outcomes() {
    let gw = FakeGateway::start(
        &[("token", "t")],
        vec![Action::Audio(300), Action::Mark("m")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("caller.toml");
    std::fs::write(&script, SCRIPT).expect("write script");
    let script = script.to_str().expect("utf-8 path");
    let common = [
        "--gateway",
        gw.url.as_str(),
        "--public-url",
        PUBLIC_URL,
        "--auth-token",
        TOKEN,
        "--script",
        script,
        "--json",
    ];

    let mut args = vec!["call"];
    args.extend(common);
    let (code, out) = callsim(&args).await;
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["ended_by"], "caller");
    assert_eq!(report["heard_ms"], 300);
    assert_eq!(report["marks_sent_back"], 1);

    // The fake gateway runs in this process: its CPU is this process's.
    let gateway_pid = format!("gateway={}", std::process::id());
    let mut args = vec!["load", "--calls", "3", "--concurrency", "2"];
    args.extend(["--cpu-pid", gateway_pid.as_str()]);
    args.extend(common);
    let (code, out) = callsim(&args).await;
    assert_eq!(code, Some(0), "{out}");
    let load: Value = serde_json::from_str(&out).expect("JSON load report");
    assert_eq!(load["calls_started"], 3);
    assert_eq!(load["ok"], 3);
    assert_eq!(load["greeting_latency_ms"]["count"], 3);
    assert!(
        load["call_minutes"].as_f64().is_some_and(|m| m > 0.0),
        "{out}"
    );
    assert_eq!(load["cpu"][0]["name"], "gateway", "{out}");
    assert!(
        load["cpu"][0]["cpu_seconds_per_call_minute"]
            .as_f64()
            .is_some_and(|c| c >= 0.0)
    );

    let (code, out) = callsim(&[
        "load",
        "--calls",
        "1",
        "--cpu-pid",
        "gateway",
        "--auth-token",
        TOKEN,
    ])
    .await;
    assert_eq!(code, Some(2), "a --cpu-pid without a pid is refused: {out}");

    // The wrong token: the webhook refuses, the call fails.
    let (code, _) = callsim(&[
        "call",
        "--gateway",
        gw.url.as_str(),
        "--public-url",
        PUBLIC_URL,
        "--auth-token",
        "wrong",
    ])
    .await;
    assert_eq!(code, Some(1));

    let busy = FakeGateway::busy("Busy, sorry.").await;
    let (code, out) = callsim(&[
        "call",
        "--gateway",
        busy.url.as_str(),
        "--public-url",
        PUBLIC_URL,
        "--auth-token",
        TOKEN,
    ])
    .await;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Busy, sorry."), "{out}");
}
