//! Transfers and keys on a live call, with every part a real process and callsim's fake Twilio
//! playing the call, the colleague who is dialed, and the automated menu: a transfer to a
//! department that answers ends the call as transferred; one that rings out brings the caller
//! back to the agent, who says so, and the record shows the attempt and its result;
//! `send_dtmf` presses keys the far end's menu hears. A warm transfer holds the caller in a
//! conference while the human is called and hears the agent's summary; answered, the two are
//! bridged; not answered, the caller is back with the agent.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::dial::{Callee, Callees};
use callsim::twilio_rest::{FakeCall, FakeTwilio};
use callsim::{CallConfig, CallerScript};
use serde_json::Value;
use switchboard_e2e::{AUTH_TOKEN, CALLS_TOKEN, System, get_session};
use switchboard_twilio::twiml::{Instructions, Verb};

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const SALES: &str = "+15550002222";

const AGENTS: &str = r#"
[[agent]]
id = "desk"
numbers = ["*"]
instructions = "You are the front desk."
greeting = "Thanks for calling, how can I help?"
tools = ["transfer_call", "send_dtmf", "end_call"]
transfer_to = { sales = "+15550002222", billing = "+15550003333" }
transfer_timeout_seconds = 5
"#;

/// The desk agent with warm transfers.
fn warm_agents() -> String {
    AGENTS.replace(
        "transfer_timeout_seconds = 5",
        "transfer_timeout_seconds = 5\nwarm_transfer = true",
    )
}

const SUMMARY: &str = "Maria wants to move her appointment to Friday.";

/// The model of a warm transfer: like [`TRANSFER_MODEL`], with a summary for the human.
fn warm_model() -> String {
    TRANSFER_MODEL.replace(
        r#"'{"department":"sales"}'"#,
        &format!(r#"'{{"department":"sales","summary":"{SUMMARY}"}}'"#),
    )
}

/// The model: the caller asks for a department, the agent transfers; if the caller comes back,
/// the agent says nobody answered.
const TRANSFER_MODEL: &str = r#"
[session]
ms_per_word = 200
speed = 4.0
hear = ["Can I talk to someone in sales?", "No thanks, bye."]

[[response]]
call = { name = "transfer_call", arguments = '{"department":"sales"}' }

[[response]]
say = "Sure, connecting you to sales now."

[[response]]
say = "I am sorry, nobody in sales picked up. Is there anything else I can do?"

[[response]]
say = "Goodbye!"
"#;

/// The caller: hears the greeting, asks, hears the agent connect them.
const ASKS: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 500 }
[[step]]
say_ms = 1200
[[step]]
listen = { max_ms = 20000, silence_ms = 300 }
"#;

/// Then, back with the agent: hears why, says goodbye, hears it, hangs up.
const COMES_BACK: &str = r#"
[[step]]
listen = { max_ms = 30000, silence_ms = 500 }
[[step]]
say_ms = 800
[[step]]
listen = { max_ms = 20000, silence_ms = 500 }
[[step]]
hangup = true
"#;

/// The model of the menu call: the agent presses 1, pause, 2, pound.
const DTMF_MODEL: &str = r#"
[session]
ms_per_word = 200
speed = 4.0
hear = ["Press one, then two, then pound.", "You are through to billing."]

[[response]]
call = { name = "send_dtmf", arguments = '{"digits":"1w2#"}' }

[[response]]
say = "Pressing the keys."

[[response]]
say = "Great, thank you."
"#;

/// The far end is a menu: it hears the greeting, prompts, expects the keys, then speaks again.
const MENU: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 500 }
[[step]]
say_ms = 1200
[[step]]
expect_digits = "12#"
[[step]]
say_ms = 800
[[step]]
listen = { max_ms = 20000, silence_ms = 500 }
[[step]]
hangup = true
"#;

struct Setup {
    system: System,
    twilio: FakeTwilio,
    _files: (tempfile::NamedTempFile, tempfile::NamedTempFile),
}

/// The system with the desk agent and `model`, and a fake Twilio whose callee runs `script`
/// and whose numbers behave as `callees`.
async fn start(model: &str, script: &str, callees: Callees) -> anyhow::Result<Setup> {
    start_with(AGENTS, model, script, callees).await
}

