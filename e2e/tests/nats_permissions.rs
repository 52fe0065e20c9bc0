//! The NATS users Switchboard ships: generated from one source (proto/src/permissions.rs),
//! identical in k8s/base/nats.yaml, and refusing what each service must not do.
//!
//! That every service works under these grants is shown by the other end-to-end tests, which run
//! on a nats-server configured with exactly them and fail on any permissions violation. This file
//! shows the other half: a grant a service should not have is refused.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use switchboard_e2e::{nats_password, nats_users, secured_nats};
use switchboard_proto::permissions::{
    OUTSIDE, Role, SHIPPED_ROLES, TOOL_WORKER, authorization_block, inbox_prefix, shipped_users,
};
use switchboard_proto::subject::Subjects;
use switchboard_testkit::workspace_root;
use tokio::sync::mpsc;

const BEGIN: &str = "    # BEGIN GENERATED NATS USERS\n";
const END: &str = "    # END GENERATED NATS USERS\n";

#[test]
fn k8s_nats_users_are_the_generated_ones() -> anyhow::Result<()> {
    let path = workspace_root().join("k8s/base/nats.yaml");
    let text = std::fs::read_to_string(&path)?;
    let start = text.find(BEGIN).context("BEGIN marker")? + BEGIN.len();
    let end = text.find(END).context("END marker")?;
    let generated = authorization_block(&shipped_users(), &Subjects::default(), 4);
    if text[start..end] == generated {
        return Ok(());
    }
    if std::env::var_os("UPDATE_MANIFESTS").is_some() {
        let updated = format!("{}{generated}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated)?;
        return Ok(());
    }
    bail!(
        "k8s/base/nats.yaml's users differ from proto/src/permissions.rs; run with \
         UPDATE_MANIFESTS=1 to regenerate. Expected:\n{generated}"
    )
}

/// A client connected as `role`, with the server's error messages collected.
struct As {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
    role: String,
}

impl As {
    async fn connect(url: &str, role: &Role<'_>) -> anyhow::Result<Self> {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(role.user().to_owned(), nats_password(role))
            .custom_inbox_prefix(inbox_prefix(role.user()))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = tx.send(error.to_string());
                    }
                }
            })
            .connect(url)
            .await?;
        Ok(Self {
            client,
            errors,
            role: role.user().to_owned(),
        })
    }

    /// The server's answer to the operation just made: the violation message, if any.
    async fn verdict(&mut self) -> Option<String> {
        let _ = self.client.flush().await;
        tokio::time::timeout(Duration::from_millis(400), self.errors.recv())
            .await
            .ok()
            .flatten()
    }

    async fn publish(&mut self, subject: &str) -> Option<String> {
        let _ = self
            .client
            .publish(subject.to_owned(), bytes::Bytes::new())
            .await;
        self.verdict().await
    }

    async fn subscribe(&mut self, subject: &str) -> Option<String> {
        let sub = self.client.subscribe(subject.to_owned()).await;
        let verdict = self.verdict().await;
        drop(sub);
        verdict
    }

    async fn refused_publish(&mut self, subject: &str) -> anyhow::Result<()> {
        let verdict = self.publish(subject).await;
        ensure!(
            verdict.as_deref().is_some_and(
                |v| v.contains("Permissions Violation for Publish") && v.contains(subject)
            ),
            "{} may publish to {subject} (server said {verdict:?})",
            self.role
        );
        Ok(())
    }

    async fn refused_subscribe(&mut self, subject: &str) -> anyhow::Result<()> {
        let verdict = self.subscribe(subject).await;
        ensure!(
            verdict.as_deref().is_some_and(|v| v
                .contains("Permissions Violation for Subscription")
                && v.contains(subject)),
            "{} may subscribe to {subject} (server said {verdict:?})",
            self.role
        );
        Ok(())
    }

    async fn allowed_publish(&mut self, subject: &str) -> anyhow::Result<()> {
        let verdict = self.publish(subject).await;
        ensure!(
            verdict.is_none(),
            "{} may not publish to {subject}: {verdict:?}",
            self.role
        );
        Ok(())
    }

    async fn allowed_subscribe(&mut self, subject: &str) -> anyhow::Result<()> {
        let verdict = self.subscribe(subject).await;
        ensure!(
            verdict.is_none(),
            "{} may not subscribe to {subject}: {verdict:?}",
            self.role
        );
        Ok(())
    }
}

