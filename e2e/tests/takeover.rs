//! A call whose call-worker dies, with every part a real process: with no other worker to take
//! it over, the caller hears the agent's apology and is transferred, and the record is closed
//! with `worker_lost` under the gateway's fencing claim.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript};
use futures::StreamExt as _;
use serde_json::Value;
use switchboard_e2e::{AUTH_TOKEN, CALLS_TOKEN, System, get_session};
use switchboard_proto::Role as Speaker;
use switchboard_proto::event::EndReason;
use switchboard_proto::permissions::Role;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallEvent, Message as _, call_event};
use switchboard_twilio::twiml::{Instructions, Verb};

/// Greeting, a question asked while the owner dies, the answer (from the new owner), goodbye.
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

const SCRIPT: &str = r#"
[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
say_ms = 1800

[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
say_ms = 1000

[[step]]
listen = { max_ms = 20000, silence_ms = 800 }

[[step]]
hangup = true
"#;

/// Watches calls' events as they are published (core subscription, the persister's user).
struct Watch {
    sub: async_nats::Subscriber,
}

impl Watch {
    /// Watches `call_sid`'s events (`*`: every call's).
    async fn start(system: &System, call_sid: &str) -> anyhow::Result<Self> {
        let nats = system.connect_as(&Role::Persister).await?;
        let sub = nats
            .subscribe(Subjects::default().call_events(call_sid))
            .await?;
        nats.flush().await?;
        Ok(Self { sub })
    }

    /// The next event matching `pick`.
    async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&CallEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.sub.next())
                .await
                .context("no matching event in time")?
                .context("event subscription ended")?;
            let event = CallEvent::decode(msg.payload)?;
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
    }

    /// The worker that claimed the call (its first `owner` event).
    async fn owner(&mut self) -> anyhow::Result<String> {
        self.until(|e| match &e.body {
            Some(call_event::Body::Owner(o)) => Some(o.worker_id.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the assistant's first transcript entry (the greeting has been said).
    async fn greeted(&mut self) -> anyhow::Result<()> {
        self.until(|e| match &e.body {
            Some(call_event::Body::Transcript(t)) if t.role() == Speaker::Assistant => Some(()),
            _ => None,
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_worker_left_the_caller_hears_the_apology_and_the_record_is_closed_worker_lost()
-> anyhow::Result<()> {
    // Twilio's REST API is callsim's fake, which places the call and follows the gateway's
    // update of it as Twilio does.
    let port = switchboard_testkit::free_port();
    let system = System::start_with_workers(
        1,
        &[
            ("TAKEOVER_TIMEOUT_MS", "1500".into()),
            ("TWILIO_API_BASE", format!("http://127.0.0.1:{port}")),
        ],
    )
    .await?;
    let mut watch = Watch::start(&system, "*").await?;
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{port}").parse()?,
        cfg,
        CallerScript::from_toml_str(SCRIPT)?,
    )
    .await?;
    let created: Value = reqwest::Client::new()
        .post(format!("{}/calls", system.gateway))
        .bearer_auth(CALLS_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"to":"+15550003333","from":"+15550001111"}"#)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let sid = created["call_sid"].as_str().context("call_sid")?.to_owned();

    let owner = watch.owner().await?;
    watch.greeted().await?;
    system.signal_worker(&owner, "KILL").await?;

    // The gateway fences the call and closes its record ...
    let claimer = watch.owner().await?;
    ensure!(claimer != owner, "the gateway's own claim");
    let ended = watch
        .until(|e| match &e.body {
            Some(call_event::Body::Ended(end)) => Some(end.reason.clone()),
            _ => None,
        })
        .await?;
    ensure!(ended == EndReason::WorkerLost.as_str(), "{ended}");
    let session = get_session(&system.persister, &sid).await?;
    ensure!(
        session["end_reason"] == EndReason::WorkerLost.as_str(),
        "{session:#}\n{}",
        system.logs()
    );
    // ... and the caller hears the agent's apology, then the transfer to its number.
    let call = switchboard_testkit::eventually(Duration::from_secs(10), "the apology", || {
        let twilio = &twilio;
        let sid = sid.clone();
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
                Verb::Dial("+15550002222".into())
            ],
        "{verbs:?}"
    );
    ensure!(call.transferred_to.as_deref() == Some("+15550002222"));
    Ok(())
}
