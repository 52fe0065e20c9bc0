//! Answering-machine detection end to end: a campaign dials a voicemail box and a person
//! through callsim's fake Twilio, which connects each call's media stream at answer and posts
//! the asynchronous AMD verdict later, as Twilio does. The agent holds its greeting for the
//! verdict: the box hears nothing until its beep, then the voicemail message, and the call
//! hangs up; the person is greeted once the verdict says human.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::twilio_dialing::{Limits, Outcome};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript};
use serde_json::{Value, json};
use switchboard_e2e::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, CALLEE_LISTENS_THEN_HANGS_UP, CAMPAIGN_FROM, System,
    get_session,
};
use switchboard_testkit::{eventually, free_port, workspace_root};

const GREETING: &str = "Hi, this is Acme Dental calling about your appointment.";
const MESSAGE: &str = "Hi, this is Acme Dental. Please call us back about your appointment.";

const MACHINE: &str = "+15550300001";
const HUMAN: &str = "+15550300002";
/// From answer to the verdict: a person's comes after their "Hello?", a machine's after its
/// greeting's beep.
const HUMAN_VERDICT: Duration = Duration::from_millis(1500);
const MACHINE_VERDICT: Duration = Duration::from_millis(3000);

fn agents_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("agents.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[agent]]
id = "outreach"
numbers = ["{CAMPAIGN_FROM}", "*"]
instructions = "You call patients of Acme Dental about their appointments."
greeting = "{GREETING}"
voicemail_message = "{MESSAGE}"
tools = ["end_call"]
"#
        ),
    )?;
    Ok(path)
}

async fn api(method: reqwest::Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    ensure!(status.is_success(), "{url}: {status} {body}");
    Ok(body)
}

/// The assistant's lines of a session's transcript.
fn assistant_lines(session: &Value) -> Vec<String> {
    session["transcript"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["role"] == "assistant")
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_box_hears_the_message_after_its_beep_and_a_person_the_greeting()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = agents_file(dir.path())?;
    let root = workspace_root();
    let mut system = System::start_custom(
        &agents,
        &root.join("sims/scenarios/dental.model.toml"),
        &[],
        "",
    )
    .await?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(CALLEE_LISTENS_THEN_HANGS_UP)?,
    )
    .await?;
    let dialing = twilio.dialing();
    dialing
        .set_limits(Limits {
            human_verdict_after: HUMAN_VERDICT,
            machine_verdict_after: MACHINE_VERDICT,
            ..Default::default()
        })
        .await;
    dialing.set_outcomes(MACHINE, vec![Outcome::Machine]).await;
    dialing.set_outcomes(HUMAN, vec![Outcome::Human]).await;
    let dialer = system.start_dialer(&base, &[]).await?;

    let created = api(
        reqwest::Method::POST,
        &format!("{dialer}/api/campaigns"),
        Some(json!({
            "agent_id": "outreach",
            "from": CAMPAIGN_FROM,
            "calls_per_second": 1,
            "max_concurrent": 2,
            "contacts": [{"to": MACHINE}, {"to": HUMAN}],
            "retry": {"voicemail": {"max_attempts": 1, "delay_seconds": 1}},
        })),
    )
    .await?;
    let id = created["id"].as_str().context("id")?.to_owned();
    let url = format!("{dialer}/api/campaigns/{id}");
    let campaign = eventually(Duration::from_secs(60), "both contacts done", || {
        let url = url.clone();
        async move {
            let c = api(reqwest::Method::GET, &url, None).await.ok()?;
            let contacts = c["contacts"].as_array()?;
            contacts.iter().all(|c| c["state"] == "done").then_some(c)
        }
    })
    .await
    .with_context(|| system.logs())?;

    let placed = dialing.placed().await;
    let calls = twilio.calls().await;
    let call_of = |to: &str| -> anyhow::Result<(String, callsim::CallReport)> {
        let p = placed
            .iter()
            .find(|p| p.to == to)
            .with_context(|| format!("no call to {to}"))?;
        let call = &calls[&p.call_sid];
        ensure!(call.error.is_none(), "{to}: {:?}", call.error);
        let report = call.report.clone().context("no report")?;
        Ok((p.call_sid.clone(), report))
    };

    // The voicemail box: silence until the beep, then the message, then the agent hung up.
    let (sid, report) = call_of(MACHINE)?;
    let first = report
        .heard_segments
        .first()
        .with_context(|| format!("the box heard nothing: {report:?}\n{}", system.logs()))?;
    // The verdict was posted MACHINE_VERDICT after answer; the stream started a little after
    // answer, so nothing the box heard may start much before that in stream time.
    ensure!(
        first.start_ms >= 2000,
        "the agent spoke before the beep: {:?}",
        report.heard_segments
    );
    ensure!(
        report.ended_by == callsim::EndedBy::Agent,
        "{:?}",
        report.ended_by
    );
    let session = get_session(&system.persister, &sid).await?;
    ensure!(session["answered_by"] == "machine_end_beep", "{session:#}");
    ensure!(session["end_reason"] == "voicemail_left", "{session:#}");
    ensure!(
        assistant_lines(&session) == [MESSAGE],
        "only the message, no greeting: {session:#}"
    );

    // The person: greeted once the verdict said human, not before.
    let (sid, report) = call_of(HUMAN)?;
    let first = report
        .heard_segments
        .first()
        .with_context(|| format!("the person heard nothing: {report:?}"))?;
    ensure!(
        first.start_ms >= 1000,
        "greeted before the verdict: {:?}",
        report.heard_segments
    );
    let session = get_session(&system.persister, &sid).await?;
    ensure!(session["answered_by"] == "human", "{session:#}");
    ensure!(
        assistant_lines(&session).first().map(String::as_str) == Some(GREETING),
        "{session:#}"
    );

    // The dialer's results come from the same verdicts.
    let contacts = campaign["contacts"].as_array().context("contacts")?;
    let result_of = |to: &str| {
        contacts
            .iter()
            .find(|c| c["to"] == to)
            .map(|c| c["result"].clone())
    };
    ensure!(
        result_of(MACHINE) == Some(json!("voicemail")),
        "{campaign:#}"
    );
    ensure!(result_of(HUMAN) == Some(json!("answered")), "{campaign:#}");
    Ok(())
}