#[tokio::test]
async fn each_service_is_refused_what_it_must_not_do() -> anyhow::Result<()> {
    let nats = secured_nats().await?;
    assert_eq!(nats_users().len(), 16);
    let url = nats.url().to_owned();

    for role in SHIPPED_ROLES {
        let mut user = As::connect(&url, &role).await?;
        // The JetStream admin API: delete the call log, read it around the persister's consumer,
        // or create a stream that records every caller's audio.
        user.refused_publish("$JS.API.STREAM.DELETE.VOICE_EVENTS")
            .await?;
        // (Call-workers read a call's events back to take the call over.)
        if role != Role::CallWorker {
            user.refused_publish("$JS.API.STREAM.MSG.GET.VOICE_EVENTS")
                .await?;
        }
        user.refused_publish("$JS.API.STREAM.CREATE.RECORDER")
            .await?;
        user.refused_publish("$JS.API.STREAM.PURGE.KV_voice-tools")
            .await?;
        // Other services' replies (tool results, KV values) and everything else.
        user.refused_subscribe("_INBOX.>").await?;
        user.refused_subscribe(">").await?;
        let other = if role == Role::Gateway {
            "persister"
        } else {
            "gateway"
        };
        user.refused_subscribe(&format!("{}.>", inbox_prefix(other)))
            .await?;
        // Its own inbox works.
        user.allowed_subscribe(&format!("{}.x", inbox_prefix(role.user())))
            .await?;
    }

    let mut gateway = As::connect(&url, &Role::Gateway).await?;
    gateway.allowed_publish("voice.call.CA1.in").await?;
    // A call's owner (a re-attach is bound to its epoch), and nothing else of the call log.
    gateway
        .allowed_publish("$JS.API.DIRECT.GET.VOICE_EVENTS.voice.events.CA1.owner")
        .await?;
    gateway
        .refused_publish("$JS.API.DIRECT.GET.VOICE_EVENTS.voice.events.CA1.transcript")
        .await?;
    gateway
        .refused_publish("$JS.API.DIRECT.GET.VOICE_EVENTS")
        .await?;
    gateway.allowed_publish("voice.call.CA1.owner").await?;
    // A gateway probes owners; it never answers as one.
    gateway.refused_subscribe("voice.call.*.owner").await?;
    gateway.refused_subscribe("voice.call.*.in").await?;
    gateway.refused_publish("voice.call.CA1.out").await?;
    gateway
        .refused_publish("voice.tools.lookup_customer")
        .await?;

    let mut worker = As::connect(&url, &Role::CallWorker).await?;
    worker.allowed_publish("voice.call.CA1.out").await?;
    worker.allowed_subscribe("voice.call.*.owner").await?;
    worker
        .allowed_publish("$JS.API.STREAM.MSG.GET.VOICE_EVENTS")
        .await?;
    worker
        .allowed_publish("$JS.API.DIRECT.GET.VOICE_EVENTS.voice.events.CA1.owner")
        .await?;
    // A worker cannot pose as the caller, listen to what it sends others, or rewrite a tool.
    worker.refused_publish("voice.call.CA1.in").await?;
    worker.refused_subscribe("voice.call.*.out").await?;
    worker
        .refused_publish("$KV.voice-tools.lookup_customer")
        .await?;
    // Only gateways hold the one-time claims on offers and stream tokens.
    worker
        .refused_publish("$KV.voice-calls.CA1.attached")
        .await?;
    gateway
        .allowed_publish("$KV.voice-calls.CA1.attached")
        .await?;
    gateway
        .refused_publish("$KV.voice-tools.lookup_customer")
        .await?;

    let mut tools = As::connect(&url, &TOOL_WORKER).await?;
    tools
        .allowed_subscribe("voice.tools.lookup_customer")
        .await?;
    tools
        .allowed_publish("$KV.voice-tools.lookup_customer")
        .await?;
    tools
        .allowed_publish("$KV.voice-tool-results.book_appointment.CA1.c1")
        .await?;
    // Tools are confined to their own subjects and keys.
    tools.refused_subscribe("voice.tools.order_status").await?;
    tools.refused_subscribe("voice.tools.>").await?;
    tools
        .refused_publish("$KV.voice-tools.order_status")
        .await?;
    tools
        .refused_publish("$KV.voice-tool-results.order_status.CA1.c1")
        .await?;
    tools.refused_subscribe("voice.events.>").await?;
    tools.refused_publish("voice.call.CA1.out").await?;
    tools.refused_publish("$KV.voice-calls.CA1.offered").await?;

    let mut persister = As::connect(&url, &Role::Persister).await?;
    persister.allowed_subscribe("voice.events.>").await?;
    // The record keeper cannot forge events or listen to calls.
    persister.refused_publish("voice.events.CA1.ended").await?;
    persister.refused_subscribe("voice.call.*.in").await?;
    persister
        .refused_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS.other")
        .await?;

    let mut notifier = As::connect(&url, &Role::Notifier).await?;
    notifier
        .allowed_publish("$JS.API.CONSUMER.INFO.VOICE_EVENTS.notifier")
        .await?;
    // Only its own consumer: no core subscription, no other consumer, no events of its own.
    notifier.refused_subscribe("voice.events.>").await?;
    notifier
        .refused_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS.persister")
        .await?;
    notifier
        .refused_publish("$JS.ACK.VOICE_EVENTS.persister.1.1.1.1.1")
        .await?;
    notifier.refused_publish("voice.events.CA1.ended").await?;
    notifier.refused_subscribe("voice.call.*.in").await?;

    let mut dialer = As::connect(&url, &Role::Dialer).await?;
    dialer
        .allowed_publish("$JS.API.CONSUMER.INFO.VOICE_EVENTS.dialer")
        .await?;
    // Call results through its own consumer only: no core subscription, no forged events
    // (a forged `status` would end an attempt), no other consumer, no call audio.
    dialer.refused_subscribe("voice.events.>").await?;
    dialer.refused_publish("voice.events.CA1.status").await?;
    dialer
        .refused_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS.persister")
        .await?;
    dialer.refused_subscribe("voice.call.*.in").await?;
    dialer.refused_publish("voice.calls.offer").await?;

    let mut outside = As::connect(&url, &OUTSIDE).await?;
    outside
        .allowed_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS.outside")
        .await?;
    outside
        .allowed_publish("$JS.API.CONSUMER.MSG.NEXT.VOICE_EVENTS.outside")
        .await?;
    outside
        .allowed_publish("$JS.API.STREAM.INFO.VOICE_EVENTS")
        .await?;
    // Read-only, and only through its own consumer.
    outside.refused_subscribe("voice.events.>").await?;
    outside.refused_subscribe("voice.call.*.in").await?;
    outside.refused_publish("voice.events.CA1.ended").await?;
    outside.refused_publish("voice.call.CA1.in").await?;
    outside.refused_publish("voice.offer").await?;
    outside
        .refused_publish("$JS.API.STREAM.CREATE.VOICE_EVENTS")
        .await?;
    outside
        .refused_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS.notifier")
        .await?;
    outside
        .refused_publish("$JS.API.CONSUMER.MSG.NEXT.VOICE_EVENTS.persister")
        .await?;
    outside
        .refused_publish("$JS.API.CONSUMER.DELETE.VOICE_EVENTS.persister")
        .await?;
    outside
        .refused_publish("$JS.API.CONSUMER.CREATE.VOICE_EVENTS")
        .await?;
    outside
        .refused_publish("$KV.voice-tools.lookup_customer")
        .await?;
    outside.refused_subscribe("voice.tools.>").await?;

    ensure!(
        nats.log().contains("Violation"),
        "the server logs violations"
    );
    Ok(())
}