/// [`start`] with another agents file.
async fn start_with(
    agents_file: &str,
    model: &str,
    script: &str,
    callees: Callees,
) -> anyhow::Result<Setup> {
    start_workers(agents_file, model, script, callees, 1, &[]).await
}

/// [`start_with`] with `workers` call-workers and `extra` settings of every service.
async fn start_workers(
    agents_file: &str,
    model: &str,
    script: &str,
    callees: Callees,
    workers: usize,
    extra: &[(&'static str, String)],
) -> anyhow::Result<Setup> {
    let agents = tempfile::NamedTempFile::new()?;
    std::fs::write(agents.path(), agents_file)?;
    let model_file = tempfile::NamedTempFile::new()?;
    std::fs::write(model_file.path(), model)?;
    let port = switchboard_testkit::free_port();
    let mut settings = vec![("TWILIO_API_BASE", format!("http://127.0.0.1:{port}"))];
    settings.extend_from_slice(extra);
    let system =
        System::start_custom_with_workers(agents.path(), model_file.path(), &settings, workers)
            .await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    cfg.callees = callees;
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(script)?,
    )
    .await?;
    Ok(Setup {
        system,
        twilio,
        _files: (agents, model_file),
    })
}

impl Setup {
    /// Places a call through `POST /calls`; its CallSid.
    async fn call(&self) -> anyhow::Result<String> {
        let created: Value = reqwest::Client::new()
            .post(format!("{}/calls", self.system.gateway))
            .bearer_auth(CALLS_TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"to":"+15550004444","from":"+15550001111"}"#)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(created["call_sid"].as_str().context("call_sid")?.to_owned())
    }

    /// The fake's view of the call once it is over.
    async fn finished(&self, sid: &str) -> anyhow::Result<FakeCall> {
        switchboard_testkit::eventually(Duration::from_secs(60), "the call to end", || {
            let sid = sid.to_owned();
            async move {
                let calls = self.twilio.calls().await;
                calls.get(&sid).filter(|c| c.status == "completed").cloned()
            }
        })
        .await
    }
}

fn lines(session: &Value) -> Vec<(String, String)> {
    session["transcript"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|l| {
                    (
                        l["role"].as_str().unwrap_or_default().to_owned(),
                        l["text"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `<Dial>` of the call's first update: a number that rings for the agent's timeout and
/// reports back to the gateway.
fn dialed(call: &FakeCall) -> anyhow::Result<(String, Option<u32>, bool, bool)> {
    let doc = call.twiml.first().context("no call update")?;
    let Instructions(verbs) = Instructions::parse(doc)?;
    match verbs.as_slice() {
        [
            Verb::Dial {
                number,
                timeout_seconds,
                action,
                status_callback,
                ..
            },
        ] => Ok((
            number.clone(),
            *timeout_seconds,
            action
                .as_deref()
                .is_some_and(|a| a.ends_with("/twilio-dial-action")),
            status_callback
                .as_deref()
                .is_some_and(|a| a.ends_with("/twilio-dial-status")),
        )),
        other => anyhow::bail!("not a dial: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_the_department_answers_ends_the_call_as_transferred() -> anyhow::Result<()> {
    let script = format!("{ASKS}\n[[step]]\npause_ms = 15000\n");
    let setup = start(TRANSFER_MODEL, &script, Callees::default()).await?;
    let sid = setup.call().await?;
    let call = setup.finished(&sid).await?;
    let logs = || setup.system.logs();
    ensure!(
        dialed(&call)? == (SALES.to_owned(), Some(5), true, true),
        "{call:#?}"
    );
    let report = call.report.clone().context("report")?;
    ensure!(report.dials.len() == 1, "{report:#?}");
    let dial = &report.dials[0];
    ensure!(
        dial.status == "completed" && dial.answered_callback,
        "{dial:#?}"
    );
    ensure!(report.reattached == 0, "{report:#?}");

    let session = get_session(&setup.system.persister, &sid).await?;
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["end_reason"] == "transferred", "{}", ctx());
    ensure!(session["outcome"] == "transferred", "{}", ctx());
    let system: Vec<String> = lines(&session)
        .into_iter()
        .filter(|(role, _)| role == "system")
        .map(|(_, text)| text)
        .collect();
    ensure!(
        system
            == [
                "Transferring the caller to the sales department.",
                "The transfer to the sales department was answered."
            ],
        "{}",
        ctx()
    );
    // The model chose the department, never a number.
    let tools = session["tools"].as_array().context("tools")?;
    ensure!(
        tools[0]["name"] == "transfer_call"
            && tools[0]["arguments"] == serde_json::json!({"department": "sales"}),
        "{}",
        ctx()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_transfer_brings_the_caller_back_to_the_agent() -> anyhow::Result<()> {
    let script = format!("{ASKS}\n{COMES_BACK}");
    let callees = Callees::default().with(SALES, Callee::NoAnswer);
    let setup = start(TRANSFER_MODEL, &script, callees).await?;
    let sid = setup.call().await?;
    let call = setup.finished(&sid).await?;
    let logs = || setup.system.logs();
    ensure!(
        dialed(&call)? == (SALES.to_owned(), Some(5), true, true),
        "{call:#?}"
    );
    let report = call.report.clone().context("report")?;
    let ctx = || format!("{report:#?}\n{}", logs());
    ensure!(report.step_errors.is_empty(), "{}", ctx());
    ensure!(report.dials.len() == 1, "{}", ctx());
    ensure!(
        report.dials[0].status == "no-answer" && report.dials[0].action_requested,
        "{}",
        ctx()
    );
    ensure!(report.reattached == 1, "{}", ctx());

    let session = get_session(&setup.system.persister, &sid).await?;
    back_with_the_agent(&session, &logs)
}

/// The record of a call whose transfer to sales nobody answered: the caller ended it after
/// coming back, the outcome says why, and the transcript holds the attempt, its result and the
/// agent telling the caller, in that order.
fn back_with_the_agent(session: &Value, logs: &dyn Fn() -> String) -> anyhow::Result<()> {
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    ensure!(session["outcome"] == "transfer_failed", "{}", ctx());
    ensure!(session["outcome_detail"] == "no-answer", "{}", ctx());
    let transcript = lines(session);
    let at = |want: &str| {
        transcript
            .iter()
            .position(|(_, text)| text.contains(want))
            .with_context(|| format!("no line with {want:?}: {}", ctx()))
    };
    let attempt = at("Transferring the caller to the sales department")?;
    let result = at("did not connect (no-answer); the caller is back with the agent.")?;
    let told = at("nobody in sales picked up")?;
    ensure!(attempt < result && result < told, "{}", ctx());
    ensure!(transcript[told].0 == "assistant", "{}", ctx());
    at("Goodbye!")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_agent_died_while_the_transfer_rang_comes_back_to_a_new_owner()
-> anyhow::Result<()> {
    owner_dies_while_the_transfer_rings(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_agent_died_during_a_warm_transfer_comes_back_to_a_new_owner()
-> anyhow::Result<()> {
    owner_dies_while_the_transfer_rings(true).await
}

/// Two workers; the owner is killed (kill -9) as the department's number starts ringing, and
/// nobody answers: the caller comes back on a new stream, another worker takes the call over,
/// records the result and tells the caller.
async fn owner_dies_while_the_transfer_rings(warm: bool) -> anyhow::Result<()> {
    use switchboard_proto::call_event::Body;
    let script = format!("{ASKS}\n{COMES_BACK}");
    let callees = Callees::default().with(SALES, Callee::NoAnswer);
    let (agents, model) = if warm {
        (warm_agents(), warm_model())
    } else {
        (AGENTS.to_owned(), TRANSFER_MODEL.to_owned())
    };
    let setup = start_workers(&agents, &model, &script, callees, 2, &[]).await?;
    let mut events = Events::watch(&setup.system).await?;
    let sid = setup.call().await?;
    let owner = events.owner().await?;
    // The owner writes the transfer down as the number starts ringing, then dies.
    let ringing = events
        .until(|b| match b {
            Body::Transfer(t) => Some(t),
            _ => None,
        })
        .await?;
    ensure!(
        ringing.department == "sales" && ringing.status.is_empty(),
        "{ringing:?}"
    );
    setup.system.signal_worker(&owner, "KILL").await?;

    let call = setup.finished(&sid).await?;
    let logs = || setup.system.logs();
    let report = call.report.clone().context("report")?;
    let ctx = || format!("{report:#?}\n{}", logs());
    ensure!(report.step_errors.is_empty(), "{}", ctx());
    if warm {
        ensure!(report.conferences == [sid.clone()], "{}", ctx());
    } else {
        ensure!(
            report.dials.len() == 1 && report.dials[0].status == "no-answer",
            "{}",
            ctx()
        );
    }
    ensure!(report.reattached == 1, "{}", ctx());

    let session = get_session(&setup.system.persister, &sid).await?;
    ensure!(session["takeovers"] == 1, "{session:#}\n{}", logs());
    back_with_the_agent(&session, &logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_answered_after_its_owner_died_closes_the_record_transferred()
-> anyhow::Result<()> {
    owner_dies_and_the_human_answers(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_answered_after_its_owner_died_closes_the_record_transferred()
-> anyhow::Result<()> {
    owner_dies_and_the_human_answers(true).await
}

/// The owner is killed as the department's number starts ringing, and the human answers: no
/// stream comes back, so no worker takes the call over; the gateway that gets the answered
/// callback finds the owner gone and closes the record as transferred.
async fn owner_dies_and_the_human_answers(warm: bool) -> anyhow::Result<()> {
    use switchboard_proto::call_event::Body;
    let script = format!("{ASKS}\n[[step]]\npause_ms = 15000\n");
    let (agents, model) = if warm {
        (warm_agents(), warm_model())
    } else {
        (AGENTS.to_owned(), TRANSFER_MODEL.to_owned())
    };
    let setup = start_workers(&agents, &model, &script, Callees::default(), 2, &[]).await?;
    let mut events = Events::watch(&setup.system).await?;
    let sid = setup.call().await?;
    let owner = events.owner().await?;
    events
        .until(|b| match b {
            Body::Transfer(t) => Some(t),
            _ => None,
        })
        .await?;
    setup.system.signal_worker(&owner, "KILL").await?;
    let ended = events
        .until(|b| match b {
            Body::Ended(end) => Some(end.reason),
            _ => None,
        })
        .await?;
    let logs = || setup.system.logs();
    ensure!(ended == "transferred", "{ended}\n{}", logs());
    let session = get_session(&setup.system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == "transferred" && session["outcome"] == "transferred",
        "{session:#}\n{}",
        logs()
    );
    Ok(())
}

/// The call's events as they are published (the persister's user), from before the call.
struct Events(async_nats::Subscriber);

impl Events {
    async fn watch(system: &System) -> anyhow::Result<Self> {
        use switchboard_proto::permissions::Role;
        let nats = system.connect_as(&Role::Persister).await?;
        let events = nats
            .subscribe(switchboard_proto::subject::Subjects::default().call_events("*"))
            .await?;
        nats.flush().await?;
        Ok(Self(events))
    }

    /// The worker that claims the call next (its `owner` event).
    async fn owner(&mut self) -> anyhow::Result<String> {
        self.until(|b| match b {
            switchboard_proto::call_event::Body::Owner(o) => Some(o.worker_id),
            _ => None,
        })
        .await
    }

    /// Waits until the agent's first words (the greeting) are in the record.
    async fn greeted(&mut self) -> anyhow::Result<()> {
        self.until(|b| match b {
            switchboard_proto::call_event::Body::Transcript(t)
                if t.role() == switchboard_proto::Role::Assistant =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    /// The next event whose body `pick` takes.
    async fn until<T>(
        &mut self,
        mut pick: impl FnMut(switchboard_proto::call_event::Body) -> Option<T>,
    ) -> anyhow::Result<T> {
        use futures::StreamExt as _;
        use switchboard_proto::Message as _;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.0.next())
                .await
                .context("no such event in time")?
                .context("event subscription ended")?;
            let event = switchboard_proto::CallEvent::decode(msg.payload)?;
            if let Some(found) = event.body.and_then(&mut pick) {
                return Ok(found);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_agents_call_is_taken_over_and_transferred_by_the_new_owner()
-> anyhow::Result<()> {
    let script = format!("{ASKS}\n[[step]]\npause_ms = 15000\n");
    let setup = start_workers(AGENTS, TRANSFER_MODEL, &script, Callees::default(), 2, &[]).await?;
    let mut events = Events::watch(&setup.system).await?;
    let sid = setup.call().await?;
    let owner = events.owner().await?;
    // The greeting was heard; the caller is about to ask for sales when its agent dies.
    events.greeted().await?;
    setup.system.signal_worker(&owner, "KILL").await?;
    let successor = events.owner().await?;
    ensure!(successor != owner, "{successor}");

    let call = setup.finished(&sid).await?;
    let logs = || setup.system.logs();
    ensure!(
        dialed(&call)? == (SALES.to_owned(), Some(5), true, true),
        "the new owner transferred the call to the department: {call:#?}\n{}",
        logs()
    );
    let session = get_session(&setup.system.persister, &sid).await?;
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["takeovers"] == 1, "{}", ctx());
    ensure!(session["end_reason"] == "transferred", "{}", ctx());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_agents_call_with_no_worker_left_goes_to_its_first_department()
-> anyhow::Result<()> {
    use switchboard_proto::call_event::Body;
    use switchboard_proto::event::EndReason;
    let script = format!("{ASKS}\n[[step]]\npause_ms = 15000\n");
    let timeout = [("TAKEOVER_TIMEOUT_MS", "1500".to_owned())];
    let setup = start_workers(
        AGENTS,
        TRANSFER_MODEL,
        &script,
        Callees::default(),
        1,
        &timeout,
    )
    .await?;
    let mut events = Events::watch(&setup.system).await?;
    let sid = setup.call().await?;
    let owner = events.owner().await?;
    events.greeted().await?;
    setup.system.signal_worker(&owner, "KILL").await?;
    let ended = events
        .until(|b| match b {
            Body::Ended(end) => Some(end.reason),
            _ => None,
        })
        .await?;
    ensure!(ended == EndReason::WorkerLost.as_str(), "{ended}");
    // The apology, then a human: the agent's first department.
    let call = switchboard_testkit::eventually(Duration::from_secs(10), "the apology", || {
        let (twilio, sid) = (&setup.twilio, sid.clone());
        async move {
            let calls = twilio.calls().await;
            calls.get(&sid).filter(|c| !c.twiml.is_empty()).cloned()
        }
    })
    .await?;
    let Instructions(verbs) = Instructions::parse(&call.twiml[0])?;
    ensure!(
        verbs
            == vec![
                Verb::Say(switchboard_agents::DEFAULT_APOLOGY.into()),
                Verb::dial("+15550003333")
            ],
        "{verbs:?}\n{}",
        setup.system.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dtmf_reaches_the_menu_on_the_line() -> anyhow::Result<()> {
    let setup = start(DTMF_MODEL, MENU, Callees::default()).await?;
    let sid = setup.call().await?;
    let call = setup.finished(&sid).await?;
    let logs = || setup.system.logs();
    let report = call.report.clone().context("report")?;
    let ctx = || format!("{report:#?}\n{call:#?}\n{}", logs());
    // The menu heard exactly the keys (its `expect_digits` step passed) ...
    ensure!(report.step_errors.is_empty(), "{}", ctx());
    ensure!(report.digits_played == ["1w2#"], "{}", ctx());
    // ... played by a call update, after which the call came back on a new stream.
    let Instructions(verbs) = Instructions::parse(call.twiml.first().context("update")?)?;
    ensure!(
        matches!(verbs.as_slice(), [Verb::PlayDigits(d), Verb::ConnectStream { .. }] if d == "1w2#"),
        "{}",
        ctx()
    );
    ensure!(report.reattached == 1, "{}", ctx());

    let session = get_session(&setup.system.persister, &sid).await?;
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    let tools = session["tools"].as_array().context("tools")?;
    ensure!(
        tools[0]["name"] == "send_dtmf" && tools[0]["error"].is_null(),
        "{}",
        ctx()
    );
    ensure!(
        lines(&session)
            .iter()
            .any(|(role, text)| role == "assistant" && text.contains("Great, thank you")),
        "{}",
        ctx()
    );
    Ok(())
}

/// The warm transfer's two calls: the caller's, put on hold in the conference named after it,
/// and the one to the human, whose TwiML says the summary and joins that conference.
async fn warm_calls(setup: &Setup, sid: &str) -> anyhow::Result<(FakeCall, FakeCall)> {
    let caller = setup.finished(sid).await?;
    let Instructions(hold) = Instructions::parse(caller.twiml.first().context("hold update")?)?;
    ensure!(
        matches!(hold.as_slice(), [Verb::Conference { name, starts: false, action: Some(a), .. }]
            if name == sid && a.ends_with("/twilio-dial-action")),
        "{hold:?}"
    );
    let human =
        switchboard_testkit::eventually(Duration::from_secs(30), "the human's call", || async {
            setup
                .twilio
                .calls()
                .await
                .into_values()
                .find(|c| c.report.is_none() && c.twiml.iter().any(|t| t.contains("<Say>")))
                .filter(|c| c.status != "queued" && c.status != "in-progress")
        })
        .await?;
    // Called from the line's number, ringing for the agent's timeout.
    let create = setup
        .twilio
        .requests()
        .await
        .into_iter()
        .find(|r| r.path.ends_with("/Calls.json") && r.get("Twiml").is_some())
        .context("the human's call request")?;
    ensure!(
        create.get("To") == Some(SALES)
            && create.get("From") == Some("+15550001111")
            && create.get("Timeout") == Some("5"),
        "{create:?}"
    );
    let Instructions(verbs) = Instructions::parse(&human.twiml[0])?;
    ensure!(
        verbs
            == [
                Verb::Say(SUMMARY.into()),
                Verb::Conference {
                    name: sid.to_owned(),
                    starts: true,
                    ends: true,
                    action: None
                }
            ],
        "{verbs:?}"
    );
    Ok((caller, human))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_briefs_the_human_then_bridges_the_caller() -> anyhow::Result<()> {
    let script = format!("{ASKS}\n[[step]]\npause_ms = 15000\n");
    let setup = start_with(&warm_agents(), &warm_model(), &script, Callees::default()).await?;
    let sid = setup.call().await?;
    let (caller, human) = warm_calls(&setup, &sid).await?;
    let logs = || setup.system.logs();
    // The human answered, heard the summary and joined the caller's conference.
    ensure!(
        human.status == "completed" && human.said == [SUMMARY],
        "{human:#?}"
    );
    let report = caller.report.clone().context("report")?;
    ensure!(report.conferences == [sid.clone()], "{report:#?}");
    ensure!(
        report.reattached == 0 && report.step_errors.is_empty(),
        "{report:#?}"
    );

    let session = get_session(&setup.system.persister, &sid).await?;
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["end_reason"] == "transferred", "{}", ctx());
    let system: Vec<String> = lines(&session)
        .into_iter()
        .filter(|(role, _)| role == "system")
        .map(|(_, text)| text)
        .collect();
    ensure!(
        system
            == [
                format!(
                    "Transferring the caller to the sales department, who hears first: \"{SUMMARY}\""
                ),
                "The transfer to the sales department was answered.".to_owned()
            ],
        "{}",
        ctx()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_warm_transfer_takes_the_caller_off_hold_back_to_the_agent()
-> anyhow::Result<()> {
    let script = format!("{ASKS}\n{COMES_BACK}");
    let callees = Callees::default().with(SALES, Callee::NoAnswer);
    let setup = start_with(&warm_agents(), &warm_model(), &script, callees).await?;
    let sid = setup.call().await?;
    let (caller, human) = warm_calls(&setup, &sid).await?;
    let logs = || setup.system.logs();
    ensure!(
        human.status == "no-answer" && human.said.is_empty(),
        "{human:#?}"
    );
    let report = caller.report.clone().context("report")?;
    let ctx = || format!("{report:#?}\n{}", logs());
    ensure!(report.step_errors.is_empty(), "{}", ctx());
    ensure!(report.conferences == [sid.clone()], "{}", ctx());
    ensure!(report.reattached == 1, "{}", ctx());

    let session = get_session(&setup.system.persister, &sid).await?;
    let ctx = || format!("{session:#}\n{}", logs());
    ensure!(session["end_reason"] == "caller_hung_up", "{}", ctx());
    ensure!(session["outcome"] == "transfer_failed", "{}", ctx());
    ensure!(session["outcome_detail"] == "no-answer", "{}", ctx());
    let transcript = lines(&session);
    let at = |want: &str| {
        transcript
            .iter()
            .position(|(_, text)| text.contains(want))
            .with_context(|| format!("no line with {want:?}: {}", ctx()))
    };
    let result = at("did not connect (no-answer); the caller is back with the agent.")?;
    let told = at("nobody in sales picked up")?;
    ensure!(
        result < told && transcript[told].0 == "assistant",
        "{}",
        ctx()
    );
    Ok(())
}