/// The whole server config of k8s/base/nats.yaml parses (`nats-server -t`), with every password
/// variable the StatefulSet provides, and only with all of them.
#[tokio::test]
async fn k8s_nats_config_is_valid_server_config() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("k8s/base/nats.yaml"))?;
    let start = text.find("  nats.conf: |\n").context("nats.conf")? + "  nats.conf: |\n".len();
    let end = start
        + text[start..]
            .find("\n---")
            .context("end of the ConfigMap")?;
    let conf: String = text[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned() + "\n")
        .collect();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf)?;
    let users = shipped_users();
    let check = |skip: Option<&str>| {
        let mut cmd = std::process::Command::new(switchboard_testkit::nats::binary());
        cmd.arg("-c")
            .arg(&path)
            .arg("-t")
            .env("SERVER_NAME", "nats-0");
        for user in &users {
            let var = user.password.trim_start_matches('$');
            if Some(var) != skip {
                cmd.env(var, format!("pw-{}", user.name));
            }
        }
        cmd.output()
    };
    let ok = check(None)?;
    ensure!(
        ok.status.success(),
        "nats-server refuses k8s/base/nats.yaml's config: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = check(Some("GATEWAY_NEXT_PASSWORD"))?;
    ensure!(
        !missing.status.success(),
        "a config with a missing password variable should be refused"
    );
    Ok(())
}
